"""Ingest throughput on a 12,000-frame synthetic archive, beside cdflib alone reading the same files.

Goal (issue 2): the full ingest (read, preprocess, write) costs at most 2x the bare
read on this 2-core machine, and peak memory stays under 1.5 GB.

    .venv/bin/python benchmarks/ingest.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import shutil
import time

import cdflib

from _common import CACHE, PeakMemory, command_line, synthetic_archive
from aurora_pipeline.source.archive import list_archive
from aurora_pipeline.dask_cluster import dask_client
from aurora_pipeline.ingest.driver import ingest
from aurora_pipeline.ingest.preprocess import PreprocessConfig


def bare_read(files) -> int:
    """cdflib alone: open each file, read its image and time variables."""
    n = 0
    for f in files:
        cdf = cdflib.CDF(f.url)
        images = cdf.varget(f"thg_asf_{f.site}")
        cdf.varget(f"thg_asf_{f.site}_epoch")
        n += images.shape[0] if images.ndim == 3 and images.shape[0] != images.shape[1] else images.shape[-1]
    return n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(command_line())
    archive = synthetic_archive("archive-12k", ["gako", "gill"], "2011-01-06T04", 5, 1200)
    files = list_archive(archive)
    cfg = PreprocessConfig(image_size=128)
    with dask_client() as client:  # started once, outside the timings, as a nightly run's cluster would be
        client.run(lambda: None)
        for r in range(args.repeats):
            t = time.perf_counter()
            frames = bare_read(files)
            bare = time.perf_counter() - t
            store = CACHE / "ingest-bench.zarr"
            shutil.rmtree(store, ignore_errors=True)
            with PeakMemory() as mem:
                t = time.perf_counter()
                report = ingest(files, store, cfg, client=client)
                full = time.perf_counter() - t
            assert report.frames == frames, (report.frames, frames)
            print(f"run {r + 1}: {frames} frames in {len(files)} files | cdflib bare read {bare:.2f} s "
                  f"({frames / bare:.0f} frames/s, 1 process) | full ingest {full:.2f} s ({frames / full:.0f} frames/s, "
                  f"LocalCluster 2 workers) | ratio ingest/bare {full / bare:.2f} (goal <= 2) | "
                  f"peak memory, all processes {mem.peak / 2**30:.2f} GiB (goal < 1.5); per process "
                  + ", ".join(f"{k} {v / 2**30:.2f}" for k, v in mem.peak_by_process.items()) + " GiB")
            shutil.rmtree(store, ignore_errors=True)
            t = time.perf_counter()
            ingest(files, store, cfg)  # one process, no Dask: the like-for-like comparison with the bare read
            serial = time.perf_counter() - t
            print(f"run {r + 1}: serial ingest in this process {serial:.2f} s ({frames / serial:.0f} frames/s) | "
                  f"ratio serial ingest/bare {serial / bare:.2f}")


if __name__ == "__main__":
    main()
