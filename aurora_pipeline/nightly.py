"""The nightly labelling run's library parts: what is new, what is unfinished, and the run log.

``find_new_files`` lists the archive over a look-back window (default 30 days; the whole
archive in reconcile mode) and compares it with the store's per-hour facts (file name
and size; the sha256 is recorded on ingest), so late-arriving older hours are found as
well as new ones. The later stages then work from the facts of every hour in the window
(``window``), so an hour ingested by hand, or embedded, labelled or clustered by an older
model, is finished too. ``record_run`` appends the run's summary to the ``runs`` table.
"""

from __future__ import annotations

import numpy as np

from aurora_pipeline.ingest.driver import plan
from aurora_pipeline.source.archive import ArchiveFile, list_archive
from aurora_pipeline.store.core import utc_now
from aurora_pipeline.store.runs import append_run as _append_run, read_runs

__all__ = ["checkpoint_model_id", "find_new_files", "hour_blocks", "hour_names", "read_runs", "record_night_events",
           "record_run", "unfinished_hours", "window"]


def window(lookback_days: int = 30, reconcile: bool = False, now: np.datetime64 | None = None) -> tuple:
    """``(start, end)`` hours of the run's window (``(None, None)`` in reconcile mode)."""
    if reconcile:
        return None, None
    now = np.datetime64("now", "h") if now is None else np.datetime64(now, "h")
    return now - np.timedelta64(lookback_days * 24, "h"), now + np.timedelta64(1, "h")


def find_new_files(
    archive: str,
    store,
    *,
    sites: list[str] | None = None,
    lookback_days: int = 30,
    reconcile: bool = False,
    now: np.datetime64 | None = None,
    storage_options: dict | None = None,
) -> tuple[list[ArchiveFile], list[ArchiveFile]]:
    """(files to ingest, files already stored) within the look-back window or, with ``reconcile``, the whole archive."""
    start, end = window(lookback_days, reconcile, now)
    files = list_archive(archive, sites=sites, start=start, end=end)
    return plan(files, store, storage_options=storage_options)


def hour_names(files: list[ArchiveFile]) -> set[tuple[str, np.datetime64]]:
    """``{(site, hour)}`` of the given files (the later stages' ``only`` filter)."""
    return {(f.site, f.hour_start) for f in files}


def record_run(store, summary: dict) -> int:
    """Append one row to the store's ``runs`` table; returns the number of runs recorded."""
    return _append_run(store, summary, utc_now())


def checkpoint_model_id(checkpoint: str) -> str:
    """The verified model id of an encoder checkpoint (path or URL)."""
    from aurora_pipeline.encoder.checkpoint import load_encoder

    return load_encoder(checkpoint, "cpu")[1]["model_id"]


def unfinished_hours(store, sites, start, end, model_id: str, classifier_id: str, centroids_id: str | None) -> dict:
    """How many stored hours of the window each stage still has to do, from the per-hour facts.

    Returns ``{"sites": [sites with work], "embed": n, "classify": n, "assign": n}``.
    """
    from aurora_pipeline.store.core import Store
    from aurora_pipeline.store.stages import stored_hours

    st = Store.open(store)
    refs = stored_hours(st, [s for s in (sites or st.sites()) if s in st.sites()], start, end)
    left = {"embed": [r for r in refs if r.embedding_model != model_id],
            "classify": [r for r in refs if r.classifier != classifier_id],
            "assign": [r for r in refs if centroids_id and r.centroids != centroids_id]}
    return {"sites": sorted({r.site for rs in left.values() for r in rs}), **{k: len(v) for k, v in left.items()}}


def hour_blocks(hours: list[str]) -> list[tuple[np.datetime64, np.datetime64]]:
    """Runs of consecutive hours as ``[(first, end)]`` (end exclusive)."""
    hs = sorted({np.datetime64(h, "h") for h in hours})
    blocks = []
    for h in hs:
        if blocks and blocks[-1][1] == h:
            blocks[-1][1] = h + np.timedelta64(1, "h")
        else:
            blocks.append([h, h + np.timedelta64(1, "h")])
    return [(a, b) for a, b in blocks]


def record_night_events(store, labelled: dict[str, list[str]]) -> int:
    """Recompute and record the events of the hours labelled tonight (per site, per block of hours)."""
    from aurora_pipeline.events import record_events

    written = 0
    for site, hours in sorted(labelled.items()):
        for first, end in hour_blocks(hours):
            written += len(record_events(store, site, first, end))
    return written
