"""Build and update the similarity index from the store's embeddings, hour by hour.

``build_index`` makes a new index of the embedded hours of ``sites`` in ``[start, end)``
(all by default): it picks the parameters from the number of vectors, trains on a
seeded sample of hours when the kind needs training (read once more for the sample; a
bounded ``max_train`` vectors), then adds every hour in (site, time) order. Memory stays
at one hour plus the training sample plus the index.

``update_index`` brings an existing index in line with the store, reading only what
changed: new and late hours are added, hours whose embeddings changed (re-ingested
file, re-embedded) are replaced, hours gone from the store are removed, hours whose
labels changed get their label bytes refreshed. The nightly run calls it.

The index holds one encoder's embeddings: hours embedded by another model are refused
(StoreError, before anything is changed) with the fix: rebuild for the new model once
the archive is re-embedded (``--rebuild --model``), or restrict the range.

Rebuilding gives the same contents: the training sample is chosen by a seeded
generator over the sorted hours, FAISS k-means is seeded, and hours are added in a fixed
order. ``keep_training=True`` re-adds every hour to the current trained index, which
gives exactly what incremental updates give.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from aurora_pipeline.errors import BadInputError, CheckpointError, StoreError
from aurora_pipeline.search.catalog import Catalog, vectors_fingerprint
from aurora_pipeline.search.config import IndexConfig
from aurora_pipeline.search.index import VectorIndex, choose_params, normalized
from aurora_pipeline.search.saved import (BUILD_COMMAND, SavedIndex, check_index_folder, check_index_outside_store,
                                          index_exists, index_location, load_index, save_index, sidecar_sha256)
from aurora_pipeline.store import Store, hour_facts, open_store, read_hour
from aurora_pipeline.store.core import StoreLike

COMPACT_DEAD_FRACTION = 0.25  # rebuild (same training) once dead rows pass a quarter of the live ones
FACT_COLUMNS = ["site", "hour", "year", "hour_index", "first_slot", "frames", "source_sha256", "embedding_model",
                "classifier"]


@dataclass
class IndexReport:
    location: str
    model_id: str = ""
    kind: str = ""
    factory: str = ""
    hours_added: int = 0
    hours_replaced: int = 0
    hours_removed: int = 0
    hours_relabelled: int = 0
    hours_not_embedded: int = 0
    vectors: int = 0
    trained_on: int = 0
    dead_rows: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


# ---- reading the store ---------------------------------------------------------------------

def store_hours(st: Store, sites: list[str] | None, start, end) -> pd.DataFrame:
    """The stored hours of ``sites`` in ``[start, end)`` with the facts the index needs, sorted."""
    sites = [s.lower() for s in (sites or st.sites())]
    unknown = [s for s in sites if s not in st.sites()]
    if unknown:
        raise BadInputError(", ".join(unknown), f"no such site in {st.url} (it holds {', '.join(st.sites()) or 'none'})",
                            "pick sites the store holds")
    parts = [hour_facts(st, site, start, end) for site in sites]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in FACT_COLUMNS})
    facts = pd.concat(parts, ignore_index=True)[FACT_COLUMNS]
    return facts.sort_values(["site", "year", "hour_index"], kind="stable").reset_index(drop=True)


class _Labels:
    """Label codes of store hours, remapped onto the index's append-only class list."""

    def __init__(self, st: Store, class_names: list[str]):
        self.st, self.class_names, self._maps = st, class_names, {}

    def _map(self, site: str, year: int) -> np.ndarray:
        key = (site, year)
        if key not in self._maps:
            group = self.st.year_group(site, year)
            names = str(group["label"].attrs.get("flag_meanings", "")).split() if "label" in group else []
            for name in names:
                if name not in self.class_names:
                    self.class_names.append(name)
            self._maps[key] = np.array([self.class_names.index(n) for n in names] + [-1], dtype=np.int8)
        return self._maps[key]

    def of(self, row, values: np.ndarray | None) -> np.ndarray:
        if values is None:
            return np.full(int(row.frames), -1, np.int8)
        mapping = self._map(row.site, int(row.year))
        codes = np.asarray(values).astype(np.int64)
        known = (codes >= 0) & (codes < len(mapping) - 1)
        return np.where(known, mapping[np.clip(codes, 0, len(mapping) - 1)], -1).astype(np.int8)


