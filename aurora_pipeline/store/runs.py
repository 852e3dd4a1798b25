"""The store's table of nightly runs: one appended row per run (see tables.py)."""

from __future__ import annotations

import json
import math
import uuid

import pandas as pd

from aurora_pipeline.store.tables import append_rows, read_table
from aurora_pipeline.store.core import StoreLike

RUNS_TABLE = "runs"
COLUMNS = {"run_id": "str", "recorded_at": "str", "archive": "str", "files_new": "int64", "files_ingested": "int64",
           "frames": "int64", "failures": "int64", "total_seconds": "float64", "summary": "str"}
TABLE_ATTRS = {"long_name": "one row per nightly labelling run", "comment": "`summary` holds the whole run summary as JSON"}


def append_run(store: StoreLike, summary: dict, recorded_at: str) -> int:
    """Append the run's summary; returns the number of runs recorded."""
    row = {
        "run_id": str(summary.get("run_id") or uuid.uuid4().hex), "recorded_at": recorded_at,
        "archive": str(summary.get("archive", "")), "files_new": int(summary.get("files_new", 0)),
        "files_ingested": int(summary.get("files_ingested", 0)), "frames": int(summary.get("frames", 0)),
        "failures": len(summary.get("failures", []) or []),
        "total_seconds": float(summary.get("total_seconds", math.nan)),
        "summary": json.dumps(summary, default=str),
    }
    return append_rows(store, RUNS_TABLE, COLUMNS, [row], TABLE_ATTRS)


def read_runs(store: StoreLike) -> pd.DataFrame:
    return read_table(store, RUNS_TABLE, COLUMNS)
