"""What each row of the index is: the hour table and one label byte per row.

The index adds an hour's ``n`` frames as ``n`` consecutive rows, so one line per hour
is enough to map a row back to its frame: ``(site, year, first_slot + row - row_start)``.
Per hour the catalog keeps the site number (into its own, append-only site table),
year, hour of the year, first slot, first row, frame count and two fingerprints:

* ``vectors_fp``: embedding model, source file sha256 and frame count. When the store's
  hour no longer matches it (re-ingested, re-embedded), the hour's rows are replaced.
* ``labels_fp``: the classifier id. When only this differs, the labels are refreshed.

Per row, ``labels`` (int8: -1 = no label, -2 = a dead row) is what the filters need:
with the hour table (about 40 bytes an hour) that is all they cost beyond the index
itself. Rows of dropped hours stay in the FAISS index, marked dead here and left out of
every search; rows are never reused, and a rebuild numbers them afresh.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from aurora_pipeline.errors import BadInputError

_HOUR_FIELDS = {"site_no": np.int16, "year": np.int16, "hour_index": np.int16, "first_slot": np.int64,
                "row_start": np.int64, "frames": np.int32}
_TEXT_FIELDS = ("vectors_fp", "labels_fp")
DEAD = -2  # label byte of a row whose hour was dropped or replaced


def vectors_fingerprint(model: str, sha256: str, frames: int) -> str:
    return f"{model}|{sha256}|{int(frames)}"


@dataclass
class Catalog:
    sites: list[str] = field(default_factory=list)
    hours: dict[str, np.ndarray] = field(default_factory=lambda: {
        **{k: np.empty(0, t) for k, t in _HOUR_FIELDS.items()}, **{k: np.empty(0, "U1") for k in _TEXT_FIELDS}})
    labels: np.ndarray = field(default_factory=lambda: np.empty(0, np.int8))
    _pending: list = field(default_factory=list, repr=False)  # appended hours not yet in the arrays

    def _flush(self) -> None:
        if not self._pending:
            return
        columns = list(zip(*[values for values, _ in self._pending]))
        for key, column in zip((*_HOUR_FIELDS, *_TEXT_FIELDS), columns):
            new = np.asarray(column, dtype=_HOUR_FIELDS.get(key, str))
            self.hours[key] = np.concatenate([self.hours[key], new])
        self.labels = np.concatenate([self.labels, *[labels for _, labels in self._pending]])
        self._pending = []

    # ---- size and lookup ------------------------------------------------------------
    @property
    def next_row(self) -> int:
        return len(self.labels) + sum(len(labels) for _, labels in self._pending)

    @property
    def n_hours(self) -> int:
        self._flush()
        return len(self.hours["row_start"])

    @property
    def n_vectors(self) -> int:
        """Live rows (the hours in the table)."""
        self._flush()
        return int(self.hours["frames"].sum())

    @property
    def n_dead(self) -> int:
        self._flush()
        return int((self.labels == DEAD).sum())

    def site_no(self, site: str, create: bool = False) -> int:
        if site not in self.sites:
            if not create:
                return -1
            self.sites.append(site)
        return self.sites.index(site)

    def hour_lookup(self) -> dict[tuple[str, int, int], int]:
        """``{(site, year, hour_index): position}`` of every hour in the table."""
        self._flush()
        h = self.hours
        return {(self.sites[s], int(y), int(i)): p
                for p, (s, y, i) in enumerate(zip(h["site_no"].tolist(), h["year"].tolist(), h["hour_index"].tolist()))}

    def position(self, site: str, year: int, hour_index: int) -> int:
        """Position of one hour in the table, or -1 (vectorised: no dict of every hour)."""
        self._flush()
        no = self.site_no(site)
        h = self.hours
        hit = np.flatnonzero((h["site_no"] == no) & (h["year"] == year) & (h["hour_index"] == hour_index))
        return int(hit[0]) if no >= 0 and len(hit) else -1

    def column(self, key: str) -> np.ndarray:
        self._flush()
        return self.hours[key]

    # ---- changes --------------------------------------------------------------------
    def append_hour(self, site: str, year: int, hour_index: int, first_slot: int, labels: np.ndarray,
                    vectors_fp: str, labels_fp: str) -> tuple[int, int]:
        """Record an hour of ``len(labels)`` frames; returns its rows ``(start, stop)``."""
        start = self.next_row
        labels = _labels_int8(labels)
        values = (self.site_no(site, create=True), int(year), int(hour_index), int(first_slot), start, len(labels),
                  vectors_fp, labels_fp)
        self._pending.append((values, labels))
        return start, start + len(labels)

    def drop_hours(self, positions: list[int]) -> np.ndarray:
        """Forget these hours and mark their rows dead; returns those rows."""
        self._flush()
        if not positions:
            return np.empty(0, np.int64)
        rows = self.rows_of(positions)
        keep = np.ones(self.n_hours, bool)
        keep[positions] = False
        self.hours = {k: v[keep] for k, v in self.hours.items()}
        self.labels[rows] = DEAD
        return rows

    def set_labels(self, position: int, labels: np.ndarray, labels_fp: str) -> None:
        self._flush()
        start, n = int(self.hours["row_start"][position]), int(self.hours["frames"][position])
        self.labels[start:start + n] = _labels_int8(labels)
        fps = self.hours["labels_fp"].astype(object)  # a longer string would be cut in a fixed-width array
        fps[position] = labels_fp
        self.hours["labels_fp"] = fps.astype(str)

    # ---- rows <-> frames ------------------------------------------------------------
    def frames_of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(site_no, year, slot)`` of each row; rows not in any hour (removed) give site_no -1."""
        self._flush()
        rows = np.asarray(rows, dtype=np.int64)
        starts, frames = self.hours["row_start"], self.hours["frames"]
        if not len(starts):
            return np.full(len(rows), -1, np.int64), np.zeros(len(rows), np.int64), np.zeros(len(rows), np.int64)
        pos = np.clip(np.searchsorted(starts, rows, side="right") - 1, 0, None)
        ok = (rows >= starts[pos]) & (rows < starts[pos] + frames[pos])
        site = np.where(ok, self.hours["site_no"][pos], -1).astype(np.int64)
        year = self.hours["year"][pos].astype(np.int64)
        slot = self.hours["first_slot"][pos] + (rows - starts[pos])
        return site, year, slot

    def rows_of(self, positions: list[int]) -> np.ndarray:
        """The row numbers of the hours at ``positions`` of the table."""
        self._flush()
        starts, frames = self.hours["row_start"], self.hours["frames"]
        if not len(positions):
            return np.empty(0, np.int64)
        return np.concatenate([np.arange(starts[p], starts[p] + frames[p]) for p in positions]).astype(np.int64)

    def hour_starts(self) -> np.ndarray:
        """Start of each hour, datetime64[h]."""
        self._flush()
        years = (self.hours["year"].astype(np.int64) - 1970).astype("datetime64[Y]").astype("datetime64[h]")
        return years + self.hours["hour_index"].astype(np.int64).astype("timedelta64[h]")

    def allowed_rows(self, sites: list[str] | None = None, start: np.datetime64 | None = None,
                     end: np.datetime64 | None = None, label_codes: list[int] | None = None) -> np.ndarray | None:
        """Bool mask over rows: live, in an allowed site, in an hour overlapping ``[start, end)``,
        with one of ``label_codes``. None when every row qualifies. The time test is per
        hour here; the query refines it to the frame with the store's times."""
        if sites is None and start is None and end is None and label_codes is None:
            return None if not self.n_dead else self.labels != DEAD
        self._flush()
        ok_hour = np.ones(self.n_hours, bool)
        if sites is not None:
            ok_hour &= np.isin(self.hours["site_no"], [self.site_no(s) for s in sites])
        hour0 = self.hour_starts()
        if start is not None:
            ok_hour &= hour0 + np.timedelta64(1, "h") > np.datetime64(start, "ms")
        if end is not None:
            ok_hour &= hour0 < np.datetime64(end, "ms")
        mask = np.zeros(self.next_row, bool)
        starts, frames = self.hours["row_start"][ok_hour], self.hours["frames"][ok_hour].astype(np.int64)
        within = np.arange(frames.sum()) - np.repeat(np.cumsum(frames) - frames, frames)
        mask[np.repeat(starts, frames) + within] = True
        if label_codes is not None:
            mask &= np.isin(self.labels, np.asarray(label_codes, dtype=np.int8))
        return mask

    # ---- saving (npz, no pickle) ----------------------------------------------------
    def to_bytes(self) -> bytes:
        self._flush()
        buf = io.BytesIO()
        np.savez(buf, labels=self.labels, **{f"hour_{k}": v for k, v in self.hours.items()})
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, sites: list[str], where: str) -> "Catalog":
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                hours = {k: np.asarray(npz[f"hour_{k}"]) for k in (*_HOUR_FIELDS, *_TEXT_FIELDS)}
                labels = np.asarray(npz["labels"], dtype=np.int8)
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise BadInputError(where, f"the catalog file is truncated or foreign ({exc}).",
                                "rebuild the index: `aurora-pipeline index --store STORE --rebuild`.") from exc
        return cls(sites=list(sites), hours=hours, labels=labels)


def _labels_int8(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        labels = np.where(np.isfinite(labels), labels, -1)
    return labels.astype(np.int8)
