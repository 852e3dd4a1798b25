"""A catalogue of auroral events: per-frame labels turned into intervals.

``label_events`` takes one site's frame times, labels and (optionally) class
probabilities and returns one row per event: site, start, end, duration, label, mean
and minimum probability, number of frames. Three steps:

1. **Gaps end events.** The frames are cut into segments wherever two consecutive
   labelled frames are more than ``max_gap`` apart (default: 3 times the median
   spacing, as in the labels-along-the-night figure). Unlabelled frames count as missing.
   Nothing is smoothed or merged across a gap.
2. **Smoothing: a moving average of the class probabilities over a time window,
   then the most probable class** (``smooth``, default 30 s: each frame takes the mean
   of the probability vectors of the frames of its segment within +-15 s). Without
   probabilities the labels' one-hot vectors are averaged, which is a moving mode.
   Why this rather than a hidden Markov model: the window is a time the user sets and
   understands ("30 s"), it does not depend on the cadence, it uses the classifier's
   confidence (a confident frame outvotes two hesitant ones) without needing calibrated
   likelihoods or a transition matrix to fit, and it is O(frames). Its limit: a real
   event shorter than half the window can be voted away; ``min_duration`` is the
   knob for what the catalogue keeps. benchmarks/events.py measures what it gains.
3. **Flickers merged.** A run of one label shorter than ``min_duration`` (default 60 s)
   that has a neighbour run in its segment is relabelled to the neighbour whose class
   has the higher mean probability over the run's frames (the longer neighbour without
   probabilities), shortest runs first, until every run is at least ``min_duration``
   or alone in its segment (a segment shorter than ``min_duration`` stays one event:
   it cannot be merged across a gap).

Times: an event starts at its first frame and ends where the next frame of its segment
starts, or, at the end of a segment, one median spacing after its last frame; so events
of a segment tile it without holes. ``mean_probability`` and ``min_probability`` are the
classifier's own per-frame probabilities of the event's label (not the smoothed ones);
NaN without probabilities.

    >>> ds = aurora_pipeline.open_site("store.zarr", "gako")
    >>> events = events_from_dataset(ds, smooth="30s", min_duration="60s")
    >>> write_events(events, "events.csv")
"""

from __future__ import annotations

import heapq
import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from aurora_pipeline.atomic import atomic_path
from aurora_pipeline.errors import BadInputError, StoreError
from aurora_pipeline.hours import time_range, to_time
from aurora_pipeline.source.sites import parse_sites
from aurora_pipeline.store import open_site, open_store
from aurora_pipeline.store.core import StoreLike, utc_now
from aurora_pipeline.store.tables import append_rows, read_table

COLUMNS = ["site", "start", "end", "duration_s", "label", "mean_probability", "min_probability", "n_frames"]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|sec|min|m|h)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "sec": 1000, "min": 60_000, "m": 60_000, "h": 3_600_000, None: 1000}


def parse_duration(value, name: str = "duration") -> int:
    """A duration in milliseconds from "30s", "2min", "1.5h", "500ms", a number of seconds,
    a ``datetime.timedelta`` or a ``numpy.timedelta64``.

    Raises:
        BadInputError: negative or not a duration.
    """
    if isinstance(value, np.timedelta64):
        ms = float(value / np.timedelta64(1, "ms"))
    elif hasattr(value, "total_seconds"):
        ms = value.total_seconds() * 1000.0
    elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        ms = float(value) * 1000.0
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise BadInputError(f"{name}={value!r}", "is not a duration.", "Write it like 30s, 2min, 1h or 500ms.")
        ms = float(match[1]) * _UNIT_MS[match[2]]
    if not np.isfinite(ms) or ms < 0:
        raise BadInputError(f"{name}={value!r}", "must be a non-negative duration.", "Write it like 30s or 0s.")
    return int(round(ms))


