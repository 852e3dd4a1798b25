"""The `aurora-pipeline keogram` and `aurora-pipeline events` subcommands (issue 12).

Both read the store and call one library function each; no Prefect flow is needed for
a figure or a table. ``aurora_cli/main.py`` hooks them in with::

    from aurora_cli import keogram_events
    keogram_events.add_parsers(sub)            # in build_parser(), after the other subcommands
    _HANDLERS.update(keogram_events.HANDLERS)  # beside _HANDLERS
"""

from __future__ import annotations

import argparse

from aurora_cli.options import add_range


def add_parsers(sub) -> None:
    """Add the ``keogram`` and ``events`` subparsers to ``sub`` (argparse subparsers)."""
    p = sub.add_parser("keogram", help="draw a site's keogram with its label strip (PNG)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--store", required=True, help="Zarr store path or s3:// URL")
    p.add_argument("--site", required=True, help="four-letter site code, e.g. gako")
    p.add_argument("--start", help="first time, ISO 8601 UT, e.g. 2011-01-06T04")
    p.add_argument("--end", help="end (exclusive), ISO 8601 UT")
    p.add_argument("--out", required=True, help="output PNG file")
    p.add_argument("--axis", choices=["ns", "ew"], default="ns", help="north-south keogram or east-west ewogram")
    p.add_argument("--coordinate", choices=["elevation", "latitude", "longitude"], default="elevation",
                   help="y axis: angle along the line, or latitude (ns) / longitude (ew) from the skymap")
    p.add_argument("--magnetic", action="store_true",
                   help="along the site's magnetic meridian, y axis AACGM-v2 magnetic latitude (needs --skymaps "
                        "at ingest; --axis and --coordinate are then not used)")

    p = sub.add_parser("events", help="a catalogue of auroral events from the frame labels (CSV or Parquet)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--store", required=True, help="Zarr store path or s3:// URL")
    add_range(p, "first time, ISO 8601 UT")
    p.add_argument("--smooth", default="30s", help="moving-average window of the class probabilities (0s: none)")
    p.add_argument("--min-duration", default="60s", help="shorter runs are merged into a neighbour (0s: none)")
    p.add_argument("--max-gap", help="longest step between frames inside an event (default: 3 x the median step)")
    p.add_argument("--out", help="output .csv or .parquet (default: print the table)")


def _keogram(args):
    # xarray/zarr (the store): off the CLI's parse path
    from aurora_pipeline.keograms import keogram, keogram_png

    if getattr(args, "magnetic", False):
        # as above
        from aurora_pipeline.keograms import magnetic_keogram

        keo = magnetic_keogram(args.store, args.site, args.start, args.end)
    else:
        keo = keogram(args.store, args.site, args.start, args.end, axis=args.axis, coordinate=args.coordinate)
    path = keogram_png(keo, args.out)
    out = {"keogram_png": str(path), "site": args.site, "frames": int(keo.sizes["time"]),
           "first": str(keo["time"].values[0]), "last": str(keo["time"].values[-1]),
           "geometry": keo.attrs["keogram_geometry"], "labelled": "label" in keo.coords}
    return out


def _events(args):
    # pandas and the store: off the CLI's parse path
    from aurora_pipeline.events import store_events, write_events

    events = store_events(args.store, args.sites, args.start, args.end, smooth=args.smooth,
                          min_duration=args.min_duration, max_gap=args.max_gap)
    if not args.out:
        print(events.to_string(index=False) if len(events) else "no events")
        return None
    path = write_events(events, args.out)
    return {"events": int(len(events)), "out": str(path),
            "by_label": {k: int(v) for k, v in events["label"].value_counts().sort_index().items()},
            "hours_of_each_label": {k: round(float(v) / 3600.0, 3)
                                    for k, v in events.groupby("label")["duration_s"].sum().sort_index().items()}}


HANDLERS = {"keogram": _keogram, "events": _events}
