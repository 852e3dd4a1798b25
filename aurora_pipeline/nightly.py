"""The nightly labelling run's library parts: what is new, and the run log.

``find_new_files`` lists the archive over a look-back window (default 30 days; the
whole archive in reconcile mode) and compares it with the store's inventory of
ingested files (name and size; the sha256 is recorded on ingest), so late-arriving
older hours are found as well as new ones. ``record_run`` appends the run's summary
to the store's ``runs`` table, readable with plain xarray or pandas.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from aurora_pipeline.source.archive import ArchiveFile, list_archive
from aurora_pipeline.ingest.driver import plan
from aurora_pipeline.store.zarr_layout import hour_key, zarr_store

RUNS_GROUP = "runs"


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
    now = np.datetime64("now", "h") if now is None else np.datetime64(now, "h")
    start = None if reconcile else now - np.timedelta64(lookback_days * 24, "h")
    files = list_archive(archive, sites=sites, start=start, end=None if reconcile else now + np.timedelta64(1, "h"))
    return plan(files, store, storage_options=storage_options)


def hour_names(files: list[ArchiveFile]) -> set[str]:
    """``{"site/YYYYMMDDTHH"}`` for the given files (the later stages' ``only`` filter)."""
    return {f"{f.site}/{hour_key(f.hour)}" for f in files}


def read_runs(zs) -> pd.DataFrame:
    try:
        return xr.open_zarr(zs, group=RUNS_GROUP, consolidated=False).to_dataframe().reset_index(drop=True)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        return pd.DataFrame()


def record_run(store, summary: dict, storage_options: dict | None = None) -> pd.DataFrame:
    """Append one row (scalars as columns, the rest as JSON) to the store's ``runs`` table."""
    zs = zarr_store(store, storage_options)
    row = {k: (v if isinstance(v, (int, float, str)) and not isinstance(v, bool) else json.dumps(v, default=str))
           for k, v in summary.items()}
    table = pd.concat([read_runs(zs), pd.DataFrame([row])], ignore_index=True)
    ds = xr.Dataset(
        {c: ("run", table[c].astype(str).to_numpy(dtype=object) if table[c].dtype == object else table[c].to_numpy())
         for c in table.columns},
        attrs={"long_name": "one row per nightly labelling run", "comment": "JSON in text columns"},
    )
    for c in ds.data_vars:
        ds[c].attrs = {"long_name": c.replace("_", " "), "units": "s" if c.endswith("_seconds") else "1"}
    ds.to_zarr(zs, group=RUNS_GROUP, mode="w", consolidated=False)
    return table