def label_events(times, labels, probabilities=None, *, class_names, site: str = "", smooth="30s",
                 min_duration="60s", max_gap=None) -> pd.DataFrame:
    """Intervals of one label from per-frame labels (see the module docstring for the method).

    Args:
        times: (n,) datetime64 frame times (any order).
        labels: (n,) int class indices into ``class_names``; -1 or NaN = unlabelled.
        probabilities: optional (n, k) class probabilities (rows of NaN = unlabelled).
        class_names: the k class names.
        site: written in the ``site`` column.
        smooth: moving-average window (total width); 0 for none.
        min_duration: shortest event kept apart from its neighbours; 0 for none.
        max_gap: the longest step between frames inside one event; default 3 x the
            median step.

    Returns:
        DataFrame with ``COLUMNS``: start/end datetime64[ms], duration_s float, label str,
        probabilities float, n_frames int; sorted by start.

    Raises:
        BadInputError: mismatched shapes, labels out of range, bad durations.
    """
    names = [str(c) for c in class_names]
    t, codes, prob = _check(times, labels, probabilities, len(names))
    smooth_ms, min_ms = parse_duration(smooth, "smooth"), parse_duration(min_duration, "min_duration")
    if len(t) == 0:
        return _empty()
    step = np.diff(t)
    cadence = float(np.median(step)) if len(step) else 1000.0
    cadence = cadence if cadence > 0 else 1000.0
    gap_ms = parse_duration(max_gap, "max_gap") if max_gap is not None else 3.0 * cadence
    segment = np.r_[0, np.cumsum(step > gap_ms)]
    evidence = prob if prob is not None else np.eye(len(names), dtype=np.float64)[codes]
    smoothed = smooth_labels(t, evidence, segment, smooth_ms, codes)
    ends = _frame_ends(t, segment, cadence)
    runs = _runs(smoothed, segment)
    runs = _merge_flickers(runs, t, ends, evidence, min_ms)
    rows = []
    for first, last, code in runs:
        p = prob[first:last + 1, code] if prob is not None else np.array([np.nan])
        rows.append((site, t[first], ends[last], (ends[last] - t[first]) / 1000.0, names[code],
                     float(np.mean(p)), float(np.min(p)), last - first + 1))
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["start"] = out["start"].to_numpy().astype("datetime64[ms]")
    out["end"] = out["end"].to_numpy().astype("datetime64[ms]")
    return out


def smooth_labels(t_ms: np.ndarray, evidence: np.ndarray, segment: np.ndarray, window_ms: int,
                  own: np.ndarray) -> np.ndarray:
    """Most probable class of the mean ``evidence`` (n, k) over the frames of the same segment
    within +-window/2 of each frame (sorted ``t_ms``); a tie keeps the frame's ``own`` class."""
    if window_ms <= 0 or len(t_ms) == 0:
        return own.copy()
    half = window_ms / 2.0
    # window [t - half, t + half], never across a segment boundary: offset segments far apart in time
    key = t_ms.astype(np.float64) + segment.astype(np.float64) * (4.0 * window_ms + 1e12)
    lo = np.searchsorted(key, key - half, side="left")
    hi = np.searchsorted(key, key + half, side="right")
    csum = np.vstack([np.zeros((1, evidence.shape[1])), np.cumsum(evidence, axis=0)])
    mean = (csum[hi] - csum[lo]) / (hi - lo)[:, None]
    mean[np.arange(len(own)), own] += 1e-9  # ties: the frame's own class
    return np.argmax(mean, axis=1)


def events_from_dataset(ds, **kwargs) -> pd.DataFrame:
    """``label_events`` for every site of a Dataset from ``open_site`` / ``open_sites`` (``time``,
    ``label`` with CF flag_meanings, optional ``label_probability``, optional ``site`` coordinate)."""
    if "label" not in ds:
        raise BadInputError("dataset", "has no `label` variable.", "Run `aurora-pipeline classify` first.")
    names = str(ds["label"].attrs.get("flag_meanings", "")).split()
    if not names:
        raise BadInputError("label", "has no flag_meanings (class names).", "Label the store with the classifier.")
    times = ds["time"].values
    labels = np.asarray(ds["label"].values, np.float64)
    prob = np.asarray(ds["label_probability"].values, np.float64) if "label_probability" in ds else None
    sites = ds["site"].values if "site" in ds.coords else np.full(len(times), ds.attrs.get("site", ""))
    parts = []
    for site in pd.unique(sites):
        keep = sites == site
        parts.append(label_events(times[keep], labels[keep], None if prob is None else prob[keep],
                                  class_names=names, site=str(site), **kwargs))
    return _concat(parts)


def store_events(store: StoreLike, sites: list[str] | None = None, start=None, end=None, *, storage_options: dict | None = None,
                 **kwargs) -> pd.DataFrame:
    """``events_from_dataset`` for each site of a store over ``[start, end)``.

    ``sites`` None means every site of the store that has hours in the range; a site
    asked for by name with nothing stored in the range is an error (StoreError).
    """
    start, end = time_range(start, end)
    sites = parse_sites(sites, "sites")
    st = open_store(store, storage_options)
    parts = []
    for site in sites or st.sites():
        try:
            ds = open_site(st, site, start, end, variables=["label", "label_probability"])
        except StoreError:
            if sites:
                raise
            continue
        parts.append(events_from_dataset(ds.assign_attrs(site=site), **kwargs))
    return _concat(parts)


