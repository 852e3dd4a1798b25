"""The store's table of files that could not be ingested.

A bad file never stops a run: its problem is recorded here, in the group
``STORE/failures``, one row per file, readable with no project code::

    xr.open_zarr("store.zarr", group="failures").to_dataframe()

A later run that ingests the file successfully removes its row. Only the run's
driver writes this table (never the parallel tasks), so there is one writer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr
import zarr

FAILURES_GROUP = "failures"
COLUMNS = ("source", "site", "hour", "problem", "fix", "recorded_at")


@dataclass(frozen=True)
class Failure:
    source: str        # file name or URL
    site: str
    hour: str          # YYYYMMDDHH from the file name, "" if unknown
    problem: str       # what is wrong, one sentence
    fix: str           # what a user can do
    recorded_at: str   # UTC ISO time of the run that found it


def read_failures(zs) -> pd.DataFrame:
    """The failures table as a DataFrame (empty, with the columns, when there is none)."""
    try:
        ds = xr.open_zarr(zs, group=FAILURES_GROUP, consolidated=False)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        return pd.DataFrame({c: pd.Series(dtype=str) for c in COLUMNS})
    df = ds.to_dataframe().reset_index(drop=True)
    return df[list(COLUMNS)].astype(str)


def update_failures(zs, new: list[Failure], succeeded: set[str]) -> pd.DataFrame:
    """Add ``new`` failures and drop the rows of files in ``succeeded``; returns the table."""
    old = read_failures(zs)
    names = {_name(f.source) for f in new} | {_name(s) for s in succeeded}
    old = old[~old["source"].map(_name).isin(names)]
    table = pd.concat([old, pd.DataFrame([dataclasses.asdict(f) for f in new], columns=list(COLUMNS))], ignore_index=True)
    table = table.sort_values(["site", "hour", "source"]).reset_index(drop=True)
    ds = xr.Dataset(
        {c: ("failure", np.asarray(table[c].astype(str).tolist(), dtype=object)) for c in COLUMNS},
        attrs={"long_name": "archive files that could not be ingested", "comment": "rows disappear once a file is ingested"},
    )
    for c in COLUMNS:
        ds[c].attrs = {"long_name": c.replace("_", " "), "units": "1"}
    if len(table) == 0 and not len(old) and not _exists(zs):
        return table
    ds.to_zarr(zs, group=FAILURES_GROUP, mode="w", consolidated=False)
    return table


def _name(source: str) -> str:
    return str(source).rstrip("/").rsplit("/", 1)[-1]


def _exists(zs) -> bool:
    try:
        zarr.open_group(zs, path=FAILURES_GROUP, mode="r")
        return True
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        return False
