"""The store's record of archive files that could not be ingested.

A bad file never stops a run: its problem is appended to the table ``STORE/failures``
(see tables.py), one row per finding, readable with no project code::

    xr.open_zarr("store.zarr", group="failures", consolidated=False).to_dataframe()

Every ingest that did work leaves the table, empty when no file failed. A later run
that ingests the file appends a ``resolved`` row for it. ``read_failures``
gives the files whose latest row is a failure: the ones still to fix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from aurora_pipeline.store.tables import append_rows, read_table
from aurora_pipeline.store.core import StoreLike

FAILURES_TABLE = "failures"
COLUMNS = {"source": "str", "site": "str", "hour": "str", "problem": "str", "fix": "str", "recorded_at": "str",
           "outcome": "str"}
TABLE_ATTRS = {"long_name": "archive files that could not be ingested (append-only log)",
               "comment": "outcome 'failed' records a problem; 'resolved' a later successful ingest"}


@dataclass(frozen=True)
class Failure:
    source: str        # file name or URL
    site: str
    hour: str          # YYYYMMDDHH from the file name, "" if unknown
    problem: str       # what is wrong, one sentence
    fix: str           # what a user can do
    recorded_at: str   # UTC ISO time of the run that found it


def _name(source: str) -> str:
    return str(source).rstrip("/").rsplit("/", 1)[-1]


def read_failure_log(store: StoreLike) -> pd.DataFrame:
    """Every row ever recorded, oldest first."""
    return read_table(store, FAILURES_TABLE, COLUMNS)


def read_failures(store: StoreLike) -> pd.DataFrame:
    """The files still failing: the latest row of each file, where it is a failure (empty table when none)."""
    log = read_failure_log(store)
    cols = [c for c in COLUMNS if c != "outcome"]
    if log.empty:
        return log[cols]
    latest = log.assign(_file=log["source"].map(_name)).groupby("_file", sort=False).tail(1)
    out = latest[latest["outcome"] == "failed"][cols]
    return out.sort_values(["site", "hour", "source"]).reset_index(drop=True)


def record_failures(store: StoreLike, new: list[Failure], succeeded: set[str], recorded_at: str) -> pd.DataFrame:
    """Append ``new`` failures and a ``resolved`` row for each file in ``succeeded`` that was failing."""
    failing = read_failures(store)
    open_files = dict(zip(failing["source"].map(_name), failing.to_dict("records")))
    rows = [asdict(f) | {"outcome": "failed"} for f in new]
    for source in sorted(succeeded):
        previous = open_files.get(_name(source))
        if previous is not None:
            rows.append(previous | {"source": source, "problem": "", "fix": "", "recorded_at": recorded_at,
                                    "outcome": "resolved"})
    append_rows(store, FAILURES_TABLE, COLUMNS, rows, TABLE_ATTRS)  # with no rows: the empty table, once
    return read_failures(store)
