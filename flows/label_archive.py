"""Prefect flow `label-archive`: the nightly run that labels the archive's new files.

Finds the files not yet in the store (new and late-arriving hours), then ingests,
embeds, classifies and assigns clusters for exactly those hours, and records a run
summary as a Prefect artifact and in the store. Each site is held under a Prefect
global concurrency limit (`aurora-site-<site>`, one slot) so two runs never write
the same site at once.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from aurora_pipeline.classify.model import load_classifier
from aurora_pipeline.cluster.model import load_centroids
from aurora_pipeline.cluster.driver import assign_store
from aurora_pipeline.dask_cluster import dask_client
from aurora_pipeline.embed.driver import embed_with_checkpoint
from aurora_pipeline.ingest.driver import ingest
from aurora_pipeline.classify.driver import classify_store
from aurora_pipeline.nightly import find_new_files, hour_names, record_run
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.summary import run_summary_markdown
from flows._concurrency import ensure_limits
from flows._retry import RETRY



@task(**RETRY)
def find_new(archive, store, sites, lookback_days, reconcile):
    return find_new_files(archive, store, sites=sites, lookback_days=lookback_days, reconcile=reconcile)


@task(**RETRY)
def ingest_new(files, store, image_size, dask_address):
    with dask_client(dask_address) as client:
        return ingest(files, store, PreprocessConfig(image_size=image_size), client=client, skip_stored=False)


@task(**RETRY)
def embed_new(store, checkpoint, only, device, dask_address):
    return embed_with_checkpoint(store, checkpoint, only=only, device=device, dask_address=dask_address)


@task(**RETRY)
def classify_new(store, classifier, only):
    return classify_store(store, load_classifier(classifier), only=only)


@task(**RETRY)
def assign_new(store, centroids, only):
    return assign_store(store, load_centroids(centroids), only=only)


@task(cache_policy=NO_CACHE)
def record(store, summary):
    record_run(store, summary)
    create_markdown_artifact(run_summary_markdown(summary), key="label-archive-summary",
                             description="files, frames, failures, label counts and timings of this run")


@flow(name="label-archive", log_prints=True)
def label_archive(
    archive: str,
    store: str,
    checkpoint: str,
    classifier: str,
    centroids: str | None = None,
    sites: list[str] | None = None,
    lookback_days: int = 30,
    reconcile: bool = False,
    image_size: int = 128,
    dask_address: str | None = None,
    device: str = "auto",
) -> dict:
    """Label the archive's files that are not yet in ``store``."""
    logger = get_run_logger()
    timings, started = {}, time.perf_counter()
    todo, stored = find_new(archive, store, sites, lookback_days, reconcile)
    timings["find_seconds"] = round(time.perf_counter() - started, 3)
    summary = {"archive": archive, "store": store, "files_new": len(todo), "files_already_stored": len(stored)}
    if not todo:
        logger.info("nothing new: all %d archive file(s) in the window are already in the store", len(stored))
        summary.update(files_ingested=0, frames=0, failures=[], label_counts={}, **timings)
        record(store, summary)
        return summary
    touched_sites = sorted({f.site for f in todo})
    ensure_limits([f"aurora-site-{s}" for s in touched_sites])
    with concurrency([f"aurora-site-{s}" for s in touched_sites], occupy=1, strict=True):
        t = time.perf_counter()
        report = ingest_new(todo, store, image_size, dask_address)
        timings["ingest_seconds"] = round(time.perf_counter() - t, 3)
        only = hour_names([o.file for o in report.ingested])
        labels = {}
        if only:
            t = time.perf_counter()
            embed_new(store, checkpoint, only, device, dask_address)
            timings["embed_seconds"] = round(time.perf_counter() - t, 3)
            t = time.perf_counter()
            labels = classify_new(store, classifier, only)
            timings["classify_seconds"] = round(time.perf_counter() - t, 3)
            if centroids:
                t = time.perf_counter()
                assign_new(store, centroids, only)
                timings["cluster_seconds"] = round(time.perf_counter() - t, 3)
    timings["total_seconds"] = round(time.perf_counter() - started, 3)
    summary.update(
        files_ingested=len(report.ingested), frames=report.frames, hours=sorted(only),
        failures=[f"{o.file.url}: {o.problem}" for o in report.failed],
        label_counts=labels.get("label_counts", {}), **timings,
    )
    record(store, summary)
    logger.info("label-archive: %d file(s) ingested, %d frames, %d failure(s)", summary["files_ingested"],
                summary["frames"], len(summary["failures"]))
    return summary
