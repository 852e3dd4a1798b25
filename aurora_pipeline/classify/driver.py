"""Fit the linear classifier on the store's embeddings and write labels back, hour by hour.

``fit_from_store`` matches a labels table (site, time, class) to the stored frames,
cross-validates and fits the l2 logistic regression on their embeddings, and saves it
(no pickle). ``classify_store`` writes, for every site-hour, ``label`` (time) as small
integers with CF ``flag_values``/``flag_meanings`` and ``label_probability`` (time, class)
with a ``class`` coordinate; both record the classifier and encoder ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aurora_pipeline.classify.model import (ClassifierConfig, cross_validate_by_group, evaluate, fit_classifier,
                                            group_folds, save_classifier)
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.classify.labels_csv import match_labels, read_labels_csv
from aurora_pipeline.plots import confusion_matrix_png
from aurora_pipeline.store.core import Store, StoreLike, open_store
from aurora_pipeline.embed.stored import embedded_hours, pending_hours, read_embeddings, read_hour_embedding
from aurora_pipeline.store.stages import run_small_stage, stored_hours
from aurora_pipeline.store.writer import ensure_labels

FACT = "classifier"


@dataclass
class FitReport:
    classifier_dir: str
    classifier_id: str
    encoder_id: str
    n_labelled: int
    class_names: list[str]
    cross_validation: dict
    holdout: dict | None = None
    match: dict = field(default_factory=dict)


def fit_from_store(
    store: StoreLike,
    labels_csv: str | Path,
    out_dir: str | Path,
    cfg: ClassifierConfig = ClassifierConfig(),
    *,
    holdout_hours_fraction: float = 0.0,
    strict: bool = True,
    overwrite: bool = False,
    storage_options: dict | None = None,
) -> FitReport:
    """Fit the classifier on the embeddings of the labelled frames and save it in ``out_dir``.

    With ``holdout_hours_fraction`` > 0, the last fraction of each site's embedded hours is
    kept out of the fit and reported as held-out metrics (whole hours, because frames
    seconds apart are nearly identical and would leak across a random split).
    """
    st = open_store(store, storage_options)
    sites = st.sites()
    pairs, encoder_id = embedded_hours(st, sites)
    per_site = read_embeddings(st, pairs)
    labels = read_labels_csv(labels_csv)
    matched, report = match_labels(labels, {s: v[0] for s, v in per_site.items()}, known_sites=sites, strict=strict)
    held, hours = split_by_hours(matched, {s: v[2] for s, v in per_site.items()}, holdout_hours_fraction)
    X = np.concatenate([per_site[site][1][m.frame_index] for site, m in matched.items()])
    y = np.concatenate([m.class_name for m in matched.values()])
    class_names = sorted(set(y.tolist()))
    fit_rows = ~held
    check_fit_classes(y, fit_rows, labels_csv, holdout_hours_fraction)
    cv = cross_validate_by_group(X[fit_rows], y[fit_rows], hours[fit_rows], cfg, class_names=class_names)
    clf = fit_classifier(X[fit_rows], y[fit_rows], cfg, encoder_id=encoder_id, class_names=class_names)
    holdout = evaluate(clf, X[held], y[held]) if held.any() else None
    out_dir = Path(out_dir)
    save_classifier(clf, out_dir, metrics={"cross_validation": cv, "holdout": holdout}, overwrite=overwrite)
    if cv["confusion_matrix"] is not None:
        confusion_matrix_png(np.asarray(cv["confusion_matrix"]), class_names, out_dir / "confusion_matrix.png",
                             title=f"cross-validated confusion matrix ({len(y[fit_rows])} frames)")
    if holdout is not None:
        confusion_matrix_png(np.asarray(holdout["confusion_matrix"]), class_names, out_dir / "confusion_matrix_holdout.png",
                             title=f"held-out confusion matrix ({int(held.sum())} frames)")
    return FitReport(str(out_dir), clf.classifier_id, encoder_id, int(len(y)), class_names, cv, holdout,
                     {"rows": report.n_rows, "matched": report.n_matched, "problems": report.problems()})


def check_fit_classes(y: np.ndarray, fit_rows: np.ndarray, labels_csv, holdout_hours_fraction: float) -> None:
    """Refuse, naming the labels file, labels that leave fewer than two classes to fit, or a
    class that lives only in the held-out hours."""
    present = sorted(set(y.tolist()))
    if len(present) < 2:
        raise BadInputError(str(labels_csv), f"the labels that match stored frames name only the class(es) {present}; "
                            "a classifier needs at least two", "label frames of at least two classes")
    fitted = set(y[fit_rows].tolist())
    only_held = [c for c in present if c not in fitted]
    if only_held:
        raise BadInputError("--holdout-hours-fraction", f"{holdout_hours_fraction} leaves class(es) {only_held} "
                            f"of {labels_csv} only in the held-out hours, so the fit never sees them",
                            "lower --holdout-hours-fraction (0 holds nothing out), or label those classes in "
                            "earlier hours too")


def split_by_hours(matched: dict, spans: dict[str, list[tuple[str, int, int]]],
                   holdout_hours_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """For the matched labels of every site, in ``matched``'s order: (held_out (n,) bool,
    site-hour name (n,) "site/YYYYMMDDTHH").

    ``spans[site]`` lists that site's hours as (hour, first row, stop row) in the order its
    frames were concatenated; the last ``holdout_hours_fraction`` of them are held out.
    """
    held, names = [], []
    for site, m in matched.items():
        site_spans = spans[site]
        n_hold = int(round(holdout_hours_fraction * len(site_spans)))
        first_held = site_spans[len(site_spans) - n_hold][1] if n_hold else site_spans[-1][2]
        starts = np.array([first for _, first, _ in site_spans])
        which = np.searchsorted(starts, m.frame_index, side="right") - 1
        held.append(m.frame_index >= first_held)
        names.append(np.array([f"{site}/{site_spans[i][0]}" for i in which]))
    return np.concatenate(held), np.concatenate(names)


def hour_folds(y: np.ndarray, hours: np.ndarray, cfg: ClassifierConfig):
    """Folds of whole site-hours (``classify.model.group_folds``), or None when none can be made."""
    return group_folds(y, hours, cfg)


def label_rows(proba: np.ndarray) -> dict[str, np.ndarray]:
    """``label`` (n,) int8 (most probable class) and ``label_probability`` (n, k) float32 of one hour."""
    return {"label": np.argmax(proba, axis=1).astype(np.int8), "label_probability": proba.astype(np.float32)}


def hours_left(st: Store, sites, start, end, only, encoder_id: str) -> dict:
    """The stored hours a stage of ``encoder_id``'s embeddings leaves alone, counted by why.

    Returns ``{"hours_left": n, "hours_left_why": {reason: count}, "hours_left_examples": {reason: hour}}``,
    a reason being "not embedded yet" or "embedded by encoder X, not Y".
    """
    sites = [s.lower() for s in (sites or st.sites())]
    why: dict[str, list[str]] = {}
    for ref in stored_hours(st, sites, start, end, only):
        if ref.embedding_model == encoder_id:
            continue
        reason = (f"embedded by encoder {ref.embedding_model}, not {encoder_id}" if ref.embedding_model
                  else "not embedded yet")
        why.setdefault(reason, []).append(ref.name)
    return {"hours_left": sum(len(v) for v in why.values()),
            "hours_left_why": {k: len(v) for k, v in why.items()},
            "hours_left_examples": {k: v[0] for k, v in why.items()}}


def classify_store(store: StoreLike, clf, *, sites=None, start=None, end=None, storage_options: dict | None = None,
                   only: set | None = None) -> dict:
    """Write labels for every hour embedded by the classifier's encoder; hours already labelled
    by this classifier are skipped. ``only``: (site, datetime64[h]) pairs to limit to.

    The result counts the hours left unlabelled (``hours_left``, with why: embedded by another
    encoder, or not yet), so none goes unmentioned."""
    st = open_store(store, storage_options, mode="a")
    todo, done = pending_hours(st, sites, start, end, only, encoder_id=clf.encoder_id, fact=FACT,
                               value=clf.classifier_id,
                               made_by=f"the classifier {clf.classifier_id} was fitted on encoder {clf.encoder_id}'s "
                                       "embeddings", fix="refit with `aurora-pipeline fit-classifier` on this store")
    counts = np.zeros(len(clf.class_names), dtype=np.int64)
    for site, year in sorted({(r.site, r.year) for r in todo}):
        ensure_labels(st, site, year, list(clf.class_names))

    def compute(ref, embedding):
        rows = label_rows(clf.predict_proba(embedding))
        counts[:] += np.bincount(rows["label"], minlength=len(counts))
        return rows

    run_small_stage(st, todo, FACT, clf.classifier_id, read=lambda ref: read_hour_embedding(st, ref), compute=compute)
    labelled: dict[str, list[str]] = {}
    for r in todo:
        labelled.setdefault(r.site, []).append(str(r.hour))
    return {"hours_labelled": len(todo), "hours_skipped": len(done),
            **hours_left(st, sites, start, end, only, clf.encoder_id),
            "label_counts": dict(zip(clf.class_names, counts.tolist())), "labelled": labelled}
