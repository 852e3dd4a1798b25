"""Prefect flow `ingest-archive`: archive CDF files -> preprocessed frames in Zarr."""

from __future__ import annotations

import functools

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from aurora_pipeline.dask_cluster import dask_client
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.ingest.driver import IngestReport, ingest
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.ingest.setting import ingest_setting
from aurora_pipeline.source.archive import ArchiveFile, list_archive, sites_without_files
from aurora_pipeline.store.core import StoreLike, open_existing_store
from flows._retry import RETRY


@task(**{**RETRY, "retry_delay_seconds": [2, 10, 30]})
def list_files(archive: str, sites: list[str] | None, start: str | None, end: str | None) -> list[ArchiveFile]:
    return list_archive(archive, sites=sites, start=start, end=end)


@task(cache_policy=NO_CACHE)
def ingest_config(store: StoreLike | None, image_size, skymaps, min_elevation, map_altitude_km, checkpoint=None) -> PreprocessConfig:
    return ingest_setting(store, image_size=image_size, skymaps=skymaps, min_elevation=min_elevation,
                          map_altitude_km=map_altitude_km, checkpoint=checkpoint)


def ingest_files(files: list[ArchiveFile], store: StoreLike, cfg: PreprocessConfig, dask_address: str | None,
                 skymaps: str | None = None) -> dict:
    logger = get_run_logger()

    def log(outcome):
        if outcome.status == "failed":
            logger.warning("FAILED %s: %s Fix: %s", outcome.file.url, outcome.problem, outcome.fix)
        else:
            logger.info("ingested %s (%d frames, %.1f s)", outcome.file.name, outcome.frames, outcome.seconds)

    # a local cluster's workers: threads (the work releases the GIL); started only when a file is to be ingested
    cluster = functools.partial(dask_client, dask_address, threads=True)
    return ingest(files, store, cfg, cluster=cluster, on_outcome=log, skymaps=skymaps).summary()


def check_not_all_failed(summary: dict, archive: str, store: str) -> None:
    """Raise when files were tried and every one failed: the run must end Failed, not Completed."""
    if summary["files_failed"] and not summary["files_ingested"] and not summary["files_skipped"]:
        first = summary["failures"][0]
        raise BadInputError(archive, f"none of the {summary['files_failed']} file(s) could be ingested "
                            f"(first: {first})",
                            f"fix or drop the files listed in {store}'s failures table, then run the ingest again")


@flow(name="ingest-archive", log_prints=True)
def ingest_archive(
    archive: str,
    store: str,
    sites: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    image_size: int | None = None,
    dask_address: str | None = None,
    skymaps: str | None = None,
    min_elevation: float = PreprocessConfig.min_elevation,
    map_altitude_km: float = PreprocessConfig.map_altitude_km,
    checkpoint: str | None = None,
) -> dict:
    """Ingest the archive's files for ``sites`` and hours in [start, end) into ``store``.

    ``image_size`` None: the store's own setting (128 for a new store). ``skymaps``: cut the
    field of view by the skymaps' elevation and store el/az/lat/lon. Ends Failed when every
    file tried failed (each is a row of the store's failures table). ``checkpoint``: the
    encoder's preprocessing setting (e.g. the imported Aurora-FM's: OATH framing at 224 px)
    for a new store; an existing store of another setting is refused.
    """
    logger = get_run_logger()
    st = open_existing_store(store)  # opened once and handed down; None: a new store, which the ingest makes
    cfg = ingest_config(st, image_size, skymaps, min_elevation, map_altitude_km, checkpoint)  # refused before any listing
    files = list_files(archive, sites, start, end)
    missing = sites_without_files(sites, files)
    if missing:
        logger.warning("no archive files for site(s) %s in the asked hours", ", ".join(missing))
    if files:
        summary = ingest_files(files, st or store, cfg, dask_address, skymaps)
    else:
        logger.warning("nothing to ingest: the archive %s has no files for these sites and hours", archive)
        summary = IngestReport().summary()
    summary["sites_without_files"] = missing
    logger.info(
        "ingest: %d file(s) ingested, %d skipped (already stored), %d failed, %d frames",
        summary["files_ingested"], summary["files_skipped"], summary["files_failed"], summary["frames"],
    )
    check_not_all_failed(summary, archive, store)
    return summary
