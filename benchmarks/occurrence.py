"""Occurrence statistics at archive scale (issue 21): time per million labels and peak memory.

Two stores in one run:

1. One site-year of ``--hours`` labelled hours (4,000) at ``--frames-per-hour`` (1,200), i.e.
   4.8 million labels (times, labels and class probabilities as the classifier writes
   them; frames are not written). ``occurrence(by=("mlt", "mlat"))`` over it, then with
   ``min_probability`` (reads the probabilities too), then with ``smooth="30s"``.
   Baselines in the same run: (a) the by-hand way with the new coordinates: ``open_site``,
   ``to_dataframe()`` of label, mlt and mlat, a pandas groupby; (b) one ``aacgmv2`` call
   per frame, timed on a sample and scaled to the site-year (what the hourly spline avoids).
2. A store laid out like the whole archive's metadata, as benchmarks/query.py builds it:
   ``--archive-sites`` (20) sites x ``--archive-years`` (18) years, 3 labelled hours of
   20 frames in each site-year: ``occurrence`` of every site and year (360 opens).

Peak memory: the resident set of this process sampled every 20 ms during each call, less
the resident set just before it (``_common.PeakMemory``).

    cd benchmarks && ../.venv/bin/python occurrence.py [--hours 4000] [--frames-per-hour 1200]

Goals (issue 21): under 2 s per million labels on 2 cores; a decade of one site under a
minute (here: ten times one site-year, plus the MLT table of each further year).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import PeakMemory, command_line  # noqa: E402

from aurora_pipeline.occurrence import occurrence  # noqa: E402
from aurora_pipeline.store import open_site  # noqa: E402
from aurora_pipeline.synth.labelled_store import write_labelled_store  # noqa: E402


def measured(f):
    """(seconds, peak extra resident MB, result) of ``f()``."""
    import psutil

    before = psutil.Process().memory_info().rss
    with PeakMemory() as mem:
        t = time.perf_counter()
        out = f()
        seconds = time.perf_counter() - t
    return seconds, max(0, mem.peak - before) / 2**20, out


def scenes(hour, times):
    """Runs of one class some minutes long, as a night's labels look (seeded by the hour)."""
    rng = np.random.default_rng(int(np.datetime64(hour, "h").astype(np.int64)))
    lengths = rng.integers(40, 400, len(times) // 40 + 2)
    codes = np.repeat(rng.integers(0, 6, len(lengths)), lengths)[: len(times)]
    return codes.astype(np.int8)


def probabilities(hour, times, codes):
    rng = np.random.default_rng(int(np.datetime64(hour, "h").astype(np.int64)) + 1)
    p = rng.uniform(0.3, 1.0, len(codes)).astype(np.float32)
    out = np.repeat(((1 - p) / 5)[:, None], 6, axis=1)
    out[np.arange(len(codes)), codes] = p
    return out


def by_hand(path, site):
    ds = open_site(path, site, variables=["label"])
    df = ds[["label", "mlt", "mlat"]].to_dataframe().dropna()
    return df.assign(mlt=np.floor(df.mlt), mlat=np.floor(df.mlat)).groupby(["mlt", "mlat", "label"]).size()


def per_frame_aacgmv2_seconds(path, site, sample: int) -> float:
    """Seconds per frame of one aacgmv2.get_aacgm_coord call per frame, on ``sample`` frame times."""
    import aacgmv2

    from aurora_pipeline.source.magnetic import site_position

    lat, lon, _ = site_position(site)
    times = open_site(path, site, variables=[])["time"].values[:sample].astype("datetime64[ms]").astype(object)
    t = time.perf_counter()
    for when in times:
        aacgmv2.get_aacgm_coord(lat, lon, 110.0, when)
    return (time.perf_counter() - t) / len(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=int, default=4000)
    parser.add_argument("--frames-per-hour", type=int, default=1200)
    parser.add_argument("--archive-sites", type=int, default=20)
    parser.add_argument("--archive-years", type=int, default=18)
    parser.add_argument("--sample", type=int, default=2000, help="frames timed with one aacgmv2 call each")
    args = parser.parse_args()
    print(command_line())
    root = Path(tempfile.mkdtemp(prefix="aurora-occurrence-"))
    try:
        path = root / "site-year.zarr"
        hours = list(np.datetime64("2012-01-01T00", "h") + np.arange(args.hours) * 2)  # every other hour of 2012
        t = time.perf_counter()
        write_labelled_store(path, "gako", hours, scenes, frames_per_hour=args.frames_per_hour,
                             probabilities=probabilities)
        n = args.hours * args.frames_per_hour
        print(f"site-year store: {args.hours} hours x {args.frames_per_hour} frames = {n:,} labels "
              f"(built in {time.perf_counter() - t:.0f} s)")
        occurrence(path, by=("mlt",), start="2012-01-01T00", end="2012-01-01T02")  # imports, aacgmv2's 2012 table
        rows = []
        for name, kwargs in [("by mlt, mlat", {}), ("+ min_probability 0.5", {"min_probability": 0.5}),
                             ("+ smooth 30s", {"smooth": "30s"})]:
            seconds, mb, occ = measured(lambda: occurrence(path, by=("mlt", "mlat"), **kwargs))
            assert int(occ["frames"].sum()) + occ.attrs["aurora_frames_below_min_probability"] == n
            rows.append((name, seconds, mb))
            print(f"occurrence {name:<24} {seconds:7.2f} s  {seconds / n * 1e6:6.3f} s per million labels  "
                  f"peak +{mb:6.0f} MB")
        seconds, mb, _ = measured(lambda: by_hand(path, "gako"))
        print(f"baseline by hand (open_site, to_dataframe, groupby) {seconds:7.2f} s  "
              f"{seconds / n * 1e6:6.3f} s per million labels  peak +{mb:6.0f} MB  "
              f"({seconds / rows[0][1]:.1f}x occurrence)")
        per_frame = per_frame_aacgmv2_seconds(path, "gako", args.sample)
        print(f"baseline one aacgmv2 call per frame: {per_frame * 1e6:.1f} us a frame -> {per_frame * n:.0f} s for the "
              f"site-year ({per_frame * n / rows[0][1]:.0f}x occurrence)")
        from aurora_pipeline.source.magnetic import _mlt0_spline

        t = time.perf_counter()
        _mlt0_spline(2013)
        table = time.perf_counter() - t
        decade = 10 * rows[0][1] + 9 * table
        print(f"MLT table of one more year: {table:.2f} s; a decade of one site at this density "
              f"(10 x {n:,} labels): {decade:.0f} s (extrapolated: 10 x the site-year + 9 tables)")

        path = root / "archive-metadata.zarr"
        from aurora_pipeline.source.sites import SITES

        sites = sorted(SITES)[: args.archive_sites]
        t = time.perf_counter()
        for site in sites:
            hours = [np.datetime64(f"{2007 + y}-01-15T0{k}", "h") for y in range(args.archive_years) for k in range(3)]
            write_labelled_store(path, site, hours, scenes, frames_per_hour=20)
        built = time.perf_counter() - t
        seconds, mb, occ = measured(lambda: occurrence(path, by=("mlt", "site", "year")))
        print(f"archive-metadata store: {len(sites)} sites x {args.archive_years} years "
              f"({len(sites) * args.archive_years} site-years, built in {built:.0f} s): occurrence of every site "
              f"{seconds:.2f} s ({seconds / (len(sites) * args.archive_years) * 1e3:.0f} ms per site-year), "
              f"peak +{mb:.0f} MB, {int(occ['frames'].sum()):,} frames")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