def _read(st: Store, row, labels: _Labels, with_vectors: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    names = (("embedding",) if with_vectors else ()) + (("label",) if row.classifier else ())
    data = read_hour(st, row.site, np.datetime64(row.hour, "h"), names) if names else {}
    vectors = normalized(data["embedding"], f"{st.url} {row.site} {str(row.hour)[:13]} embedding") if with_vectors else None
    return vectors, labels.of(row, data.get("label"))


def fingerprint(row) -> str:
    """What the index records of a store hour (one row of ``store_hours``): model, source sha256, frames."""
    return vectors_fingerprint(row.embedding_model, row.source_sha256, row.frames)


# ---- building --------------------------------------------------------------------------------

def _choose_model(facts: pd.DataFrame, model: str | None, st: Store) -> str:
    models = facts.loc[facts.embedding_model != "", "embedding_model"].value_counts()
    if not len(models):
        raise StoreError(f"{st.url}: no embedded hours in the range. "
                         f"Fix: run `aurora-pipeline embed --store {st.url}` first.")
    if model is not None:
        if model not in models.index:
            raise BadInputError(model, f"no hour in the range is embedded by this model ({dict(models)})",
                                "pass one of those model ids")
        return model
    if len(models) > 1:
        raise StoreError(f"{st.url}: the range holds embeddings of {len(models)} models ({dict(models)} hours); an "
                         "index holds one model's. Fix: pass --model with the one to index (the other hours are left "
                         "out), or re-embed those hours with one checkpoint (`aurora-pipeline embed --overwrite`).")
    return str(models.index[0])


def _training_sample(st: Store, facts: pd.DataFrame, n_train: int, seed: int, labels: _Labels) -> np.ndarray:
    """``n_train`` vectors from a seeded random choice of hours (same store -> same sample)."""
    rng = np.random.default_rng(seed)
    parts, total = [], 0
    for pos in rng.permutation(len(facts)):
        vectors, _ = _read(st, facts.iloc[pos], labels)
        parts.append(vectors)
        total += len(vectors)
        if total >= n_train:
            break
    sample = np.concatenate(parts)
    pick = np.sort(rng.choice(len(sample), size=min(n_train, len(sample)), replace=False))
    return sample[pick]


def _add_hours(st: Store, saved: SavedIndex, rows: pd.DataFrame, labels: _Labels, on_hour=None) -> None:
    for row in rows.itertuples(index=False):
        vectors, codes = _read(st, row, labels)
        first, _ = saved.catalog.append_hour(row.site, int(row.year), int(row.hour_index), int(row.first_slot), codes,
                                             fingerprint(row), row.classifier)
        saved.vectors.add(vectors, first)
        if on_hour is not None:
            on_hour(row.site, row.hour, int(row.frames))


def build_index(store: StoreLike, *, index: str | None = None, sites: list[str] | None = None, start=None, end=None,
                config: IndexConfig = IndexConfig(), model: str | None = None, checkpoint: str | None = None,
                keep_training: bool = False, overwrite: bool = False, storage_options: dict | None = None,
                on_hour=None) -> dict:
    """Build a new index of the store's embeddings (see the module docstring).

    Args:
        index: where to write it (default: the store's sibling ``<store>.index``).
        model: the encoder model id to index when the range holds several.
        checkpoint: the encoder checkpoint of ``model``, recorded for queries by image
            (default: the old index's, else the one ``embed`` recorded in the store).
        keep_training: re-add everything to the existing index's trained parts (same
            parameters) instead of choosing parameters and training anew.
        overwrite: replace an existing index (else a BadInputError says to use update).

    Returns:
        The report's summary (counts, kind, model id, seconds).

    Raises:
        StoreError: nothing embedded, or several models and no ``model``.
        BadInputError: an index exists and ``overwrite`` is False; unknown sites; ``index``
            inside the store, or a folder that is neither empty nor an index of ours.
        IndexChangedError: another run replaced the index while this one ran.
    """
    started = time.perf_counter()
    st = open_store(store, storage_options)
    location = index_location(st.url, index)
    check_index_outside_store(location, st)
    check_index_folder(location, storage_options)
    replaces = sidecar_sha256(location, storage_options)  # the commit checks nobody replaced it meanwhile
    old = None
    if replaces is not None:
        if not overwrite and not keep_training:
            raise BadInputError(location, "already holds a similarity index.",
                                f"update it with `{BUILD_COMMAND.format(store=st.url)}`, or rebuild with --rebuild.")
        try:
            old = load_index(location, storage_options, store=st.url)
        except StoreError:
            if keep_training:
                raise
            # a damaged index is rebuilt from the store, not read
    facts = store_hours(st, sites, start, end)
    report = IndexReport(location=location)
    report.hours_not_embedded = int((facts.embedding_model == "").sum())
    model = _choose_model(facts, model or (old.model_id if keep_training and old else None), st)
    todo = facts[facts.embedding_model == model]
    if len(todo) < (facts.embedding_model != "").sum():
        report.notes.append(f"{int((facts.embedding_model != '').sum() - len(todo))} hour(s) of other models left out")
    labels = _Labels(st, list(old.meta["class_names"]) if keep_training and old else [])
    n = int(todo.frames.sum())
    if keep_training and old is not None:
        vectors = old.vectors.empty_copy()
    else:
        params = choose_params(n, _embedding_width(st, todo), config)
        if params["kind"] == "exact":
            vectors = VectorIndex.create(params)
        else:
            sample = _training_sample(st, todo, params["n_train"], params["seed"], labels)
            vectors = VectorIndex.trained(params, sample)
            report.trained_on = len(sample)
    if checkpoint:
        _check_checkpoint(checkpoint, model, storage_options)
    else:
        kept = old.meta.get("checkpoint") if old is not None and old.model_id == model else None
        checkpoint = kept or _recorded_checkpoint(st, model, storage_options, report)
    meta = {"model_id": model, "params": vectors.params, "class_names": labels.class_names, "store": st.url,
            "range": {"sites": sites, "start": _text(start), "end": _text(end)},
            "checkpoint": checkpoint, "preprocess": st.preprocess}
    saved = SavedIndex(vectors, Catalog(), meta, location)
    _add_hours(st, saved, todo, labels, on_hour)
    report.hours_added = len(todo)
    save_index(saved, location, storage_options, store=st, replaces=replaces)
    return _finish(report, saved, started)


def update_index(store: StoreLike, *, index: str | None = None, missing_ok: bool = False, checkpoint: str | None = None,
                 storage_options: dict | None = None, on_hour=None) -> dict:
    """Bring an existing index in line with the store over the range it was built for.

    Raises:
        BadInputError: no index at the location (unless ``missing_ok``: then a summary
            saying so), naming the command that builds one.
        StoreError: hours in the range are embedded by another model than the index's.
    """
    started = time.perf_counter()
    st = open_store(store, storage_options)
    location = index_location(st.url, index)
    check_index_outside_store(location, st)
    if missing_ok and not index_exists(location, storage_options):
        return {"location": location, "index": "none (build one with "
                f"`{BUILD_COMMAND.format(store=st.url)}`)"}
    saved = load_index(location, storage_options, store=st.url)
    report = IndexReport(location=location)
    if not checkpoint and not saved.meta.get("checkpoint"):  # an index built before embed recorded checkpoints
        checkpoint = _recorded_checkpoint(st, saved.model_id, storage_options, report)
    changed = bool(checkpoint) and checkpoint != saved.meta.get("checkpoint")
    if changed:
        _check_checkpoint(checkpoint, saved.model_id, storage_options)
        saved.meta["checkpoint"] = checkpoint
    span = saved.meta["range"]
    facts = store_hours(st, span["sites"], span["start"], span["end"])
    embedded = facts[facts.embedding_model != ""]
    foreign = embedded[embedded.embedding_model != saved.model_id]
    if len(foreign):
        counts = foreign.embedding_model.value_counts().to_dict()
        first = foreign.iloc[0]
        raise StoreError(
            f"{location}: this index holds embeddings of {saved.model_id}, but {len(foreign)} hour(s) in its range are "
            f"now embedded by another model ({counts}; e.g. {first.site} {str(first.hour)[:13]}). One index holds one "
            f"model's embeddings. Fix: once the archive is re-embedded, rebuild for the new model with "
            f"`{BUILD_COMMAND.format(store=st.url)} --rebuild --model {next(iter(counts))}`; or re-embed those hours "
            f"with {saved.model_id}.")
    report.hours_not_embedded = int(len(facts) - len(embedded))
    labels = _Labels(st, list(saved.meta["class_names"]))
    existing = saved.catalog.hour_lookup()
    fps, lab_fps = saved.catalog.column("vectors_fp"), saved.catalog.column("labels_fp")
    wanted, add, replaced, relabel = set(), [], [], []
    for pos, row in enumerate(embedded.itertuples(index=False)):
        key = (row.site, int(row.year), int(row.hour_index))
        wanted.add(key)
        have = existing.get(key)
        if have is None:
            add.append(pos)
        elif fps[have] != fingerprint(row):  # re-ingested or re-embedded: replace its rows
            add.append(pos)
            replaced.append(have)
        elif lab_fps[have] != row.classifier:
            relabel.append((have, row))
    gone = [p for key, p in existing.items() if key not in wanted]
    for position, row in relabel:  # positions before any hour is dropped
        _, codes = _read(st, row, labels, with_vectors=False)
        saved.catalog.set_labels(position, codes, row.classifier)
    report.hours_relabelled = len(relabel)
    saved.catalog.drop_hours(sorted(replaced + gone))  # their rows stay in FAISS, dead (see index.py)
    _add_hours(st, saved, embedded.iloc[add], labels, on_hour)
    report.hours_added, report.hours_replaced, report.hours_removed = len(add) - len(replaced), len(replaced), len(gone)
    saved.meta["class_names"] = labels.class_names
    if saved.catalog.n_dead > COMPACT_DEAD_FRACTION * max(saved.catalog.n_vectors, 1):
        report.notes.append(f"compacted: {saved.catalog.n_dead} dead rows of replaced or removed hours dropped")
        saved = _rebuilt(st, saved, embedded, labels)
    if saved.vectors.exact and saved.vectors.ntotal >= saved.vectors.params["config"]["exact_below"]:
        report.notes.append(f"{saved.vectors.ntotal} vectors: past the exact-search threshold; rebuild with "
                            f"`{BUILD_COMMAND.format(store=st.url)} --rebuild` for the approximate index")
    elif not saved.vectors.exact and saved.vectors.ntotal > 16 * saved.vectors.params["n_at_build"]:
        report.notes.append(f"{saved.vectors.ntotal} vectors, 16x the {saved.vectors.params['n_at_build']} the lists "
                            f"were sized for: rebuild with `{BUILD_COMMAND.format(store=st.url)} --rebuild`")
    if changed or report.hours_added or report.hours_replaced or report.hours_removed or report.hours_relabelled:
        save_index(saved, location, storage_options, store=st, replaces=saved.sidecar_sha256)
    report.dead_rows = saved.catalog.n_dead
    return _finish(report, saved, started)


def _rebuilt(st: Store, saved: SavedIndex, facts: pd.DataFrame, labels: _Labels) -> SavedIndex:
    """The same trained index with every hour of ``facts`` added afresh (no dead rows)."""
    fresh = SavedIndex(saved.vectors.empty_copy(), Catalog(), saved.meta, saved.location, saved.sidecar_sha256)
    _add_hours(st, fresh, facts, labels)
    return fresh


def _finish(report: IndexReport, saved: SavedIndex, started: float) -> dict:
    report.model_id, report.kind, report.factory = saved.model_id, saved.vectors.kind, saved.vectors.params["factory"]
    report.vectors = saved.catalog.n_vectors
    report.seconds = time.perf_counter() - started
    return {**report.summary(), **{k: v for k, v in saved.counts().items() if k.startswith("bytes")}}


def _check_checkpoint(checkpoint: str, model: str, storage_options: dict | None) -> None:
    # torch (encoder.checkpoint): only when checking a checkpoint
    from aurora_pipeline.encoder.checkpoint import read_verified, resolve_checkpoint

    sidecar, _ = read_verified(resolve_checkpoint(checkpoint, storage_options), (), storage_options)
    if sidecar.get("model_id") != model:
        raise CheckpointError(f"{checkpoint}: encoder {sidecar.get('model_id')}, but the index holds embeddings of "
                              f"{model}. Fix: pass the checkpoint that embedded the store.")


def _recorded_checkpoint(st: Store, model: str, storage_options: dict | None, report: IndexReport) -> str | None:
    """The checkpoint ``embed`` recorded in the store for ``model``, when it still reads as that model's."""
    recorded = st.encoder_checkpoints().get(model)
    if not recorded:
        return None
    try:
        _check_checkpoint(recorded, model, storage_options)
    except (CheckpointError, BadInputError, OSError) as err:
        report.notes.append(f"the checkpoint the store records for {model} ({recorded}) is not usable ({err}); "
                            "pass --checkpoint for --cdf/--png queries")
        return None
    return recorded


def _embedding_width(st: Store, facts: pd.DataFrame) -> int:
    row = facts.iloc[0]
    group = st.year_group(row.site, int(row.year))
    return int(group["embedding"].shape[1])


def _text(value) -> str | None:
    return None if value is None else str(value)


def index_store(store: StoreLike, *, index: str | None = None, sites: list[str] | None = None, start=None, end=None,
                rebuild: bool = False, keep_training: bool = False, model: str | None = None,
                checkpoint: str | None = None, config: IndexConfig = IndexConfig(),
                storage_options: dict | None = None, on_hour=None) -> dict:
    """What ``aurora-pipeline index`` does: build the index when there is none (or with
    ``rebuild``), else update it over the range it was built for.

    Raises:
        BadInputError: a range, model or setting given for an existing index without ``rebuild``.
    """
    st = open_store(store, storage_options)
    location = index_location(st.url, index)
    check_index_outside_store(location, st)
    check_index_folder(location, storage_options)
    if rebuild or keep_training or not index_exists(location, storage_options):
        return build_index(st, index=location, sites=sites, start=start, end=end, config=config, model=model,
                           checkpoint=checkpoint, keep_training=keep_training, overwrite=True,
                           storage_options=storage_options, on_hour=on_hour)
    asked = {"--sites": sites, "--start": start, "--end": end, "--model": model,
             "index settings": None if config == IndexConfig() else config}
    given = [name for name, value in asked.items() if value is not None]
    if given:
        raise BadInputError(", ".join(given), f"given for the existing index at {location}, which keeps the range, model "
                            "and settings it was built with", "add --rebuild to build it anew with them")
    return update_index(st, index=location, checkpoint=checkpoint, storage_options=storage_options, on_hour=on_hour)
