"""The `aurora-pipeline index` and `aurora-pipeline similar` subcommands.

``index`` runs the flow ``build-index``; ``similar`` is an interactive query and runs
no flow (no Prefect API needed). aurora_cli/main.py adds them with ``add_parsers(sub)`` and
``HANDLERS``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

NO_FLOW = {"similar"}  # subcommands here that need no Prefect API


def _sites(value: str | list[str] | None) -> list[str] | None:
    # the library: off `import aurora_cli.main`, which imports this module (see aurora_cli/main.py's top)
    from aurora_pipeline.source.sites import parse_sites

    return parse_sites(value, "--sites")


def _index_settings(p: argparse.ArgumentParser) -> None:
    # the library: off `import aurora_cli.main`, as above
    from aurora_pipeline.search.config import IndexConfig

    defaults = IndexConfig()
    p.add_argument("--exact-below", type=int, default=defaults.exact_below,
                   help=f"exact search below this many vectors (default {defaults.exact_below})")
    p.add_argument("--nlist", type=int, help="IVF lists (default: a power of two near sqrt(n))")
    p.add_argument("--nprobe", type=int, help="lists visited per query (default: nlist / 64, 8..256)")


def add_parsers(sub) -> None:
    """Add ``index`` and ``similar`` to the `aurora-pipeline` subparsers."""
    p = sub.add_parser("index", help="run the flow build-index: the similarity index beside the store (built or updated)")
    p.add_argument("--store", required=True, help="Zarr store path or s3:// URL")
    p.add_argument("--index", help="where the index lives (default: STORE.index beside the store)")
    p.add_argument("--sites", help="comma-separated site codes (default: all; with a new index or --rebuild)")
    p.add_argument("--start", help="first hour, ISO 8601 UT (with a new index or --rebuild)")
    p.add_argument("--end", help="end (exclusive), ISO 8601 UT (with a new index or --rebuild)")
    p.add_argument("--rebuild", action="store_true", help="build anew: parameters from n, training from the store")
    p.add_argument("--keep-training", action="store_true",
                   help="rebuild with the current index's trained parts (gives what incremental updates give)")
    p.add_argument("--model", help="encoder model id to index when the range holds several (with --rebuild)")
    p.add_argument("--checkpoint", help="the encoder checkpoint that embedded the store (recorded for --png/--cdf queries)")
    _index_settings(p)

    # the library: off `import aurora_cli.main`, as above
    from aurora_pipeline.search.config import QueryConfig

    q = QueryConfig()
    p = sub.add_parser("similar", help="frames like this one: the nearest stored frames of a frame, file or image")
    p.add_argument("--store", required=True)
    p.add_argument("--index", help="the index (default: STORE.index)")
    p.add_argument("--site", help="query: a stored frame's site (with --time)")
    p.add_argument("--time", help="query: the stored frame's UT time, ISO 8601 (nearest frame within 5 s)")
    p.add_argument("--cdf", help="query: a THEMIS ASI CDF file (with --frame)")
    p.add_argument("--frame", type=int, help="query: frame index in --cdf (0 is the first)")
    p.add_argument("--png", help="query: a PNG image of a raw all-sky frame")
    p.add_argument("--checkpoint", help="encoder checkpoint for --cdf/--png (default: the one recorded with the index)")
    p.add_argument("--k", type=int, default=q.k, help=f"how many frames (default {q.k})")
    p.add_argument("--sites", help="only these sites (comma-separated)")
    p.add_argument("--start", help="only frames at or after this UT time")
    p.add_argument("--end", help="only frames before this UT time")
    p.add_argument("--label", help="only frames with this label (e.g. arc)")
    p.add_argument("--min-separation", default=q.min_separation,
                   help=f"frames of one site closer than this are one event: the best is kept (default {q.min_separation}; "
                        "0: keep all)")
    p.add_argument("--oversample", type=int, default=q.oversample,
                   help=f"candidates re-ranked exactly: k x this (default {q.oversample})")
    p.add_argument("--nprobe", type=int, help="IVF lists visited (default: the index's)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="for embedding --cdf/--png")
    p.add_argument("--out", help="write similar.csv and similar.png (query beside its neighbours) here")


def _index(args):
    # the library: off `import aurora_cli.main`, as above
    from aurora_pipeline.search.config import IndexConfig
    # prefect and FAISS (the flow): only for the command that runs it
    from flows.build_index import build_index_flow

    config = dataclasses.asdict(IndexConfig(exact_below=args.exact_below, nlist=args.nlist, nprobe=args.nprobe))
    config = {k: v for k, v in config.items() if v != getattr(IndexConfig(), k)}
    return build_index_flow(store=args.store, index=args.index, sites=_sites(args.sites), start=args.start,
                            end=args.end, rebuild=args.rebuild, keep_training=args.keep_training, model=args.model,
                            checkpoint=args.checkpoint, config=config)


def _similar(args):
    # pandas, the store, FAISS: off the CLI's parse path
    import pandas as pd

    from aurora_pipeline.search.montage import write_results
    from aurora_pipeline.search.query import find_similar, make_query, open_index
    from aurora_pipeline.store import open_store

    st = open_store(args.store)
    saved = open_index(st, args.index)
    query = make_query(st, saved, site=args.site, time=args.time, cdf=args.cdf, frame=args.frame, png=args.png,
                       checkpoint=args.checkpoint, device=args.device)
    df = find_similar(st, saved, query, k=args.k, sites=_sites(args.sites), start=args.start, end=args.end,
                      label=args.label, min_separation=args.min_separation, oversample=args.oversample,
                      nprobe=args.nprobe)
    with pd.option_context("display.width", 200, "display.max_columns", 10):
        print(f"query: {query.source} ({len(df)} frames, index of {saved.model_id})")
        print(df.drop(columns="slot").to_string(index=False) if len(df) else "no frame passes the filters")
    for note in df.attrs.get("notes", []):  # the store changed under the index: what was searched how
        print(f"note: {note}", file=sys.stderr)
    if args.out:
        caption = query.source if args.png is None and args.cdf is None else query.source.replace(
            str(args.cdf or args.png), os.path.basename(str(args.cdf or args.png)))
        files = write_results(st, df, query.image, caption, args.out)
        print(f"wrote {files['csv']} and {files['png']}", file=sys.stderr)
    return None


HANDLERS = {"index": _index, "similar": _similar}
