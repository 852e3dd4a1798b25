"""Stores of other formats: what they are (the old per-hour layout, format 1, or no store of ours).

Format 1 (aurora-pipeline 0.1) kept one group per site-hour (``STORE/<site>/<YYYYMMDD>T<HH>/``,
marked ``aurora_ingest_complete``). ``Store.open`` refuses any other format with
``format_problem``'s message; ``aurora_pipeline.store.legacy.convert_store`` copies a format-1
store into a new one.
"""

from __future__ import annotations

import re

import zarr

from aurora_pipeline.store import layout

HOUR_GROUP = re.compile(r"^\d{8}T\d{2}$")


def old_hours(zs) -> dict[str, list[str]]:
    """``{site: [hour group names]}`` of a format-1 store's Zarr store ``zs`` (empty: none)."""
    root = zarr.open_group(zs, mode="r")
    out = {}
    for site in sorted(root.group_keys()):
        if re.fullmatch(r"[a-z0-9]{4}", site):
            hours = sorted(h for h in root[site].group_keys() if HOUR_GROUP.match(h))
            if hours:
                out[site] = hours
    return out


def format_problem(st, found) -> str:
    """The refusal message for a store whose ``aurora_store_format`` is ``found`` (not this format)."""
    if found is None:
        try:
            old = old_hours(st.zs)
        except Exception:  # noqa: BLE001 - whatever it is, it is not a store of ours
            old = {}
        if old:
            n = sum(len(v) for v in old.values())
            return (f"{st.url}: this store is in the old one-group-per-hour layout (format 1, {n} hour groups), "
                    f"which this version no longer reads (it does not scale past a few thousand hours). Fix: convert "
                    f"it with `aurora-pipeline convert-store {st.url} NEW_STORE` (frames and times are copied; rerun "
                    "embed, classify and cluster on the new store), or ingest the archive into a new store.")
        return (f"{st.url}: a Zarr group that is not an aurora-pipeline store (no {layout.FORMAT_ATTR} attribute). "
                "Fix: pass the path of an aurora-pipeline store, or a new path to create one.")
    return (f"{st.url}: {layout.FORMAT_ATTR} = {found!r}, this software reads format {layout.STORE_FORMAT_VERSION}. "
            "Fix: use the aurora-pipeline version that wrote it, or convert / re-ingest into a new store.")