# --- the catalogue kept in the store (the nightly run's) -------------------------------------------
EVENTS_TABLE = "events"
TABLE_COLUMNS = {"site": "str", "start_ms": "int64", "end_ms": "int64", "duration_s": "float64", "label": "str",
                 "mean_probability": "float64", "min_probability": "float64", "n_frames": "int64",
                 "window_start_ms": "int64", "window_end_ms": "int64", "write": "int64", "settings": "str",
                 "recorded_at": "str"}
TABLE_ATTRS = {"long_name": "auroral events from the frame labels (append-only; see aurora_pipeline.events)",
               "comment": "a write recomputes every event of its site inside [window_start_ms, window_end_ms) and "
                          "supersedes the older rows of that site that overlap the window; read_recorded_events "
                          "returns the current catalogue"}


def record_events(store: StoreLike, site: str, start, end, *, smooth="30s", min_duration="60s", max_gap=None) -> pd.DataFrame:
    """Recompute ``site``'s events over ``[start, end)`` and append them to the store's ``events`` table.

    For the nightly run, after it labelled some hours: pass the labelled block of hours.
    The window first grows to cover every recorded event it overlaps (an arc that began
    in an hour labelled last week and goes on into tonight's late hour is recomputed
    whole, from the store's labels, not cut at the window's edge). Returns the events written.
    """
    st = open_store(store, mode="a")
    lo, hi = int(to_time(start).astype(np.int64)), int(to_time(end).astype(np.int64))
    current = _current_rows(read_table(st, EVENTS_TABLE, TABLE_COLUMNS))
    current = current[current["site"] == site]
    while True:  # grow the window over the events it overlaps or touches, until it stops growing
        touching = current[(current["n_frames"] > 0) & (current["start_ms"] <= hi) & (current["end_ms"] >= lo)]
        new_lo, new_hi = min([lo, *touching["start_ms"]]), max([hi, *touching["end_ms"]])
        if (new_lo, new_hi) == (lo, hi):
            break
        lo, hi = new_lo, new_hi
    settings = f"smooth={smooth} min_duration={min_duration} max_gap={max_gap}"
    window = (np.int64(lo).astype("datetime64[ms]"), np.int64(hi).astype("datetime64[ms]"))
    events = store_events(st, [site], *window, smooth=smooth, min_duration=min_duration, max_gap=max_gap)
    table = read_table(st, EVENTS_TABLE, TABLE_COLUMNS)
    write = int(table["write"].max()) + 1 if len(table) else 1
    stamp = utc_now()
    rows = [{"site": site, "start_ms": int(np.datetime64(r.start, "ms").astype(np.int64)),
             "end_ms": int(np.datetime64(r.end, "ms").astype(np.int64)), "duration_s": float(r.duration_s),
             "label": r.label, "mean_probability": float(r.mean_probability),
             "min_probability": float(r.min_probability), "n_frames": int(r.n_frames), "window_start_ms": lo,
             "window_end_ms": hi, "write": write, "settings": settings, "recorded_at": stamp}
            for r in events.itertuples(index=False)]
    # a write with no event still supersedes the window: one marker row with n_frames 0
    rows = rows or [{"site": site, "start_ms": lo, "end_ms": lo, "n_frames": 0, "window_start_ms": lo,
                     "window_end_ms": hi, "write": write, "settings": settings, "recorded_at": stamp,
                     "duration_s": 0.0, "mean_probability": float("nan"), "min_probability": float("nan")}]
    append_rows(st, EVENTS_TABLE, TABLE_COLUMNS, rows, TABLE_ATTRS)
    return events


