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
import xarray as xr

from aurora_pipeline.classify.model import ClassifierConfig, cross_validate, evaluate, fit_classifier, save_classifier
from aurora_pipeline.embed.driver import MODEL_ATTR
from aurora_pipeline.errors import StoreError
from aurora_pipeline.classify.labels_csv import match_labels, read_labels_csv
from aurora_pipeline.plots import confusion_matrix_png
from aurora_pipeline.store.zarr_layout import (
    select_hours,
    hour_attrs,
    list_hours,
    list_sites,
    read_hour_times,
    read_hour_variable,
    write_hour_variables,
    zarr_store,
)

LABEL_ATTR = "aurora_label_classifier_id"


def embedded_hours(zs, sites, start=None, end=None, only: set[str] | None = None) -> tuple[list[tuple[str, str]], str]:
    """The (site, hour) pairs that have an embedding, and the single model id they share.

    ``only`` limits the hours to these ``"site/YYYYMMDDTHH"`` names.

    Raises StoreError when there are none, or when hours carry different models' embeddings.
    """
    pairs, models = [], {}
    for site in sites:
        for hour in select_hours(list_hours(zs, site), start, end):
            if only is not None and f"{site}/{hour}" not in only:
                continue
            model = (hour_attrs(zs, site, hour) or {}).get(MODEL_ATTR)
            if model:
                pairs.append((site, hour))
                models.setdefault(model, (site, hour))
    if not pairs:
        raise StoreError(f"no embedded hours for sites {list(sites)}. Fix: run `aurora-pipeline embed` first.")
    if len(models) > 1:
        listed = ", ".join(f"{m} (e.g. {s}/{h})" for m, (s, h) in models.items())
        raise StoreError(f"the store's hours were embedded by different encoders: {listed}. "
                         "Fix: re-embed with one checkpoint (`aurora-pipeline embed --overwrite`).")
    return pairs, next(iter(models))


