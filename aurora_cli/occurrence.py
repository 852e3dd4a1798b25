"""The `aurora-pipeline occurrence` subcommand: occurrence statistics of the labels, a figure and a table.

It reads the store and calls ``aurora_pipeline.occurrence`` and its figure; no Prefect
flow is needed (like `keogram` and `events`). aurora_cli/main.py adds it with
``add_parsers(sub)``, ``HANDLERS`` and ``NO_FLOW``.
"""

from __future__ import annotations

import argparse

from aurora_cli.options import add_range

NO_FLOW = {"occurrence"}


def add_parsers(sub) -> None:
    """Add ``occurrence`` to the `aurora-pipeline` subparsers."""
    p = sub.add_parser("occurrence", help="auroral occurrence by MLT and magnetic latitude from the labels (PNG, CSV)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--store", required=True, help="Zarr store path or s3:// URL")
    add_range(p, "first time, ISO 8601 UT")
    p.add_argument("--by", default="mlt,mlat", help="bins: any of mlt, mlat, month, year, site (comma-separated)")
    p.add_argument("--min-probability", type=float, help="count only frames whose label has at least this probability")
    p.add_argument("--smooth", help="count the events' smoothed labels over this window (e.g. 30s), "
                   "not per-frame ones")
    p.add_argument("--out", required=True, help="output PNG: a dial and an MLT histogram per aurora class")
    p.add_argument("--csv", help="also write the table of bins (counts, probabilities, errors) as CSV")


def _occurrence(args):
    # the store, dask, matplotlib: off the CLI's parse path
    from aurora_pipeline.occurrence import occurrence, write_csv
    from aurora_pipeline.occurrence_plots import occurrence_png

    occ = occurrence(args.store, args.sites, args.start, args.end, by=args.by,
                     min_probability=args.min_probability, smooth=args.smooth)
    png = occurrence_png(occ, args.out)
    out = {"occurrence_png": str(png), "sites": occ.attrs["aurora_sites"].split(),
           "years": [int(y) for y in occ.attrs["aurora_years"].split()], "by": occ.attrs["aurora_by"].split(),
           "frames_counted": occ.attrs["aurora_frames_counted"], "clear_sky_frames": int(occ["clear_sky_frames"].sum()),
           "denominator": occ.attrs["aurora_denominator"],
           "frames_without_magnetic_coordinates": occ.attrs["aurora_frames_without_magnetic_coordinates"]}
    if args.csv:
        out["csv"] = str(write_csv(occ, args.csv))
    return out


HANDLERS = {"occurrence": _occurrence}
