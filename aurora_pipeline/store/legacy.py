"""Converting a store of the old per-hour layout (format 1) into a format-2 store.

Format 1 (aurora-pipeline 0.1) kept one group per site-hour (``STORE/<site>/<YYYYMMDD>T<HH>/``,
marked ``aurora_ingest_complete``). Its frames and times are copied into a format-2 store by
``convert_store`` (``aurora-pipeline convert-store OLD NEW``); embeddings, labels and clusters
are not copied: rerun embed, classify and cluster on the new store.
"""

from __future__ import annotations

import fsspec
import numpy as np
import zarr
import zarr.errors
import zarr.storage

from aurora_pipeline.errors import BadInputError, StoreError
from aurora_pipeline.hours import to_hour
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.store.core import open_store
from aurora_pipeline.store.formats import old_hours
from aurora_pipeline.store.writer import HourWrite, commit_hours, write_frames


def check_empty_target(new: str, storage_options: dict | None = None) -> None:
    """Refuse ``new`` unless nothing is there yet (absent, or an empty folder / prefix).

    Raises:
        BadInputError: ``new`` holds anything: a store (of any format), other files, or is a file.
    """
    fs, path = fsspec.core.url_to_fs(str(new), **(storage_options or {}))
    path = path.rstrip("/")
    if not fs.exists(path):
        return
    if fs.isfile(path):
        held = "a file"
    else:
        entries = fs.ls(path, detail=False)
        if not entries:
            return
        names = sorted(str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)
        held = ("an existing store" if "zarr.json" in names else "other files") + \
            f" ({len(names)} entries: {', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"
    raise BadInputError(str(new), f"is not a new, empty place: it holds {held}, which converting into it would "
                        "overwrite", "give convert-store a NEW path that does not exist yet (or an empty folder); "
                        "nothing was written")


def convert_store(old: str, new: str, *, storage_options: dict | None = None) -> dict:
    """Copy the frames and times of a format-1 store into a new format-2 store; returns counts.

    ``new`` must not exist yet (or be an empty folder): anything there is refused, never written over.
    """
    zs = zarr.storage.LocalStore(old, read_only=True) if "://" not in old else zarr.storage.FsspecStore.from_url(
        old, storage_options=storage_options or {}, read_only=True)
    try:
        hours = old_hours(zs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        hours = {}
    if not hours:
        raise StoreError(f"{old}: no hour groups of the old layout (STORE/<site>/<YYYYMMDD>T<HH>/) found. "
                         "Fix: pass the path of a format-1 store.")
    check_empty_target(new, storage_options)  # a converter never writes over what is there
    st = open_store(new, storage_options, mode="a")
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
