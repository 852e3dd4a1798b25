"""The one loop every stage driver uses: find the hours to do from the facts, then
read -> compute -> write each hour, and record the stage's fact.

    >>> refs = stored_hours(st, ["gako"], start, end)
    >>> todo, done = split_done(refs, "embedding_model", model_id)
    >>> run_stage(st, todo, "embedding_model", model_id, read=..., compute=..., write=...)

``run_stage`` clears the stage's fact of a site-year's hours before writing them and sets
it once they are written (every ``BATCH_HOURS`` hours), so an interrupted stage leaves
those hours "not done" and the next run redoes them. The next hour is read while the
current one is computed, and the previous one written meanwhile.
"""

from __future__ import annotations

import concurrent.futures as cf
from dataclasses import dataclass

import numpy as np

from aurora_pipeline.hours import time_range
from aurora_pipeline.store import layout
from aurora_pipeline.store.core import Store
from aurora_pipeline.store.facts import read_facts
from aurora_pipeline.store.read import _hours_in_range, years_in
from aurora_pipeline.store.writer import clear_stage, set_stage
from aurora_pipeline.store.writer import write_small

BATCH_HOURS = 64


@dataclass(frozen=True)
class HourRef:
    """A stored hour: where it is and its stage facts."""

    site: str
    year: int
    hour_of_year: int  # 0 = the year's first hour; the hour owns slots [h * SLOTS_PER_HOUR, ...)
    frames: int
    embedding_model: str = ""
    classifier: str = ""
    centroids: str = ""

    @property
    def hour(self) -> np.datetime64:
        return layout.hour_at(self.year, self.hour_of_year)

    @property
    def name(self) -> str:
        return f"{self.site}/{str(self.hour)[:13]}"

    @property
    def slots(self) -> slice:
        start = self.hour_of_year * layout.SLOTS_PER_HOUR
        return slice(start, start + self.frames)


def stored_hours(st: Store, sites, start=None, end=None, only: set | None = None) -> list[HourRef]:
    """The visible hours of ``sites`` overlapping [start, end), in time order per site.

    ``only``: a set of (site, datetime64[h]) pairs to keep (the nightly run's hours).
    """
    start, end = time_range(start, end)
    refs = []
    for site in sites:
        for year in years_in(st, site, start, end):
            facts = read_facts(st.year_group(site, year), ("frames", "embedding_model", "classifier", "centroids"))
            for index in _hours_in_range(year, facts["frames"], start, end):
                ref = HourRef(site, year, int(index), int(facts["frames"][index]), str(facts["embedding_model"][index]),
                              str(facts["classifier"][index]), str(facts["centroids"][index]))
                if only is None or (site, ref.hour) in only:
                    refs.append(ref)
    return refs


def split_done(refs: list[HourRef], fact: str, value: str) -> tuple[list[HourRef], list[HourRef]]:
    """(hours whose ``fact`` is not ``value``, hours already done with it)."""
    done = [r for r in refs if getattr(r, fact) == value]
    return [r for r in refs if getattr(r, fact) != value], done


def run_stage(st: Store, todo: list[HourRef], fact: str, value: str, *, read, compute, write, on_hour=None) -> int:
    """For each hour: ``data = read(ref)``; ``rows = compute(ref, data)``; ``write(ref, rows)``; then the fact.

    Returns the number of frames done. ``write`` runs in a background thread (one at a time).
    """
    frames = 0
    by_year: dict[tuple[str, int], list[HourRef]] = {}
    for ref in todo:
        by_year.setdefault((ref.site, ref.year), []).append(ref)
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        for (site, year), refs in by_year.items():
            clear_stage(st, site, year, np.array([r.hour_of_year for r in refs]), fact)
            batch: list[HourRef] = []
            pending_read = pool.submit(read, refs[0])
            pending_write = None
            for i, ref in enumerate(refs):
                data = pending_read.result()
                if i + 1 < len(refs):
                    pending_read = pool.submit(read, refs[i + 1])
                rows = compute(ref, data)
                if pending_write is not None:
                    pending_write.result()
                pending_write = pool.submit(write, ref, rows)
                batch.append(ref)
                frames += ref.frames
                if on_hour is not None:
                    on_hour(ref)
                if len(batch) >= BATCH_HOURS:
                    pending_write.result()
                    set_stage(st, site, year, np.array([r.hour_of_year for r in batch]), fact, value)
                    batch = []
            if pending_write is not None:
                pending_write.result()
            set_stage(st, site, year, np.array([r.hour_of_year for r in batch]), fact, value)
    return frames


def run_small_stage(st: Store, todo: list[HourRef], fact: str, value: str, *, read, compute, on_hour=None) -> int:
    """Like ``run_stage`` for stages whose output is small per-frame arrays (labels, clusters).

    ``compute(ref, read(ref))`` returns {array name: rows}; the rows of up to ``BATCH_HOURS``
    hours are written in one go (each shared chunk read and written once), then the fact set.
    """
    frames = 0
    by_year: dict[tuple[str, int], list[HourRef]] = {}
    for ref in todo:
        by_year.setdefault((ref.site, ref.year), []).append(ref)
    for (site, year), refs in by_year.items():
        for first in range(0, len(refs), BATCH_HOURS):
            batch = refs[first: first + BATCH_HOURS]
            index = np.array([r.hour_of_year for r in batch])
            clear_stage(st, site, year, index, fact)
            rows: dict[str, dict[int, np.ndarray]] = {}
            for ref in batch:
                for name, values in compute(ref, read(ref)).items():
                    rows.setdefault(name, {})[ref.hour_of_year] = values
                frames += ref.frames
                if on_hour is not None:
                    on_hour(ref)
            write_small(st, site, year, rows)
            set_stage(st, site, year, index, fact, value)
    return frames
