"""The demo: the whole chain on a synthetic archive, in-process, on CPU.

`make demo` runs this. Everything is written under ``workdir``; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from aurora_pipeline.summary import describe_store
from aurora_pipeline.synth.archive import write_synthetic_archive
from flows.ingest import ingest_archive

DEMO_SITES = ["gako", "gill"]
DEMO_START = "2011-01-06T04"
DEMO_HOURS = 3
DEMO_FRAMES_PER_HOUR = 120


@flow(name="demo", log_prints=True)
def demo(workdir: str = "demo_out") -> dict:
    root = Path(workdir)
    archive, store = root / "archive", root / "store.zarr"
    write_synthetic_archive(archive, sites=DEMO_SITES, start=DEMO_START, hours=DEMO_HOURS,
                            frames_per_hour=DEMO_FRAMES_PER_HOUR, layout="legacy", seed=0)
    ingest_archive(archive=str(archive), store=str(store), sites=DEMO_SITES)
    summary = describe_store(store)
    print(f"\nstore: {store.resolve()}")
    for line in summary["lines"]:
        print(line)
    get_run_logger().info("demo finished")
    return summary
