"""Ingest beside cdflib alone reading the same files, like with like (issue 22).

Goals: ``ingest_file`` at most 1.5x the bare cdflib read of the same 1,200-frame file in
one process, and the whole ``aurora-pipeline ingest`` command (local server up, its
LocalCluster of one worker per core) at most 1.8x a bare read of the same files spread
over as many processes as the command has workers. Peak memory per worker < 1.5 GiB.

Each round measures both sides back to back, so a change in the machine's load hits
both; the figures to quote are the best of the rounds (and the ratio of those bests).

1. In one process, one file: the bare read (``cdflib.CDF(path).varget`` of the images
   and the epochs; twice: as installed, where cdflib inflates with libdeflate, and with the
   standard library's gzip, cdflib without the optional ``deflate`` package, as the issue
   first measured it), ``read_asi_cdf``, ``preprocess_frames`` (and the NumPy path that the
   compiled OATH framing kernel replaces, the same bytes) and ``ingest_file`` into a
   new store, wall seconds and CPU seconds of the process (all its threads).
2. The command: ``aurora-pipeline server start`` on a new Prefect home and a free port,
   then per round the bare read over ``--workers`` processes (a process pool started
   before the clock, files handed out one at a time as Dask does) and
   ``aurora-pipeline ingest --archive A --store NEW`` (the warm runner runs it; its
   LocalCluster has one worker per core, threads of the command's process).
3. Peak memory: the library ``ingest`` on a LocalCluster of ``--workers`` worker threads
   in this process (as the command) and of ``--workers`` worker processes, sampled every
   20 ms per process (``--skip memory`` leaves it out).

    .venv/bin/python benchmarks/ingest.py [--rounds 3] [--files 10] [--workers 2] [--skip memory]

``--files 30`` (3 sites x 10 hours) shows the command's fixed costs (Prefect's start and end
of a run, ~1 s) spread over more files, as a night's ~300 files spread them further.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gzip
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cdflib

from _common import CACHE, PeakMemory, command_line, synthetic_archive
from cli_overhead import free_port, timed
from aurora_pipeline.source.archive import list_archive

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def stdlib_gzip():
    """cdflib as it inflates without the optional ``deflate`` package (the standard library's gzip):
    the bare read as the issue first measured it. Only this benchmark swaps the function."""
    import cdflib.cdfread

    installed = cdflib.cdfread.gzip_inflate
    cdflib.cdfread.gzip_inflate = gzip.decompress
    try:
        yield
    finally:
        cdflib.cdfread.gzip_inflate = installed


def inflater() -> str:
    """What cdflib inflates with in this process: "libdeflate" or "stdlib gzip"."""
    import cdflib.cdfread

    try:
        import deflate
    except ImportError:
        return "stdlib gzip"
    return "libdeflate" if cdflib.cdfread.gzip_inflate is deflate.gzip_decompress else "stdlib gzip"


def bare_read(path: str) -> int:
    """cdflib alone: open one file, read its image and time variables; returns the frame count."""
    cdf = cdflib.CDF(path)
    images = cdf.varget(f"thg_asf_{Path(path).name.split('_')[3]}")
    cdf.varget(f"thg_asf_{Path(path).name.split('_')[3]}_epoch")
    return images.shape[0] if images.ndim == 3 and images.shape[0] != images.shape[1] else images.shape[-1]


def bare_read_stdlib_gzip(path: str) -> int:
    """``bare_read`` with cdflib inflating by the standard library's gzip (in a pool's process)."""
    with stdlib_gzip():
        return bare_read(path)


def clock(fn):
    """(wall s, CPU s of this process, result) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def in_process(file, rounds: int, work: Path, image_size: int = 128) -> None:
    from aurora_pipeline.ingest.driver import ingest_file
    from aurora_pipeline.ingest.preprocess import PreprocessConfig, oath_frames_numpy, preprocess_frames
    from aurora_pipeline.source.cdf import read_asi_cdf
    from aurora_pipeline.store.core import Store

    cfg = PreprocessConfig(image_size=image_size)
    rows = {k: [] for k in ("bare read, stdlib gzip", "bare cdflib read", "read_asi_cdf", "preprocess_frames",
                            "  (its NumPy path)", "ingest_file")}
    for r in range(rounds):
        store = work / f"one-file-{r}.zarr"
        st = Store.open(store, mode="a")
        st.set_preprocess(cfg.setting(), cfg.as_attrs())
        st.year_group(file.site, int(file.hour_code[:4]), create=True)  # once per site-year in a real store: not timed
        with stdlib_gzip():
            rows["bare read, stdlib gzip"].append(clock(lambda: bare_read(file.url))[:2])
        rows["bare cdflib read"].append(clock(lambda: bare_read(file.url))[:2])
        wall, cpu, frames = clock(lambda: read_asi_cdf(file.url))
        rows["read_asi_cdf"].append((wall, cpu))
        rows["preprocess_frames"].append(clock(functools.partial(preprocess_frames, frames.images, cfg))[:2])
        rows["  (its NumPy path)"].append(clock(functools.partial(oath_frames_numpy, frames.images, cfg))[:2])
        frames = None  # the raw counts go before ingest_file reads them again
        wall, cpu, outcome = clock(lambda: ingest_file(file, str(store), cfg))
        assert outcome.status == "ingested", outcome
        rows["ingest_file"].append((wall, cpu))
        shutil.rmtree(store, ignore_errors=True)
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1][0]:.2f} s" for k, v in rows.items()), flush=True)
    bare_wall = min(w for w, _ in rows["bare cdflib read"])
    bare_cpu = min(c for _, c in rows["bare cdflib read"])
    print(f"one {file.name} in one process at {image_size} px, best of {rounds} (wall s, CPU s of all threads; ratio to the bare "
          f"read, cdflib inflating with {inflater()}):")
    for key, values in rows.items():
        wall, cpu = min(w for w, _ in values), min(c for _, c in values)
        print(f"  {key:<20} {wall:6.2f} s wall ({wall / bare_wall:.2f}x)   {cpu:6.2f} s CPU ({cpu / bare_cpu:.2f}x)")
    for base in ("bare cdflib read", "bare read, stdlib gzip"):
        ratios = [i[0] / b[0] for i, b in zip(rows["ingest_file"], rows[base])]
        print(f"  ingest_file / {base}, per round: {', '.join(f'{x:.2f}' for x in ratios)} (goal <= 1.5)")


