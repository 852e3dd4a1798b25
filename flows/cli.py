"""The `aurora-pipeline` command: one subcommand per flow, plus the synthetic-data generators.

Each subcommand parses its options and calls one Prefect flow (or, for the
generators, one library function). Without PREFECT_API_URL the flows run in-process
on Prefect's ephemeral server: no server to start.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _sites(text: str | None) -> list[str] | None:
    return [s.strip().lower() for s in text.split(",") if s.strip()] if text else None


def _add_range(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sites", help="comma-separated four-letter site codes, e.g. gako,gill (default: all)")
    p.add_argument("--start", help="first hour, ISO 8601 UT, e.g. 2011-01-06T04")
    p.add_argument("--end", help="end (exclusive), ISO 8601 UT")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aurora-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth-archive", help="write a synthetic THEMIS ASI archive (real CDF files) and labels.csv")
    p.add_argument("dir")
    p.add_argument("--sites", default="gako,gill")
    p.add_argument("--start", default="2011-01-06T04")
    p.add_argument("--hours", type=int, default=3)
    p.add_argument("--frames-per-hour", type=int, default=120)
    p.add_argument("--layout", choices=["legacy", "v2024"], default="legacy")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("ingest", help="run the flow ingest-archive: CDF archive -> Zarr store")
    p.add_argument("--archive", required=True, help="local directory, https:// mirror root or s3://bucket/prefix")
    p.add_argument("--store", required=True, help="Zarr store path or s3:// URL")
    _add_range(p)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--dask-address", help="scheduler address of an existing Dask cluster (default: a LocalCluster)")

    p = sub.add_parser("demo", help="the whole chain on a synthetic archive, on this machine")
    p.add_argument("--workdir", default="demo_out")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    args = build_parser().parse_args(argv)
    handler = _HANDLERS[args.command]
    try:
        result = handler(args)
    except Exception as err:  # one clear line for errors we raise on purpose
        from aurora_pipeline.errors import AuroraError

        if isinstance(err, AuroraError):
            print(f"aurora-pipeline {args.command}: error: {err}", file=sys.stderr)
            return 2
        raise
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


def _synth_archive(args):
    from aurora_pipeline.synth.archive import write_synthetic_archive

    paths = write_synthetic_archive(
        args.dir, sites=_sites(args.sites), start=args.start, hours=args.hours,
        frames_per_hour=args.frames_per_hour, layout=args.layout, seed=args.seed,
    )
    return {"files": len(paths), "archive": args.dir, "labels": os.path.join(args.dir, "labels.csv")}


def _ingest(args):
    from flows.ingest import ingest_archive

    return ingest_archive(
        archive=args.archive, store=args.store, sites=_sites(args.sites), start=args.start, end=args.end,
        image_size=args.image_size, dask_address=args.dask_address,
    )


def _demo(args):
    from flows.demo import demo

    demo(workdir=args.workdir)
    return None


_HANDLERS = {"synth-archive": _synth_archive, "ingest": _ingest, "demo": _demo}

if __name__ == "__main__":
    sys.exit(main())
