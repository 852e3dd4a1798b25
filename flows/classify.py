"""Prefect flows `fit-classifier`, `fit-classifier-oath` and `classify-frames`: the linear classifier
(fitted on a store's labelled frames, or on OATH with a given encoder) and the labels it writes."""

from __future__ import annotations

import dataclasses

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from aurora_pipeline.classify.model import ClassifierConfig, load_classifier
from aurora_pipeline.classify.driver import classify_store, fit_from_store
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.oath.archive_classifier import fit_oath_classifier
from aurora_pipeline.oath.protocol import parse_splits


@task(cache_policy=NO_CACHE)
def fit(store: str, labels: str, out: str, holdout_hours_fraction: float, cfg: ClassifierConfig,
        overwrite: bool) -> dict:
    report = fit_from_store(store, labels, out, cfg, holdout_hours_fraction=holdout_hours_fraction,
                            overwrite=overwrite)
    return dataclasses.asdict(report)


@task(cache_policy=NO_CACHE)
def fit_on_oath(oath_dir: str, checkpoint: str, out: str, cfg: ClassifierConfig, splits, max_images_per_class,
                device: str, overwrite: bool) -> dict:
    return fit_oath_classifier(oath_dir, checkpoint, out, cfg, splits=splits, max_images_per_class=max_images_per_class,
                               device=device, overwrite=overwrite, progress=get_run_logger().info)


@task(cache_policy=NO_CACHE)
def label(store: str, classifier: str, sites, start, end) -> dict:
    return classify_store(store, load_classifier(classifier), sites=sites, start=start, end=end)


@flow(name="fit-classifier", log_prints=True)
def fit_classifier_flow(store: str, labels: str, out: str, holdout_hours_fraction: float = 0.0,
                        C: float = ClassifierConfig.C, overwrite: bool = False,
                        cv_folds: int = ClassifierConfig.cv_folds) -> dict:
    """Fit the l2 logistic regression on the embeddings of the frames named in ``labels``."""
    if not 0.0 <= holdout_hours_fraction < 1.0:
        raise BadInputError("holdout_hours_fraction", f"must be in [0, 1), got {holdout_hours_fraction!r}",
                            "use 0.25 to hold out the last quarter of each site's hours, or 0")
    cfg = ClassifierConfig(C=C, cv_folds=cv_folds)  # bad settings are refused before any reading
    report = fit(store, labels, out, holdout_hours_fraction, cfg, overwrite)
    cv, logger = report["cross_validation"], get_run_logger()
    if cv["accuracy"] is not None:
        hours = ("the fitted hours (the held-out hours left out)" if holdout_hours_fraction > 0
                 else "all labelled hours")
        logger.info("%s cross-validated accuracy on %s: %.3f +/- %.3f on %d frames (%d folds)",
                    cv["scheme"].replace("_", "-"), hours, cv["accuracy"], cv["accuracy_std"], cv["n_samples"],
                    cv["folds"])
    if cv["note"]:
        logger.warning("cross-validation: %s", cv["note"])
    return report


@flow(name="fit-classifier-oath", log_prints=True)
def fit_oath_classifier_flow(oath_dir: str, checkpoint: str, out: str, C: float = 1.0, splits: str = "0,1,2,3,4",
                             max_images_per_class: int | None = None, device: str = "auto",
                             overwrite: bool = False) -> dict:
    """Embed OATH's images with ``checkpoint``'s encoder (in its preprocessing setting), score the l2 logistic
    regression on the reference splits, fit it on every image and save it under ``out`` for ``classify``."""
    cfg = ClassifierConfig(C=C)  # bad settings are refused before any reading
    report = fit_on_oath(oath_dir, checkpoint, out, cfg, parse_splits(splits), max_images_per_class, device, overwrite)
    s = report["splits"]
    get_run_logger().info("OATH reference splits: accuracy %.3f +/- %.3f (%d splits, %d images)", s["accuracy"],
                          s["accuracy_std"], len(s["fold_accuracies"]), report["n_images"])
    return report


@flow(name="classify-frames", log_prints=True)
def classify_frames(store: str, classifier: str, sites: list[str] | None = None, start: str | None = None,
                    end: str | None = None) -> dict:
    """Write ``label`` and ``label_probability`` for every embedded frame of ``sites`` in [start, end)."""
    summary = label(store, classifier, sites, start, end)
    logger = get_run_logger()
    logger.info("classify: %s", summary)
    for why, n in summary["hours_left_why"].items():
        logger.warning("classify: %d hour(s) left unlabelled: %s (e.g. %s)", n, why, summary["hours_left_examples"][why])
    return summary
