"""Writes keyed by position: an hour's rows go to its own slots, padded with fill values.

Two kinds of write, one for each kind of array (see layout.py):

- ``write_hour_rows``: the big arrays (frames, embedding), by a worker, one hour at a
  time. The hour's whole slot range is written (unused slots get the fill value, so a
  re-issued file with fewer frames leaves nothing behind and chunks of pure fill are not
  stored). The range must line up with the array's chunks, or the write is refused
  before anything is written: no two hours ever share a chunk.
- ``write_small_rows``: the small per-frame arrays (time, label, label_probability,
  cluster), by the driver under the site's lock, many hours in one orthogonal write
  (each touched chunk is read, changed and written once).
"""

from __future__ import annotations

import itertools

import numpy as np

from aurora_pipeline.errors import StoreError
from aurora_pipeline.store import layout


def padded(array, values: np.ndarray) -> np.ndarray:
    """``values`` (n, ...) padded with the array's fill value to one hour of slots (C, ...)."""
    values = np.asarray(values)
    n = len(values)
    if n > layout.SLOTS_PER_HOUR:
        raise StoreError(f"{n} rows for one hour, more than the store's capacity of {layout.SLOTS_PER_HOUR} a site-hour")
    block = np.full((layout.SLOTS_PER_HOUR,) + tuple(array.shape[1:]), array.fill_value, dtype=array.dtype)
    block[:n] = values
    return block


def chunk_keys(array, region: slice) -> list[str]:
    """The chunk keys (``<array>/c/i/0/..``) a write of ``region`` along the first axis touches."""
    step = array.chunks[0]
    rest = "/0" * (array.ndim - 1)
    return [f"{array.basename}/c/{i}{rest}" for i in range(region.start // step, -(-region.stop // step))]


def check_aligned(array, region: slice) -> None:
    step = array.chunks[0]
    if region.start % step or region.stop % step:
        raise StoreError(f"refusing to write {array.path}[{region.start}:{region.stop}]: the region does not line up "
                         f"with the array's chunks of {step} slots, so it would share a chunk with another hour")


def write_hour_rows(group, hour_index: int, rows: dict[str, np.ndarray]) -> list[str]:
    """Write one hour's rows of big arrays (name -> (n, ...)); returns the chunk keys written."""
    region = layout.hour_slots(hour_index)
    touched = []
    for name, values in rows.items():
        array = group[name]
        check_aligned(array, region)
        block = padded(array, values)
        if block.shape[1:] != array.shape[1:]:
            raise StoreError(f"{array.path}: rows of shape {block.shape[1:]} for an array of {array.shape[1:]}")
        _write_chunks(array, region, block)
        touched += chunk_keys(array, region)
    return touched


def _write_chunks(array, region: slice, block: np.ndarray) -> None:
    """``array[region] = block`` (``region`` chunk-aligned), the chunks of pure fill left unstored.

    Zarr compares every chunk it writes with the fill value to leave out chunks of pure fill.
    For unsigned integers NumPy's comparison (``array_equal(..., equal_nan=True)``) takes its
    NaN path: six passes over each chunk, 0.02 s of CPU for an hour's frames. So the chunks
    that surely hold data (``_holds_data``, one pass) are written without that comparison, and
    only the others, in practice the hour's unused slots, are left to Zarr's own check.
    """
    step = array.chunks[0]
    data = _holds_data(block.reshape((-1, step * int(np.prod(block.shape[1:], dtype=np.int64)))), array.fill_value)
    unchecked = array.with_config({"write_empty_chunks": True})
    first = 0
    for holds, run in itertools.groupby(data):  # one write per run of chunks of one kind
        end = first + len(list(run))
        rows = slice(first * step, end * step)
        (unchecked if holds else array)[region.start + rows.start : region.start + rows.stop] = block[rows]
        first = end


def _holds_data(chunks: np.ndarray, fill) -> np.ndarray:
    """Per row of ``chunks`` (one chunk's values each): True when it holds a value other than ``fill``
    (NaN counting as NaN, as in Zarr); False when it may be pure fill."""
    if np.issubdtype(chunks.dtype, np.inexact) and np.isnan(fill):
        return ~np.isnan(chunks).all(axis=1)
    if fill == 0 and chunks.dtype.kind in "biu":
        return chunks.any(axis=1)
    return (chunks != fill).any(axis=1)


def write_small_rows(group, name: str, per_hour: dict[int, np.ndarray]) -> None:
    """Write the rows of several hours (hour index -> (n, ...)) of a small array in one go."""
    if not per_hour:
        return
    array = group[name]
    hours = sorted(per_hour)
    slots = np.concatenate([np.arange(layout.hour_slots(h).start, layout.hour_slots(h).stop) for h in hours])
    values = np.concatenate([padded(array, _encode(name, per_hour[h])) for h in hours])
    array.set_orthogonal_selection((slots,) + (slice(None),) * (array.ndim - 1), values)


def _encode(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.datetime64):
        return values.astype("datetime64[ms]").astype(np.int64)
    return values


def read_rows(group, name: str, slots: np.ndarray) -> np.ndarray:
    """Rows of ``name`` at ``slots`` (only the chunks holding them are read)."""
    array = group[name]
    return array.get_orthogonal_selection((np.asarray(slots, dtype=np.int64),) + (slice(None),) * (array.ndim - 1))


def hour_slot_index(hours: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(slots, hour of each slot) of the stored frames of ``hours`` with ``frames`` frames each."""
    hours = np.asarray(hours, dtype=np.int64)
    frames = np.asarray(frames, dtype=np.int64)
    if not len(hours):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    owner = np.repeat(hours, frames)
    starts = np.repeat(hours * layout.SLOTS_PER_HOUR - np.concatenate([[0], np.cumsum(frames)[:-1]]), frames)
    return starts + np.arange(int(frames.sum())), owner
