"""Hand labels for store frames: a CSV of ``site,time,class`` and its matching to frames.

The file has one header line and one row per labelled frame::

    site,time,class
    gako,2011-01-06T04:00:00.053,arc
    gill,2011-01-06T04:00:03.053,cloudy

* ``site``: the four-letter site code (read case-insensitively, kept lower-case).
* ``time``: the frame's UT time in ISO 8601 (``T`` or a space; a trailing ``Z`` or an
  offset is converted to UT, a time without one is taken as UT), kept to the
  millisecond (finer digits are truncated), like the store's ``time`` coordinate.
* ``class``: the class name, any text (surrounding spaces removed).

Header names are matched case-insensitively; lines starting with ``#`` are comments.
A label names a frame by (site, time); ``match_labels`` finds that frame exactly (or
within ``tolerance_ms``) and, by default, refuses the whole file when any row does not
match, saying how many did not and why.

Example:
    >>> labels = read_labels_csv("labels.csv")
    >>> matched, report = match_labels(labels, {"gako": ds.time.values})
    >>> frames = ds.frames.values[matched["gako"].frame_index]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

from aurora_pipeline.errors import BadInputError

EXPECTED_COLUMNS = ("site", "time", "class")
_FORMAT_FIX = "the file needs exactly the header `site,time,class` (e.g. `gako,2011-01-06T04:00:00.053,arc`)"


def read_labels_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a labels CSV.

    Returns:
        DataFrame with columns site (str, lower-case), time (datetime64[ms], UT) and
        class (str), in file order; ``attrs["source"]`` is the path.
    Raises:
        BadInputError: missing or unreadable file, missing/unknown columns (listed),
            empty cells, or times that are not ISO 8601.
    """
    source = str(path)
    try:
        raw = pd.read_csv(path, dtype=str, comment="#", keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError as exc:
        raise BadInputError(source, "no such file", "check the path of the labels CSV") from exc
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise BadInputError(source, f"not a readable CSV ({exc})", _FORMAT_FIX) from exc
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    missing = [c for c in EXPECTED_COLUMNS if c not in raw.columns]
    unknown = [c for c in raw.columns if c not in EXPECTED_COLUMNS]
    if missing or unknown or len(raw.columns) != len(EXPECTED_COLUMNS):
        problem = []
        if missing:
            problem.append(f"missing column(s) {missing}")
        if unknown:
            problem.append(f"unknown column(s) {unknown}")
        if not problem:
            problem.append(f"repeated columns {list(raw.columns)}")
        raise BadInputError(source, "; ".join(problem) + f" (expected `{','.join(EXPECTED_COLUMNS)}`)", _FORMAT_FIX)

    cells = raw[list(EXPECTED_COLUMNS)].apply(lambda col: col.str.strip())
    empty = (cells == "").any(axis=1).to_numpy()
    if empty.any():
        first = int(np.argmax(empty))
        raise BadInputError(source, f"{int(empty.sum())} rows have an empty site, time or class "
                            f"(first: data row {first + 1}: {raw.iloc[first].tolist()})", "fill in or delete them")
    times = pd.to_datetime(cells["time"], utc=True, format="ISO8601", errors="coerce")
    bad = times.isna().to_numpy()
    if bad.any():
        first = int(np.argmax(bad))
        raise BadInputError(source, f"{int(bad.sum())} rows have times that are not ISO 8601 "
                            f"(first: data row {first + 1}: {cells['time'].iloc[first]!r})",
                            "write times like 2011-01-06T04:00:00.053 (UT)")
    out = pd.DataFrame({
        "site": cells["site"].str.lower().to_numpy(dtype=str),
        "time": times.dt.tz_convert(None).to_numpy().astype("datetime64[ms]"),
        "class": cells["class"].to_numpy(dtype=str),
    })
    out.attrs["source"] = source
    return out


@dataclass(frozen=True, eq=False)
class SiteLabels:
    """Labels matched to one site's frames, sorted by frame.

    frame_index: (m,) int64 positions in that site's ``site_times`` array.
    class_name: (m,) str. row: (m,) int64 positions of the rows in the labels table.
    """

    frame_index: np.ndarray
    class_name: np.ndarray
    row: np.ndarray


@dataclass(frozen=True)
class MatchReport:
    """What match_labels did with each row of the labels table."""

    source: str
    n_rows: int                                                    # rows in the labels table
    n_matched: int                                                 # frames labelled (after duplicates/conflicts)
    unknown_sites: dict[str, int] = field(default_factory=dict)    # site -> rows naming it
    n_unmatched_times: int = 0                                     # rows whose time matches no frame of their site
    unmatched_examples: tuple[str, ...] = ()                       # "site time" of the first few
    n_duplicates: int = 0                                          # rows repeating an earlier row's frame and class
    n_conflicts: int = 0                                           # frames given different classes (all dropped)

    @property
    def ok(self) -> bool:
        return not (self.unknown_sites or self.n_unmatched_times or self.n_conflicts)

    def problems(self) -> str:
        """The problems in one line, '' when there are none."""
        parts = []
        if self.unknown_sites:
            n = sum(self.unknown_sites.values())
            listed = ", ".join(f"{s}: {c}" for s, c in sorted(self.unknown_sites.items()))
            parts.append(f"{n} rows name sites not in the store ({listed})")
        if self.n_unmatched_times:
            parts.append(f"{self.n_unmatched_times} rows have times that match no frame of their site "
                         f"(first: {', '.join(self.unmatched_examples)})")
        if self.n_conflicts:
            parts.append(f"{self.n_conflicts} frames are given different classes by different rows")
        return "; ".join(parts)


def match_labels(
    labels: pd.DataFrame,
    site_times: dict[str, np.ndarray],
    known_sites: Iterable[str] | None = None,
    *,
    tolerance_ms: int = 0,
    strict: bool = True,
) -> tuple[dict[str, SiteLabels], MatchReport]:
    """Find the frame each label names.

    Args:
        labels: as returned by read_labels_csv (columns site, time, class).
        site_times: site -> (n_frames,) datetime64 frame times of that site (any order).
        known_sites: every site the store holds; default the keys of ``site_times``. A
            known site missing from ``site_times`` has no frames to match.
        tolerance_ms: a label matches the nearest frame at most this far away (default
            0: the same millisecond).
        strict: raise when any row does not match; with False, unmatched rows and
            conflicting frames are dropped and counted in the report.
    Returns:
        ({site: SiteLabels} for sites with at least one matched label, MatchReport).
        Several rows naming the same frame with the same class count once.
    Raises:
        BadInputError: (strict) rows with unknown sites, unmatched times or conflicting
            classes, counted per kind; malformed ``labels``; negative tolerance.
    """
    source = str(labels.attrs.get("source", "labels"))
    if list(labels.columns) != list(EXPECTED_COLUMNS):
        raise BadInputError(source, f"labels have columns {list(labels.columns)}, expected {list(EXPECTED_COLUMNS)}",
                            "read the file with read_labels_csv")
    if not (isinstance(tolerance_ms, (int, np.integer)) and tolerance_ms >= 0):
        raise BadInputError("tolerance_ms", f"must be an integer >= 0, got {tolerance_ms!r}", "use 0 for exact times")
    known = set(site_times) if known_sites is None else set(known_sites)
    sites = labels["site"].to_numpy(dtype=str)
    times = np.asarray(labels["time"].to_numpy(), dtype="datetime64[ms]").astype(np.int64)
    classes = labels["class"].to_numpy(dtype=str)

    unknown_mask = ~np.isin(sites, list(known))
    unknown_sites = dict(zip(*np.unique(sites[unknown_mask], return_counts=True)))
    matched, n_unmatched, examples, n_dup, n_conflict = {}, 0, [], 0, 0
    for site in sorted(set(sites[~unknown_mask].tolist())):
        rows = np.flatnonzero(sites == site)
        frame = _nearest_frame(np.asarray(site_times.get(site, []), dtype="datetime64[ms]").astype(np.int64),
                               times[rows], tolerance_ms)
        miss = frame < 0
        n_unmatched += int(miss.sum())
        examples += [f"{site} {np.datetime_as_string(np.datetime64(int(t), 'ms'), unit='ms')}"
                     for t in times[rows[miss]][: max(0, 3 - len(examples))]]
        result, dup, conflict = _collapse(frame[~miss], classes[rows[~miss]], rows[~miss])
        n_dup, n_conflict = n_dup + dup, n_conflict + conflict
        if len(result.frame_index):
            matched[site] = result
    report = MatchReport(source=source, n_rows=len(labels), n_matched=sum(len(m.frame_index) for m in matched.values()),
                         unknown_sites={str(k): int(v) for k, v in unknown_sites.items()},
                         n_unmatched_times=n_unmatched, unmatched_examples=tuple(examples),
                         n_duplicates=n_dup, n_conflicts=n_conflict)
    if strict and not report.ok:
        raise BadInputError(source, report.problems() + ".",
                            "check the site codes against the store's sites and that times are the frames' UT times "
                            "to the millisecond (the store's `time` coordinate); pass tolerance_ms to allow an offset, "
                            "or strict=False to drop the rows that do not match")
    return matched, report


def _nearest_frame(frame_ms: np.ndarray, query_ms: np.ndarray, tolerance_ms: int) -> np.ndarray:
    """For each query, index of the nearest frame within the tolerance, or -1. (q,) int64."""
    if len(frame_ms) == 0:
        return np.full(len(query_ms), -1, dtype=np.int64)
    order = np.argsort(frame_ms, kind="stable")
    sorted_ms = frame_ms[order]
    right = np.clip(np.searchsorted(sorted_ms, query_ms), 0, len(sorted_ms) - 1)
    left = np.clip(right - 1, 0, len(sorted_ms) - 1)
    use_left = np.abs(sorted_ms[left] - query_ms) <= np.abs(sorted_ms[right] - query_ms)
    best = np.where(use_left, left, right)
    ok = np.abs(sorted_ms[best] - query_ms) <= tolerance_ms
    return np.where(ok, order[best], -1).astype(np.int64)


def _collapse(frame: np.ndarray, classes: np.ndarray, rows: np.ndarray) -> tuple[SiteLabels, int, int]:
    """One label per frame: repeats of the same class collapse to the first row; frames
    given different classes are dropped. Returns (labels, n duplicate rows, n conflicting frames)."""
    order = np.lexsort((rows, frame))
    frame, classes, rows = frame[order], classes[order], rows[order]
    starts = np.flatnonzero(np.r_[True, frame[1:] != frame[:-1]]) if len(frame) else np.zeros(0, dtype=np.int64)
    ends = np.r_[starts[1:], len(frame)]
    keep, n_dup, n_conflict = [], 0, 0
    for s, e in zip(starts, ends):
        if len(set(classes[s:e].tolist())) > 1:
            n_conflict += 1
        else:
            keep.append(s)
            n_dup += e - s - 1
    keep = np.asarray(keep, dtype=np.int64)
    return SiteLabels(frame_index=frame[keep], class_name=classes[keep], row=rows[keep]), n_dup, n_conflict
