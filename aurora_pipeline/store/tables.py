"""Append-only tables in the store (failures, runs, events): rows are never rewritten.

A table is a group ``STORE/<name>/`` with one 1-D array per column along ``row`` and the
attribute ``aurora_rows``: the number of rows that are complete. ``append_rows`` holds the
store's ``tables`` lock, grows the arrays, writes the new rows at their positions and only
then raises ``aurora_rows``; a writer killed half way leaves the count, and every row
before it, untouched. Two runs appending at once both keep their rows. Readers take the
first ``aurora_rows`` rows; plain xarray opens the group too::

    xr.open_zarr("store.zarr", group="failures", consolidated=False).to_dataframe()
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import zarr
import zarr.errors

from aurora_pipeline.store.core import Store, StoreLike, open_store
from aurora_pipeline.store.locks import store_lock

ROWS_ATTR = "aurora_rows"
ROW_CHUNK = 1024


def _open_table(st: Store, name: str):
    try:
        return zarr.open_group(st.zs, path=name, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        return None


def read_table(store: StoreLike, name: str, columns: dict[str, str]) -> pd.DataFrame:
    """The complete rows of table ``name`` (an empty frame with ``columns`` when there is none)."""
    st = open_store(store)
    group = _open_table(st, name)
    if group is None:
        return pd.DataFrame({c: pd.Series(dtype=object if t == "str" else t) for c, t in columns.items()})
    n = int(group.attrs.get(ROWS_ATTR, 0))
    data = {}
    for column, dtype in columns.items():
        values = group[column][:n] if column in group else np.full(n, "" if dtype == "str" else 0)
        data[column] = values.astype(object) if dtype == "str" else values
    return pd.DataFrame(data)


def append_rows(store: StoreLike, name: str, columns: dict[str, str], rows: list[dict], attrs: dict | None = None) -> int:
    """Append ``rows`` (dicts keyed by column; missing keys get "" or 0) to table ``name``; returns its row count.

    With no rows the table is still created (its columns, zero rows long), so a store's table
    can be read, empty, with plain xarray."""
    st = open_store(store, mode="a")
    with store_lock(st, "tables"):
        group = zarr.open_group(st.zs, path=name, mode="a")
        if attrs and not group.attrs.get("long_name"):
            group.attrs.update(attrs)
        n = int(group.attrs.get(ROWS_ATTR, 0))
        for column, dtype in columns.items():  # every column exists, even with no rows: plain xarray reads it
            if column not in group:
                group.create_array(column, shape=(n,), chunks=(ROW_CHUNK,), dtype=str if dtype == "str" else dtype,
                                   dimension_names=["row"], attributes={"long_name": column.replace("_", " ")},
                                   **({} if dtype == "str" else {"fill_value": 0}))
        if ROWS_ATTR not in group.attrs:
            group.attrs[ROWS_ATTR] = n
        if not rows:
            return n
        new = n + len(rows)
        for column, dtype in columns.items():
            array = group[column]
            array.resize((new,))
            values = [row.get(column, "" if dtype == "str" else 0) for row in rows]
            array[n:new] = np.asarray([str(v) for v in values], dtype=object) if dtype == "str" else np.asarray(values, dtype=dtype)
        group.attrs[ROWS_ATTR] = new
        return new