def read_recorded_events(store: StoreLike, sites: list[str] | None = None, start=None, end=None) -> pd.DataFrame:
    """The store's current event catalogue (``COLUMNS``), sorted by site and start; events
    overlapping ``[start, end)`` when given."""
    rows = _current_rows(read_table(store, EVENTS_TABLE, TABLE_COLUMNS))
    rows = rows[rows["n_frames"] > 0]
    if sites:
        rows = rows[rows["site"].isin(list(sites))]
    if start is not None:
        rows = rows[rows["end_ms"] > int(to_time(start).astype(np.int64))]
    if end is not None:
        rows = rows[rows["start_ms"] < int(to_time(end).astype(np.int64))]
    out = pd.DataFrame({"site": rows["site"].astype(str).to_numpy(),
                        "start": rows["start_ms"].to_numpy(np.int64).astype("datetime64[ms]"),
                        "end": rows["end_ms"].to_numpy(np.int64).astype("datetime64[ms]"),
                        "duration_s": rows["duration_s"].to_numpy(float), "label": rows["label"].astype(str).to_numpy(),
                        "mean_probability": rows["mean_probability"].to_numpy(float),
                        "min_probability": rows["min_probability"].to_numpy(float),
                        "n_frames": rows["n_frames"].to_numpy(np.int64)})
    return _concat([out])


def _current_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows not superseded: a row is dropped when a later write of its site has a window that overlaps it."""
    if not len(table):
        return table
    keep = np.ones(len(table), bool)
    for _, rows in table.groupby("site"):
        windows = rows.groupby("write")[["window_start_ms", "window_end_ms"]].first()
        for write, (w0, w1) in windows.iterrows():
            older = rows[(rows["write"] < write) & (rows["start_ms"] < w1) & (rows["end_ms"] > w0)]
            # a marker row (n_frames 0, start == end) is superseded by any later window that covers its start
            markers = rows[(rows["write"] < write) & (rows["start_ms"] == rows["end_ms"])
                           & (rows["start_ms"] >= w0) & (rows["start_ms"] < w1)]
            keep[table.index.get_indexer(older.index)] = False
            keep[table.index.get_indexer(markers.index)] = False
    return table[keep]


def write_events(events: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the catalogue as CSV (``.csv``) or Parquet (``.parquet``; needs pyarrow or fastparquet).

    CSV times are ISO 8601 UT with milliseconds. The file is written under a temporary
    name and renamed, so a reader never sees half a catalogue.

    Raises:
        BadInputError: another suffix, or Parquet without a Parquet engine.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise BadInputError(str(path), "has neither a .csv nor a .parquet suffix.", "Name the output F.csv or F.parquet.")
    if suffix == ".parquet" and not _parquet_engine():
        raise BadInputError(str(path), "Parquet needs pyarrow or fastparquet, and neither is installed.",
                            "pip install pyarrow, or write a .csv file.")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            out = events.copy()
            for column in ("start", "end"):
                out[column] = np.datetime_as_string(out[column].to_numpy().astype("datetime64[ms]"), unit="ms")
            out.to_csv(tmp, index=False, float_format="%.6g")
        else:
            events.to_parquet(tmp, index=False)
    return path


def read_events(path: str | os.PathLike) -> pd.DataFrame:
    """Read a catalogue written by ``write_events`` back (times as datetime64[ms])."""
    path = Path(path)
    df = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path, dtype={"site": str})
    for column in ("start", "end"):
        df[column] = pd.to_datetime(df[column]).to_numpy().astype("datetime64[ms]")
    return df[COLUMNS]


def _parquet_engine() -> bool:
    return any(importlib.util.find_spec(m) is not None for m in ("pyarrow", "fastparquet"))


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"site": pd.Series(dtype=object), "start": pd.Series(dtype="datetime64[ms]"),
                         "end": pd.Series(dtype="datetime64[ms]"), "duration_s": pd.Series(dtype=float),
                         "label": pd.Series(dtype=object), "mean_probability": pd.Series(dtype=float),
                         "min_probability": pd.Series(dtype=float), "n_frames": pd.Series(dtype=np.int64)})


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    if not parts:
        return _empty()
    return pd.concat(parts, ignore_index=True).sort_values(["site", "start"], kind="stable").reset_index(drop=True)


def _check(times, labels, probabilities, k: int):
    """Sorted int64 ms times, int codes and float probabilities of the labelled frames only."""
    t = np.asarray(times)
    if t.ndim != 1 or (len(t) and t.dtype.kind != "M"):
        raise BadInputError("times", f"must be a 1-d datetime64 array, got {t.dtype} {t.shape}",
                            "pass the store's `time` values")
    raw = np.asarray(labels, dtype=np.float64)
    if raw.shape != t.shape:
        raise BadInputError("labels", f"must have the times' shape {t.shape}, got {raw.shape}", "one label per frame")
    prob = None
    if probabilities is not None:
        prob = np.asarray(probabilities, dtype=np.float64)
        if prob.shape != (len(t), k):
            raise BadInputError("probabilities", f"must be ({len(t)}, {k}), got {prob.shape}",
                                "pass the store's `label_probability` values")
    labelled = np.isfinite(raw) & (raw >= 0)
    if prob is not None:
        labelled &= np.isfinite(prob).all(axis=1)
    codes = raw[labelled]
    if len(codes) and (codes.max() >= k or np.any(codes != np.round(codes))):
        raise BadInputError("labels", f"must be integers in 0..{k - 1} (or -1 for none), got up to {codes.max()}",
                            "pass label indices into class_names")
    t = t[labelled].astype("datetime64[ms]").astype(np.int64)
    order = np.argsort(t, kind="stable")
    return t[order], codes[order].astype(np.int64), None if prob is None else prob[labelled][order]


def _frame_ends(t: np.ndarray, segment: np.ndarray, cadence: float) -> np.ndarray:
    """When each frame's share of time ends: the next frame of its segment, or one cadence later."""
    ends = np.empty_like(t)
    ends[:-1] = np.where(segment[1:] == segment[:-1], t[1:], t[:-1] + int(round(cadence)))
    if len(t):
        ends[-1] = t[-1] + int(round(cadence))
    return ends