def command(archive: Path, files, rounds: int, workers: int, work: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(work / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    cli = str(BIN / "aurora-pipeline")
    frames = 1200 * len(files)
    start = timed([cli, "server", "start", "--port", str(free_port())], env)
    print(f"  aurora-pipeline server start (new PREFECT_HOME): {start:.1f} s", flush=True)
    bare, bare_stdlib, full = [], [], []
    ctx = multiprocessing.get_context("spawn")

    def spread(read) -> float:
        t = time.perf_counter()
        n = sum(pool.imap_unordered(read, [f.url for f in files], chunksize=1))
        assert n == frames, (n, frames)
        return time.perf_counter() - t

    try:
        with ctx.Pool(workers) as pool:
            pool.map(bare_read, [files[0].url] * workers, chunksize=1)  # the processes are up and warm
            for r in range(rounds):
                bare.append(spread(bare_read))
                bare_stdlib.append(spread(bare_read_stdlib_gzip))
                store = work / f"command-{r}.zarr"
                full.append(timed([cli, "ingest", "--archive", str(archive), "--store", str(store)], env))
                shutil.rmtree(store, ignore_errors=True)
                print(f"  round {r + 1}: bare read over {workers} processes {bare[-1]:.2f} s ({inflater()}), "
                      f"{bare_stdlib[-1]:.2f} s (stdlib gzip), aurora-pipeline ingest {full[-1]:.2f} s, ratio "
                      f"{full[-1] / bare[-1]:.2f} / {full[-1] / bare_stdlib[-1]:.2f}", flush=True)
    finally:
        subprocess.run([cli, "server", "stop"], env=env, capture_output=True)
    b, bs, f = min(bare), min(bare_stdlib), min(full)
    print(f"{frames} frames in {len(files)} files, best of {rounds}: bare read over {workers} processes {b:.2f} s "
          f"({inflater()}, {frames / b:.0f} frames/s), {bs:.2f} s (stdlib gzip, {frames / bs:.0f} frames/s) | "
          f"aurora-pipeline ingest, server up, LocalCluster of {workers} workers {f:.2f} s ({frames / f:.0f} frames/s) "
          f"| ratio {f / b:.2f} ({inflater()}), {f / bs:.2f} (stdlib gzip) (goal <= 1.8)")


def memory(files, workers: int, work: Path) -> None:
    """Peak memory of the library ingest on the command's LocalCluster (worker threads of this process)
    and on worker processes (a cluster's workers elsewhere), each sampled every 20 ms."""
    from aurora_pipeline.dask_cluster import dask_client
    from aurora_pipeline.ingest.driver import ingest

    for threads in (True, False):
        store = work / f"memory-{threads}.zarr"
        with dask_client(n_workers=workers, threads=threads) as client:
            client.run(lambda: None)
            with PeakMemory() as mem:
                report = ingest(files, store, client=client)
        assert report.frames == 1200 * len(files)
        shutil.rmtree(store, ignore_errors=True)
        kind = f"{workers} worker threads in this process" if threads else f"{workers} worker processes"
        print(f"peak memory of the library ingest on {kind}: all processes {mem.peak / 2**30:.2f} GiB; "
              "per process " + ", ".join(f"{k} {v / 2**30:.2f}" for k, v in mem.peak_by_process.items())
              + f" GiB (goal < 1.5 per worker{', so < ' + str(1.5 * workers) + ' for this process' if threads else ''})")


# cached synthetic archives of 1,200-frame hours (~114 MB a file): the smallest that holds --files is used
ARCHIVES = (("archive-12k", ("gako", "gill"), 5), ("archive-36k", ("gako", "gill", "fsmi"), 10))


def archive_for(files: int) -> Path:
    for name, sites, hours in ARCHIVES:
        if files <= len(sites) * hours:
            return synthetic_archive(name, list(sites), "2011-01-06T04", hours, 1200)
    raise SystemExit(f"--files {files}: at most {len(ARCHIVES[-1][1]) * ARCHIVES[-1][2]} (the largest synthetic archive)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=10,
                        help="1,200-frame files to ingest (<= 30; more than 10 writes a 30-file archive, 3.4 GB, once)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="bare-read processes; the command's LocalCluster has one worker per core")
    parser.add_argument("--image-size", type=int, default=128,
                        help="the one-file part's frame size (224: the published encoder's stores)")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: one-file,command,memory")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print(command_line())
    print(f"machine: {os.cpu_count()} cores, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} at the start")
    full_archive = archive_for(args.files)
    work = Path(tempfile.mkdtemp(prefix="aurora-ingest-bench-", dir=CACHE))
    try:
        files = list_archive(full_archive)[: args.files]
        archive = work / "archive"
        for f in files:  # the command ingests a whole archive: hard-link the chosen files into one
            target = archive / Path(f.url).relative_to(full_archive)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(f.url, target)
        files = list_archive(archive)
        if "one-file" not in skip:
            in_process(files[0], args.rounds, work, args.image_size)
        if "command" not in skip:
            command(archive, files, args.rounds, args.workers, work)
        if "memory" not in skip:
            memory(files, args.workers, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
