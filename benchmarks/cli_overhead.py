"""What the `aurora-pipeline` command adds to the library call it wraps: Prefect's cost per command.

Goal (issue 9): from the second command on, a command that runs a flow adds at most
3 s of wall time to the library work it wraps. Both sides run as a fresh process on
the same files (two synthetic site-hours of 96 frames, ingested at 32 px into a new
store each time):

- library: ``python -c`` that lists the archive and calls ``ingest`` on a Dask
  LocalCluster, exactly what the flow `ingest-archive` wraps;
- command: ``aurora-pipeline ingest`` with the local server of
  ``aurora-pipeline server start`` up (a new, empty PREFECT_HOME is used and removed), so
  the server's warm command runner runs it (aurora_cli/command_runner.py);
- the same command in its own process (``AURORA_PIPELINE_NO_RUNNER=1``), server up: what
  each command pays for importing Prefect and the flows;
- Prefect's own cost per flow run: the flow and the library call alternately in one warm
  process (everything imported), so neither pays an import;
- and, once each, the command with no server: Prefect's temporary server, on the
  new Prefect home (its first start) and again (a later start).

    .venv/bin/python benchmarks/cli_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import command_line

BIN = Path(sys.executable).parent
LIBRARY = """
import sys
from aurora_pipeline.dask_cluster import dask_client
from aurora_pipeline.ingest.driver import ingest
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.source.archive import list_archive
files = list_archive(sys.argv[1])
with dask_client(None, threads=True) as client:  # as the flow: a LocalCluster of worker threads
    report = ingest(files, sys.argv[2], PreprocessConfig(image_size=32), client=client)
assert report.summary()["files_ingested"] == 2, report.summary()
"""
IN_ONE_PROCESS = """
import json, sys, time
from aurora_pipeline.dask_cluster import dask_client
from aurora_pipeline.ingest.driver import ingest
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.source.archive import list_archive
from flows.ingest import ingest_archive

def main():
    library, flow = [], []
    for i in range(int(sys.argv[3])):
        started = time.perf_counter()
        with dask_client(None, threads=True) as client:  # as the flow
            ingest(list_archive(sys.argv[1]), f"{sys.argv[2]}/warm-lib-{i}.zarr", PreprocessConfig(image_size=32),
                   client=client)
        library.append(time.perf_counter() - started)
        started = time.perf_counter()
        ingest_archive(sys.argv[1], f"{sys.argv[2]}/warm-flow-{i}.zarr", image_size=32)
        flow.append(time.perf_counter() - started)
    print(json.dumps({"library": library, "flow": flow}))

if __name__ == "__main__":
    main()
"""


def timed(args: list[str], env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited with {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return seconds


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(command_line())
    work = Path(tempfile.mkdtemp(prefix="aurora-cli-overhead-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(work / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    cli = str(BIN / "aurora-pipeline")
    try:
        timed([cli, "synth-archive", str(work / "archive"), "--sites", "gako,gill", "--hours", "1",
               "--frames-per-hour", "96", "--seed", "2"], env)
        ingest = lambda name: [cli, "ingest", "--archive", str(work / "archive"), "--store",  # noqa: E731
                               str(work / name), "--image-size", "32"]
        temporary_first = timed(ingest("temporary-first.zarr"), env)
        temporary_again = timed(ingest("temporary-again.zarr"), env)
        server_start = timed([cli, "server", "start", "--port", str(free_port())], env)
        library, command, own_process = [], [], []
        no_runner = {**env, "AURORA_PIPELINE_NO_RUNNER": "1"}
        for i in range(args.repeats):  # interleaved, so a change in the machine's load hits all three
            library.append(timed([sys.executable, "-c", LIBRARY, str(work / "archive"), str(work / f"lib-{i}.zarr")], env))
            command.append(timed(ingest(f"cli-{i}.zarr"), env))
            own_process.append(timed(ingest(f"own-{i}.zarr"), no_runner))
        (work / "in_one_process.py").write_text(IN_ONE_PROCESS)
        warm_env = {**env, "PREFECT_API_URL": json.loads(subprocess.run(
            [cli, "server", "status"], env=env, capture_output=True, text=True).stdout)["api_url"]}
        warm = json.loads(subprocess.run(
            [sys.executable, str(work / "in_one_process.py"), str(work / "archive"), str(work), str(args.repeats)],
            env={**warm_env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}, capture_output=True,
            text=True, check=True).stdout.strip().splitlines()[-1])
    finally:
        subprocess.run([cli, "server", "stop"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    lib, cmd, own = statistics.median(library), statistics.median(command), statistics.median(own_process)
    warm_lib, warm_flow = statistics.median(warm["library"]), statistics.median(warm["flow"])
    print(f"ingest of 2 files x 96 frames at 32 px, median of {args.repeats} (wall seconds):")
    print(f"  library call (fresh python process)      {lib:6.1f} s   runs: {', '.join(f'{x:.1f}' for x in library)}")
    print(f"  aurora-pipeline ingest, local server up  {cmd:6.1f} s   runs: {', '.join(f'{x:.1f}' for x in command)}")
    print(f"  overhead                                 {cmd - lib:+6.1f} s   ratio {cmd / lib:.2f}x")
    print(f"  the command in its own process (AURORA_PIPELINE_NO_RUNNER=1)  {own:6.1f} s   runs: "
          f"{', '.join(f'{x:.1f}' for x in own_process)}   overhead {own - lib:+.1f} s, ratio {own / lib:.2f}x")
    print(f"  in one warm process: library {warm_lib:.1f} s, flow {warm_flow:.1f} s: Prefect's cost per flow run "
          f"{warm_flow - warm_lib:+.2f} s")
    print(f"  `aurora-pipeline server start` (first start, new PREFECT_HOME)   {server_start:6.1f} s")
    print(f"  aurora-pipeline ingest, no server: first command on a new PREFECT_HOME {temporary_first:6.1f} s, "
          f"a later one {temporary_again:6.1f} s (overhead {temporary_again - lib:+.1f} s)")
    print(json.dumps({"library_s": library, "command_s": command, "overhead_s": cmd - lib, "ratio": cmd / lib,
                      "own_process_s": own_process, "warm_library_s": warm["library"], "warm_flow_s": warm["flow"],
                      "server_start_s": server_start, "temporary_first_s": temporary_first,
                      "temporary_again_s": temporary_again}))


if __name__ == "__main__":
    main()
