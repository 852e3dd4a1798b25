"""Does the index still agree with the store? Checked hour by hour at every query.

The index records, per hour, what it holds: the store's per-hour facts it was built from
(encoder model id, source file sha256 and frame count in the catalog's ``vectors_fp``,
the classifier in ``labels_fp``). A query compares that record with the store's facts
now, over the index's range and the query's filters:

* same in both: the hour is searched through the index;
* changed in the store (re-ingested, re-embedded by the index's model, gone) or newer than
  the index (ingested and embedded after the last ``aurora-pipeline index``): its index
  rows, if any, are left out and, when the store's hour is embedded by the index's
  model, its stored embeddings are searched exactly (brute force, one hour at a time),
  until the next ``index`` brings the index up to date. More than ``MAX_EXACT_FRAMES``
  such frames are refused with that command (a query stays a query, not a scan);
* embedded by another model, or not embedded yet: left out (scores of two encoders are
  not comparable), and said so in the notes with the command that includes them.

With a label filter, an hour whose labels changed since it was indexed is searched
exactly too (the index's label bytes for it are out of date).

    >>> agreement = compare(st, saved, sites=None, start=None, end=None, with_labels=False)
    >>> agreement.dead_positions, len(agreement.exact), agreement.notes
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from aurora_pipeline.errors import StoreError
from aurora_pipeline.hours import to_time
from aurora_pipeline.search.driver import FACT_COLUMNS, fingerprint, store_hours
from aurora_pipeline.search.index import normalized
from aurora_pipeline.search.saved import BUILD_COMMAND, SavedIndex, index_location
from aurora_pipeline.store import Store, read_hour

MAX_EXACT_FRAMES = 200_000  # frames a query searches exactly outside the index (about 400 MB of 512-d float32 read)


@dataclass
class Agreement:
    """The hours where the index and the store disagree, for one query's filters."""

    dead_positions: list[int] = field(default_factory=list)  # catalog hours whose rows must not be returned
    exact: pd.DataFrame | None = None                         # store hours (facts) searched exactly instead
    notes: list[str] = field(default_factory=list)


def build_command(st: Store, saved: SavedIndex) -> str:
    """The command that brings this index up to date."""
    command = BUILD_COMMAND.format(store=st.url)
    if saved.location and saved.location != index_location(st.url):
        command += f" --index {saved.location}"
    return command


def compare(st: Store, saved: SavedIndex, *, sites: list[str] | None, start, end, with_labels: bool) -> Agreement:
    """Compare the index's per-hour record with the store's facts over the query's filters.

    Raises:
        StoreError: more than ``MAX_EXACT_FRAMES`` frames would have to be searched exactly.
    """
    span = saved.meta["range"]
    wanted = [s for s in (span["sites"] or st.sites()) if s in st.sites() and (sites is None or s in sites)]
    facts = store_hours(st, wanted, span["start"], span["end"]) if wanted else pd.DataFrame(columns=FACT_COLUMNS)
    facts = _overlapping(facts, start, end)
    lookup = saved.catalog.hour_lookup()
    vectors_fp, labels_fp = saved.catalog.column("vectors_fp"), saved.catalog.column("labels_fp")
    seen, dead, exact, foreign, unembedded = set(), [], [], {}, 0
    for pos, row in enumerate(facts.itertuples(index=False)):
        key = (row.site, int(row.year), int(row.hour_index))
        seen.add(key)
        have = lookup.get(key)
        if have is not None and vectors_fp[have] == fingerprint(row) and (
                not with_labels or labels_fp[have] == row.classifier):
            continue
        if have is not None:
            dead.append(have)
        if row.embedding_model == saved.model_id:
            exact.append(pos)
        elif row.embedding_model:
            foreign[row.embedding_model] = foreign.get(row.embedding_model, 0) + 1
        else:
            unembedded += 1
    dead += [p for key, p in lookup.items() if key not in seen]  # gone from the store (or outside the filters)
    todo = facts.iloc[exact]
    out = Agreement(sorted(set(dead)), todo)
    command = build_command(st, saved)
    frames = int(todo.frames.sum()) if len(todo) else 0
    if frames > MAX_EXACT_FRAMES:
        raise StoreError(f"{saved.location}: {len(todo)} hour(s) ({frames} frames) in the query's range changed in the "
                         f"store or are newer than the index, more than the {MAX_EXACT_FRAMES} frames a query searches "
                         f"without it. Fix: bring the index up to date with `{command}`, or narrow --sites/--start/--end.")
    if len(todo):
        out.notes.append(f"{len(todo)} hour(s) ({frames} frames) changed in the store or were added after the index was "
                         f"built: searched exactly from the store. `{command}` brings the index up to date.")
    if foreign:
        model = max(foreign, key=foreign.get)
        out.notes.append(f"{sum(foreign.values())} hour(s) embedded by another model than the index's {saved.model_id} "
                         f"({foreign}) were left out: scores of two encoders do not compare. Fix: "
                         f"`{command} --rebuild --model {model}` to search that model's hours, or re-embed them with "
                         f"the index's encoder.")
    if unembedded:
        out.notes.append(f"{unembedded} stored hour(s) in the range are not embedded and were left out. Fix: "
                         f"`aurora-pipeline embed --store {st.url} --checkpoint CKPT`, then `{command}`.")
    return out


def _overlapping(facts: pd.DataFrame, start, end) -> pd.DataFrame:
    t0, t1 = to_time(start), to_time(end)
    if not len(facts) or (t0 is None and t1 is None):
        return facts
    hour0 = facts.hour.to_numpy().astype("datetime64[ms]")
    keep = np.ones(len(facts), bool)
    if t0 is not None:
        keep &= hour0 + np.timedelta64(1, "h") > t0
    if t1 is not None:
        keep &= hour0 < t1
    return facts[keep].reset_index(drop=True)


def exact_candidates(st: Store, hours: pd.DataFrame | None, vector: np.ndarray, start, end,
                     label_names: list[str] | None) -> pd.DataFrame:
    """Every stored frame of ``hours`` in ``[start, end)`` (with one of ``label_names``) scored
    exactly against the unit ``vector`` (d,): site, year, slot, time, score, best first."""
    t0, t1 = to_time(start), to_time(end)
    parts = []
    for row in ([] if hours is None else hours.itertuples(index=False)):
        if label_names is not None and not row.classifier:
            continue  # not labelled: no label can match
        names = ("time", "embedding") + (("label",) if label_names is not None else ())
        data = read_hour(st, row.site, np.datetime64(row.hour, "h"), names)
        keep = np.ones(len(data["time"]), bool)
        if t0 is not None:
            keep &= data["time"] >= t0
        if t1 is not None:
            keep &= data["time"] < t1
        if label_names is not None:
            group = st.year_group(row.site, int(row.year))
            meanings = str(group["label"].attrs.get("flag_meanings", "")).split()
            codes = [meanings.index(n) for n in label_names if n in meanings]
            keep &= np.isin(data["label"], codes)
        if not keep.any():
            continue
        where = f"{st.url} {row.site} {str(row.hour)[:13]} embedding"
        score = normalized(data["embedding"][keep], where) @ vector
        parts.append(pd.DataFrame({"site": row.site, "year": int(row.year),
                                   "slot": int(row.first_slot) + np.flatnonzero(keep), "time": data["time"][keep],
                                   "score": score.astype(np.float32)}))
    if not parts:
        return pd.DataFrame({"site": [], "year": [], "slot": [], "time": np.array([], "datetime64[ms]"), "score": []})
    return pd.concat(parts, ignore_index=True).sort_values("score", ascending=False, kind="stable")