def _runs(codes: np.ndarray, segment: np.ndarray) -> list[list[int]]:
    """[first, last, code] of each run of one code inside one segment."""
    change = np.flatnonzero((codes[1:] != codes[:-1]) | (segment[1:] != segment[:-1])) + 1
    firsts = np.r_[0, change]
    lasts = np.r_[change - 1, len(codes) - 1]
    return [[int(f), int(la), int(codes[f])] for f, la in zip(firsts, lasts)]


def _merge_flickers(runs: list[list[int]], t: np.ndarray, ends: np.ndarray, evidence: np.ndarray,
                    min_ms: int) -> list[tuple[int, int, int]]:
    """Relabel runs shorter than ``min_ms`` to a neighbour in their segment, shortest first.

    A doubly linked list of runs and a heap of (duration, first frame); merged-away
    runs are skipped when they come off the heap.
    """
    if min_ms <= 0 or len(runs) < 2:
        return [tuple(r) for r in runs]
    n = len(runs)
    prev, nxt = list(range(-1, n - 1)), list(range(1, n + 1))
    nxt[-1] = -1
    alive = [True] * n
    csum = np.vstack([np.zeros((1, evidence.shape[1])), np.cumsum(evidence, axis=0)])

    def duration(i):
        return int(ends[runs[i][1]] - t[runs[i][0]])

    def same_segment(a, b):  # consecutive runs share a segment when no gap separates them
        return ends[runs[a][1]] == t[runs[b][0]]

    heap = [(duration(i), runs[i][0], i) for i in range(n) if duration(i) < min_ms]
    heapq.heapify(heap)
    while heap:
        d, first, i = heapq.heappop(heap)
        if not alive[i] or runs[i][0] != first or duration(i) != d:
            continue
        left = prev[i] if prev[i] >= 0 and same_segment(prev[i], i) else -1
        right = nxt[i] if nxt[i] >= 0 and same_segment(i, nxt[i]) else -1
        if left < 0 and right < 0:
            continue  # alone in its segment: stays
        mean = (csum[runs[i][1] + 1] - csum[runs[i][0]]) / (runs[i][1] - runs[i][0] + 1)

        def score(j):
            return (mean[runs[j][2]], duration(j)) if j >= 0 else (-np.inf, -1)

        keep = left if score(left) >= score(right) else right
        if keep == left:
            runs[left][1] = runs[i][1]
        else:
            runs[right][0] = runs[i][0]
        _unlink(i, prev, nxt, alive)
        # the grown run now touches its other neighbour: one run if they carry the same label
        a = prev[keep]
        if a >= 0 and runs[a][2] == runs[keep][2] and same_segment(a, keep):
            runs[a][1] = runs[keep][1]
            _unlink(keep, prev, nxt, alive)
            keep = a
        b = nxt[keep]
        if b >= 0 and runs[b][2] == runs[keep][2] and same_segment(keep, b):
            runs[keep][1] = runs[b][1]
            _unlink(b, prev, nxt, alive)
        if duration(keep) < min_ms:
            heapq.heappush(heap, (duration(keep), runs[keep][0], keep))
    return [tuple(r) for r, live in zip(runs, alive) if live]


def _unlink(i: int, prev: list[int], nxt: list[int], alive: list[bool]) -> None:
    alive[i] = False
    if prev[i] >= 0:
        nxt[prev[i]] = nxt[i]
    if nxt[i] >= 0:
        prev[nxt[i]] = prev[i]
