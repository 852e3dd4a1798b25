"""Prefect flows `fit-classifier` and `classify-frames`: the linear classifier and the labels it writes."""

from __future__ import annotations

import dataclasses

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from aurora_pipeline.classify.model import ClassifierConfig, load_classifier
from aurora_pipeline.classify.driver import classify_store, fit_from_store


@task(cache_policy=NO_CACHE)
def fit(store: str, labels: str, out: str, holdout_hours_fraction: float, C: float, overwrite: bool) -> dict:
    report = fit_from_store(store, labels, out, ClassifierConfig(C=C), holdout_hours_fraction=holdout_hours_fraction,
                            overwrite=overwrite)
    return dataclasses.asdict(report)


@task(cache_policy=NO_CACHE)
def label(store: str, classifier: str, sites, start, end) -> dict:
    return classify_store(store, load_classifier(classifier), sites=sites, start=start, end=end)


@flow(name="fit-classifier", log_prints=True)
def fit_classifier_flow(store: str, labels: str, out: str, holdout_hours_fraction: float = 0.0, C: float = 1.0,
                        overwrite: bool = False) -> dict:
    """Fit the l2 logistic regression on the embeddings of the frames named in ``labels``."""
    report = fit(store, labels, out, holdout_hours_fraction, C, overwrite)
    cv = report["cross_validation"]
    get_run_logger().info("cross-validated accuracy %.3f +/- %.3f on %d frames", cv["accuracy"], cv["accuracy_std"],
                          cv["n_samples"])
    return report


@flow(name="classify-frames", log_prints=True)
def classify_frames(store: str, classifier: str, sites: list[str] | None = None, start: str | None = None,
                    end: str | None = None) -> dict:
    """Write ``label`` and ``label_probability`` for every embedded frame of ``sites`` in [start, end)."""
    summary = label(store, classifier, sites, start, end)
    get_run_logger().info("classify: %s", summary)
    return summary
