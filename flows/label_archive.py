"""Prefect flow `label-archive`: the nightly run that labels the archive's new and unfinished hours.

The night itself is the library's ``aurora_pipeline.nightly.run_night`` (the window, the
sites, the "nothing new" exit, the summary and the failure verdict live there). This flow
only hands it its stages as Prefect tasks (so each shows, retries transient errors and
is timed in the UI), records the summary as a Prefect artifact, and holds each touched
site under a Prefect global concurrency limit (`aurora-site-<site>`, one slot) so two
nightly runs never interleave their stages on one site; the index update holds
`aurora-index`, the limit `build-index` holds. Writers of a site also take the store's
per-site lock (see aurora_pipeline.store.locks). The night opens the store once and its tasks
take the opened ``Store`` (their cache policy is NO_CACHE: Prefect neither hashes nor stores it).
"""

from __future__ import annotations

import contextlib

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from aurora_pipeline import nightly
from aurora_pipeline.nightly import NightlyConfig, NightSteps, run_night
from aurora_pipeline.store.core import StoreLike
from aurora_pipeline.summary import run_summary_markdown
from flows._concurrency import ensure_limits
from flows._retry import RETRY

INDEX_LIMIT = "aurora-index"


def _site_limit(site: str) -> str:
    return f"aurora-site-{site}"


@task(cache_policy=NO_CACHE)
def record(store: StoreLike, summary: dict) -> int:
    create_markdown_artifact(run_summary_markdown(summary), key="label-archive-summary",
                             description="files, frames, failures, label counts and timings of this run")
    return nightly.record_run(store, summary)


@task(**RETRY)
def index_new(store: StoreLike) -> dict:
    with concurrency(INDEX_LIMIT, occupy=1, strict=True):  # the limit build-index holds
        return nightly.update_night_index(store)


@contextlib.contextmanager
def hold_sites(sites: list[str]):
    ensure_limits([_site_limit(s) for s in sites] + [INDEX_LIMIT])
    with concurrency([_site_limit(s) for s in sites], occupy=1, strict=True):
        yield


STEPS = NightSteps(
    find=task(name="find_new", **RETRY)(nightly.find_new_files),
    unfinished=task(name="unfinished", **RETRY)(nightly.unfinished_hours),
    ingest=task(name="ingest_new", **RETRY)(nightly.ingest_night),
    embed=task(name="embed_window", **RETRY)(nightly.embed_night),
    classify=task(name="classify_window", **RETRY)(nightly.classify_night),
    assign=task(name="assign_window", **RETRY)(nightly.assign_night),
    events=task(name="record_events", **RETRY)(nightly.record_night_events),
    index=index_new,
    record=record,
    hold_sites=hold_sites,
)


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
    skymaps: str | None = None,
    min_elevation: float | None = None,
    map_altitude_km: float | None = None,
    device: str = "auto",
    embed_batch_size: int = 512,
    dask_address: str | None = None,
) -> dict:
    """Label the archive's new files and finish every stage of the hours in the window.

    The parameters are ``aurora_pipeline.nightly.NightlyConfig``'s fields (``None`` for a
    preprocessing value or ``skymaps``: the store's own).
    """
    config = NightlyConfig(checkpoint=checkpoint, classifier=classifier, centroids=centroids,
                           sites=tuple(sites) if sites is not None else None, lookback_days=lookback_days,
                           reconcile=reconcile, image_size=image_size, skymaps=skymaps, min_elevation=min_elevation,
                           map_altitude_km=map_altitude_km, device=device, embed_batch_size=embed_batch_size,
                           dask_address=dask_address)
    return run_night(archive, store, config, steps=STEPS, logger=get_run_logger())
