"""Read costs of the archive-scale store against the number of stored hours (issue 10).

For N = 100, 1,000 and 4,000 stored hours of one site (20 frames of 8x8 an hour, every
frame labelled), prints the time of ``open_site``, of ``read_inventory`` and of the
fraction of frames per label per hour over all N hours; the marginal cost of one more
stored hour when opening; and, as the baseline in the same run, the same open done the
format-1 way (one Zarr group per hour, opened and stitched by xarray) for N = 100 and 1,000.
Then it opens a store laid out like the whole archive's metadata (20 sites x 18 years,
3 hours in each site-year) with ``open_sites`` for every site.

    cd benchmarks && ../.venv/bin/python query.py [--sizes 100,1000,4000] [--repeats 3]

Goals (issue 10): open_site over 4,000 hours < 1 s; <= 0.25 ms of opening per added
hour; label fraction over 4,000 hours < 5 s; open_sites of the 20 x 18 store < 30 s.
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

from _common import command_line  # noqa: E402

from aurora_pipeline.store import Store, layout, open_site, open_sites, read_inventory  # noqa: E402
from aurora_pipeline.store.writer import (HourWrite, commit_hours, ensure_labels, set_stage, write_frames,  # noqa: E402
                                          write_small)

FRAMES, SIZE = 20, 8
CLASSES = ["arc", "diffuse", "discrete", "cloudy", "moon", "clear"]


def build(path: Path, site: str, hours: list[np.datetime64], rng) -> None:
    """Write ``hours`` of ``site`` with frames, times and labels, committing in batches as the driver does."""
    st = Store.open(path, mode="a")
    st.set_preprocess({"image_size": SIZE}, {})
    for first in range(0, len(hours), 500):
        batch = hours[first: first + 500]
        writes = []
        for hour in batch:
            write_frames(st, site, hour, rng.integers(0, 255, (FRAMES, SIZE, SIZE), dtype=np.uint8))
            times = np.datetime64(hour, "ms") + np.arange(FRAMES) * np.timedelta64(3000, "ms")
            writes.append(HourWrite(hour=hour, times=times, source_file=f"thg_l1_asf_{site}_{hour}.cdf", source_size=1))
        commit_hours(st, site, writes)
        for year in sorted({layout.hour_position(h)[0] for h in batch}):
            index = np.array([layout.hour_position(h)[1] for h in batch if layout.hour_position(h)[0] == year])
            ensure_labels(st, site, year, CLASSES)
            write_small(st, site, year, {"label": {int(i): rng.integers(0, 6, FRAMES).astype(np.int8) for i in index}})
            set_stage(st, site, year, index, "classifier", "clf-bench")


def label_fraction(store, site):
    ds = open_site(store, site, variables=["label"])
    df = ds[["label"]].to_dataframe().dropna()
    return df.assign(hour=df.index.floor("h")).groupby(["hour", "label"]).size().unstack(fill_value=0)


def format1_open(root: Path, site: str, n: int, rng) -> float:
    """The old layout's cost: one group per hour, each opened with xarray, stitched by concat."""
    import xarray as xr

    path = root / "format1.zarr"
    start = np.datetime64("2011-01-01T00", "h")
    for i in range(n):
        hour = start + i
        times = np.datetime64(hour, "ms") + np.arange(FRAMES) * np.timedelta64(3000, "ms")
        ds = xr.Dataset({"frames": (("time", "y", "x"), rng.integers(0, 255, (FRAMES, SIZE, SIZE), dtype=np.uint8))},
                        coords={"time": times})
        ds.to_zarr(path, group=f"{site}/{str(hour).replace('-', '')[:8]}T{str(hour)[11:13]}", mode="w",
                   consolidated=False, encoding={"time": {"units": "milliseconds since 1970-01-01", "dtype": "int64"}})
    t = time.perf_counter()
    import zarr

    names = sorted(zarr.open_group(path, path=site, mode="r").group_keys())
    parts = [xr.open_zarr(path, group=f"{site}/{name}", consolidated=False) for name in names]
    xr.concat(parts, dim="time")
    return time.perf_counter() - t


def best(f, repeats):
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return min(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,1000,4000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-sizes", default="100,1000")
    parser.add_argument("--archive-sites", type=int, default=20)
    parser.add_argument("--archive-years", type=int, default=18)
    args = parser.parse_args()
    print(command_line())
    rng = np.random.default_rng(0)
    root = Path(tempfile.mkdtemp(prefix="aurora-query-"))
    try:
        opens = {}
        print(f"{'stored hours':>12} {'open_site s':>12} {'read_inventory s':>17} {'label fraction s':>17}  frames")
        for n in [int(x) for x in args.sizes.split(",")]:
            path = root / f"n{n}.zarr"
            hours = list(np.datetime64("2011-01-01T00", "h") + np.arange(n))
            build(path, "gako", hours, rng)
            t_open = best(lambda: open_site(path, "gako"), args.repeats)
            t_inv = best(lambda: read_inventory(path), args.repeats)
            t_frac = best(lambda: label_fraction(path, "gako"), args.repeats)
            opens[n] = t_open
            print(f"{n:>12} {t_open:>12.3f} {t_inv:>17.3f} {t_frac:>17.3f}  {open_site(path, 'gako').sizes['time']}")
        sizes = sorted(opens)
        if len(sizes) > 1:
            per_hour = (opens[sizes[-1]] - opens[sizes[0]]) / (sizes[-1] - sizes[0])
            print(f"open_site: {per_hour * 1e3:.4f} ms per added stored hour (from N={sizes[0]} to N={sizes[-1]})")
        for n in [int(x) for x in args.baseline_sizes.split(",") if x]:
            base = root / f"f1-{n}"
            base.mkdir()
            t_old = format1_open(base, "gako", n, rng)
            ratio = f", {t_old / opens[n]:.0f}x the new open" if n in opens else ""
            print(f"baseline format 1 (one group per hour), N={n}: open + stitch {t_old:.3f} s "
                  f"({t_old / n * 1e3:.2f} ms per hour{ratio})")
        path = root / "archive-metadata.zarr"
        sites = sorted(__import__("aurora_pipeline.source.sites", fromlist=["SITES"]).SITES)[: args.archive_sites]
        t = time.perf_counter()
        for site in sites:
            hours = [np.datetime64(f"{2007 + y}-01-15T0{k}", "h") for y in range(args.archive_years) for k in range(3)]
            build(path, site, hours, rng)
        built = time.perf_counter() - t
        t_all = best(lambda: open_sites(path), 1)
        ds = open_sites(path)
        print(f"archive-metadata store: {len(sites)} sites x {args.archive_years} years "
              f"({len(sites) * args.archive_years} site-years, built in {built:.0f} s): open_sites of all sites "
              f"{t_all:.2f} s, {ds.sizes['time']} frames")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
