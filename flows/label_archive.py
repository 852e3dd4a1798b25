"""Prefect flow `label-archive`: the nightly run that labels the archive's new and unfinished hours.

Finds the files not yet in the store (new and late-arriving hours) and ingests them;
then, from the store's per-hour facts, embeds, classifies and assigns clusters for
every hour of the window that the deployment's encoder, classifier or centroids have
not done yet (hours ingested by hand or written by an older model included); records a
run summary as a Prefect artifact and in the store's `runs` table. Writers of a site
take the store's per-site lock (see aurora_pipeline.store.locks); each touched site is
also held under a Prefect global concurrency limit (`aurora-site-<site>`, one slot) so
two nightly runs never interleave their stages on one site.
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
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.ingest.driver import ingest
from aurora_pipeline.classify.driver import classify_store
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.source.archive import sites_without_files
from aurora_pipeline.nightly import (checkpoint_model_id, find_new_files, record_night_events, record_run,
                                     unfinished_hours, window)
from aurora_pipeline.summary import run_summary_markdown
from flows._concurrency import ensure_limits
from flows._retry import RETRY



@task(**RETRY)
def find_new(archive, store, sites, lookback_days, reconcile):
    return find_new_files(archive, store, sites=sites, lookback_days=lookback_days, reconcile=reconcile)


@task(**RETRY)
def ingest_new(files, store, image_size, dask_address):
    cfg = PreprocessConfig(image_size=image_size) if image_size is not None else None  # None: the store's own setting
    with dask_client(dask_address) as client:
        return ingest(files, store, cfg, client=client, skip_stored=False)


@task(**RETRY)
def unfinished(store, sites, start, end, model_id, classifier_id, centroids_id):
    return unfinished_hours(store, sites, start, end, model_id, classifier_id, centroids_id)


@task(**RETRY)
def embed_window(store, checkpoint, sites, start, end, device, dask_address):
    return embed_with_checkpoint(store, checkpoint, sites=sites, start=start, end=end, device=device,
                                 dask_address=dask_address, overwrite=True)


@task(**RETRY)
def classify_window(store, classifier, sites, start, end):
    return classify_store(store, load_classifier(classifier), sites=sites, start=start, end=end)


@task(**RETRY)
def assign_window(store, centroids, sites, start, end):
    return assign_store(store, load_centroids(centroids), sites=sites, start=start, end=end)


@task(name="record_events", **RETRY)
def catalogue_events(store, labelled):
    return record_night_events(store, labelled)


@task(**RETRY)
def index_new(store):
    from aurora_pipeline.errors import StoreError
    from aurora_pipeline.search.driver import update_index  # lazy: FAISS loads only here

    try:
        return update_index(store, missing_ok=True)  # no index yet: a summary saying so
    except StoreError as err:  # e.g. the window re-embedded by a new model: the index needs a rebuild
        get_run_logger().warning("similarity index not updated: %s", err)
        return {"error": str(err)}


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
    image_size: int | None = None,
    dask_address: str | None = None,
    device: str = "auto",
) -> dict:
    """Label the archive's new files and finish every stage of the hours in the window."""
    logger = get_run_logger()
    timings, started = {}, time.perf_counter()
    todo, stored = find_new(archive, store, sites, lookback_days, reconcile)
    timings["find_seconds"] = round(time.perf_counter() - started, 3)
    start, end = window(lookback_days, reconcile)
    start, end = (None if start is None else str(start)), (None if end is None else str(end))
    missing = sites_without_files(sites, todo + stored)
    if missing:  # a misspelt or silent site must not read as "nothing new"
        logger.warning("no archive files in the window for asked site(s): %s", ", ".join(missing))
    summary = {"archive": archive, "store": store, "files_new": len(todo), "files_already_stored": len(stored),
               "window_start": start, "window_end": end, "sites_without_files": missing}
    clf, cen = load_classifier(classifier), (load_centroids(centroids) if centroids else None)
    model_id = checkpoint_model_id(checkpoint)
    left = unfinished(store, sites, start, end, model_id, clf.classifier_id, cen.centroids_id if cen else None) if stored else {}
    if not todo and not any(left.values()):
        logger.info("nothing new: all %d archive file(s) in the window are in the store and every stage is done",
                    len(stored))
        timings["total_seconds"] = round(time.perf_counter() - started, 3)
        summary.update(files_ingested=0, frames=0, failures=[], label_counts={}, **timings)
        record(store, summary)
        return summary
    touched_sites = sorted({f.site for f in todo} | set(left.get("sites", [])))
    ensure_limits([f"aurora-site-{s}" for s in touched_sites] + ["aurora-index"])
    report = None
    with concurrency([f"aurora-site-{s}" for s in touched_sites], occupy=1, strict=True):
        if todo:
            t = time.perf_counter()
            report = ingest_new(todo, store, image_size, dask_address)
            timings["ingest_seconds"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        embedded = embed_window(store, checkpoint, touched_sites, start, end, device, dask_address)
        timings["embed_seconds"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        labels = classify_window(store, classifier, touched_sites, start, end)
        timings["classify_seconds"] = round(time.perf_counter() - t, 3)
        if centroids:
            t = time.perf_counter()
            assign_window(store, centroids, touched_sites, start, end)
            timings["cluster_seconds"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        events = catalogue_events(store, labels.get("labelled", {}))
        timings["events_seconds"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        with concurrency("aurora-index", occupy=1, strict=True):  # the limit build-index holds
            summary["index"] = index_new(store)
        timings["index_seconds"] = round(time.perf_counter() - t, 3)
    timings["total_seconds"] = round(time.perf_counter() - started, 3)
    summary.update(
        files_ingested=len(report.ingested) if report else 0, frames=report.frames if report else 0,
        hours=sorted(f"{o.file.site}/{o.file.hour_start}" for o in report.ingested) if report else [],
        hours_embedded=embedded.get("hours_embedded", 0), hours_labelled=labels.get("hours_labelled", 0),
        failures=[f"{o.file.url}: {o.problem}" for o in report.failed] if report else [],
        label_counts=labels.get("label_counts", {}), events=events, **timings,
    )
    record(store, summary)
    logger.info("label-archive: %d file(s) ingested, %d frames, %d hour(s) embedded, %d labelled, %d failure(s)",
                summary["files_ingested"], summary["frames"], summary["hours_embedded"], summary["hours_labelled"],
                len(summary["failures"]))
    if todo and report is not None and not report.ingested:
        raise BadInputError(archive, f"none of the {len(todo)} new file(s) could be ingested (first: "
                            f"{summary['failures'][0] if summary['failures'] else 'unknown'})",
                            f"fix or drop the files listed in {store}'s failures table; the next run retries them")
    return summary