def read_embeddings(zs, pairs: list[tuple[str, str]]) -> dict[str, tuple[np.ndarray, np.ndarray, list[tuple[str, int, int]]]]:
    """Per site: (times (n,) datetime64[ms], embeddings (n, d) float32, [(hour, first row, stop row)])."""
    out: dict[str, list] = {}
    for site, hour in pairs:
        t = read_hour_times(zs, site, hour)
        x = read_hour_variable(zs, site, hour, "embedding").astype(np.float32)
        times, xs, spans = out.setdefault(site, [[], [], []])
        first = sum(len(a) for a in times)
        times.append(t)
        xs.append(x)
        spans.append((hour, first, first + len(t)))
    return {s: (np.concatenate(t), np.concatenate(x), spans) for s, (t, x, spans) in out.items()}


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
    store,
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
    zs = zarr_store(store, storage_options)
    sites = list_sites(zs)
    pairs, encoder_id = embedded_hours(zs, sites)
    per_site = read_embeddings(zs, pairs)
    labels = read_labels_csv(labels_csv)
    matched, report = match_labels(labels, {s: v[0] for s, v in per_site.items()}, known_sites=sites, strict=strict)
    held, hours = split_by_hours(matched, {s: v[2] for s, v in per_site.items()}, holdout_hours_fraction)
    X = np.concatenate([per_site[site][1][m.frame_index] for site, m in matched.items()])
    y = np.concatenate([m.class_name for m in matched.values()])
    class_names = sorted(set(y.tolist()))
    fit_rows = ~held
    cv = cross_validate(X[fit_rows], y[fit_rows], cfg, class_names=class_names,
                        splits=hour_folds(y[fit_rows], hours[fit_rows], cfg))
    clf = fit_classifier(X[fit_rows], y[fit_rows], cfg, encoder_id=encoder_id, class_names=class_names)
    holdout = evaluate(clf, X[held], y[held]) if held.any() else None
    out_dir = Path(out_dir)
    save_classifier(clf, out_dir, metrics={"cross_validation": cv, "holdout": holdout}, overwrite=overwrite)
    confusion_matrix_png(np.asarray(cv["confusion_matrix"]), class_names, out_dir / "confusion_matrix.png",
                         title=f"cross-validated confusion matrix ({len(y[fit_rows])} frames)")
    if holdout is not None:
        confusion_matrix_png(np.asarray(holdout["confusion_matrix"]), class_names, out_dir / "confusion_matrix_holdout.png",
                             title=f"held-out confusion matrix ({int(held.sum())} frames)")
    return FitReport(str(out_dir), clf.classifier_id, encoder_id, int(len(y)), class_names, cv, holdout,
                     {"rows": report.n_rows, "matched": report.n_matched, "problems": report.problems()})


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
    """Cross-validation folds that keep each site-hour whole (stratified by class as far as
    possible). Frames seconds apart are near copies, so folds that split an hour score the
    classifier on frames it has practically seen. Fewer folds than ``cfg.cv_folds`` when a
    class lives in too few hours; None (plain stratified folds, optimistic) when no split
    into whole hours leaves every class in every training part.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    classes = set(y.tolist())
    for n_splits in range(min(cfg.cv_folds, len(set(hours.tolist()))), 1, -1):
        folder = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=cfg.seed)
        folds = list(folder.split(np.zeros(len(y)), y, groups=hours))
        if all(set(y[train].tolist()) == classes for train, _ in folds):  # every fold can learn every class
            return folds
    return None


def label_dataset(clf, proba: np.ndarray) -> xr.Dataset:
    """``label`` (time) int8 and ``label_probability`` (time, class) float32 for one hour."""
    ids = {"aurora_classifier_id": clf.classifier_id, "aurora_encoder_id": clf.encoder_id}
    codes = np.arange(len(clf.class_names), dtype=np.int8)
    return xr.Dataset(
        {
            "label": ("time", np.argmax(proba, axis=1).astype(np.int8), {
                "long_name": "most probable class of the frame (logistic regression on the SimCLR embedding)",
                "units": "1", "flag_values": codes.tolist(), "flag_meanings": " ".join(clf.class_names), **ids}),
            "label_probability": (("time", "class"), proba.astype(np.float32), {
                "long_name": "class probability", "units": "1", "valid_range": [0.0, 1.0], **ids}),
        },
        coords={"class": ("class", np.array(clf.class_names, dtype=object), {"long_name": "class name"})},
    )


def classify_store(store, clf, *, sites=None, start=None, end=None, storage_options: dict | None = None,
                   only: set[str] | None = None) -> dict:
    """Write labels for every embedded hour; hours already labelled by this classifier are skipped."""
    zs = zarr_store(store, storage_options)
    sites = [s.lower() for s in (sites or list_sites(zs))]
    pairs, encoder_id = embedded_hours(zs, sites, start, end, only)
    if encoder_id != clf.encoder_id:
        raise StoreError(f"the classifier {clf.classifier_id} was fitted on encoder {clf.encoder_id}'s embeddings, "
                         f"but the store's embeddings come from {encoder_id}. Fix: refit with `aurora-pipeline "
                         "fit-classifier` on this store.")
    done, skipped, counts = [], [], np.zeros(len(clf.class_names), dtype=np.int64)
    for site, hour in pairs:
        if (hour_attrs(zs, site, hour) or {}).get(LABEL_ATTR) == clf.classifier_id:
            skipped.append(f"{site}/{hour}")
            continue
        proba = clf.predict_proba(read_hour_variable(zs, site, hour, "embedding").astype(np.float32))
        ds = label_dataset(clf, proba)
        counts += np.bincount(ds["label"].values, minlength=len(counts))
        write_hour_variables(zs, site, hour, ds, LABEL_ATTR, clf.classifier_id)
        done.append(f"{site}/{hour}")
    return {"hours_labelled": len(done), "hours_skipped": len(skipped),
            "label_counts": dict(zip(clf.class_names, counts.tolist()))}
