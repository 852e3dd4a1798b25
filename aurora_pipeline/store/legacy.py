"""Converting a store of the old per-hour layout (format 1) into a format-2 store.

Format 1 (aurora-pipeline 0.1) kept one group per site-hour (``STORE/<site>/<YYYYMMDD>T<HH>/``,
marked ``aurora_ingest_complete``). Its frames and times are copied into a format-2 store by
``convert_store`` (``aurora-pipeline convert-store OLD NEW``); embeddings, labels and clusters
are not copied: rerun embed, classify and cluster on the new store.
"""

from __future__ import annotations

import numpy as np
import zarr
import zarr.errors
import zarr.storage

from aurora_pipeline.errors import StoreError
from aurora_pipeline.hours import to_hour
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.store.core import Store
from aurora_pipeline.store.formats import old_hours
from aurora_pipeline.store.writer import HourWrite, commit_hours, write_frames


def convert_store(old: str, new: str, *, storage_options: dict | None = None) -> dict:
    """Copy the frames and times of a format-1 store into a new format-2 store; returns counts."""
    zs = zarr.storage.LocalStore(old, read_only=True) if "://" not in old else zarr.storage.FsspecStore.from_url(
        old, storage_options=storage_options or {}, read_only=True)
    try:
        hours = old_hours(zs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        hours = {}
    if not hours:
        raise StoreError(f"{old}: no hour groups of the old layout (STORE/<site>/<YYYYMMDD>T<HH>/) found. "
                         "Fix: pass the path of a format-1 store.")
    st = Store.open(new, storage_options, mode="a")
    copied = 0
    for site, names in hours.items():
        for name in names:
            group = zarr.open_group(zs, path=f"{site}/{name}", mode="r")
            attrs = dict(group.attrs)
            if not attrs.get("aurora_ingest_complete"):
                continue
            cfg = PreprocessConfig.from_attrs(attrs)
            st.set_preprocess(cfg.setting(), cfg.as_attrs())
            times = np.asarray(group["time"][:], dtype=np.int64).astype("datetime64[ms]")
            hour = to_hour(name)  # the old groups are named YYYYMMDDTHH
            write_frames(st, site, hour, group["frames"][:])
            commit_hours(st, site, [HourWrite(
                hour=hour, times=times, source_file=attrs.get("aurora_source_file", ""),
                source_url=attrs.get("aurora_source_url", ""), source_sha256=attrs.get("aurora_source_sha256", ""),
                source_size=int(attrs.get("aurora_source_size", 0)), source_layout=attrs.get("aurora_source_layout", ""))])
            copied += 1
    st.add_history(f"converted from the format-1 store {old} ({copied} hours)")
    return {"hours": copied, "sites": sorted(hours), "store": new}
