"""Prefect flow `ingest-archive`: archive CDF files -> preprocessed frames in Zarr."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from aurora_pipeline.source.archive import ArchiveFile, list_archive
from aurora_pipeline.dask_cluster import dask_client
from aurora_pipeline.ingest.driver import ingest
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from flows._retry import RETRY


@task(**{**RETRY, "retry_delay_seconds": [2, 10, 30]})
def list_files(archive: str, sites: list[str] | None, start: str | None, end: str | None) -> list[ArchiveFile]:
    return list_archive(archive, sites=sites, start=start, end=end)


@task(cache_policy=NO_CACHE)
def ingest_files(files: list[ArchiveFile], store: str, image_size: int, dask_address: str | None) -> dict:
    logger = get_run_logger()

    def log(outcome):
        if outcome.status == "failed":
            logger.warning("FAILED %s: %s Fix: %s", outcome.file.url, outcome.problem, outcome.fix)
        else:
            logger.info("ingested %s (%d frames, %.1f s)", outcome.file.name, outcome.frames, outcome.seconds)

    with dask_client(dask_address) as client:
        report = ingest(files, store, PreprocessConfig(image_size=image_size), client=client, on_outcome=log)
    return report.summary()


@flow(name="ingest-archive", log_prints=True)
def ingest_archive(
    archive: str,
    store: str,
    sites: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    image_size: int = 128,
    dask_address: str | None = None,
) -> dict:
    """Ingest the archive's files for ``sites`` and hours in [start, end) into ``store``."""
    files = list_files(archive, sites, start, end)
    summary = ingest_files(files, store, image_size, dask_address)
    get_run_logger().info(
        "ingest: %d file(s) ingested, %d skipped (already stored), %d failed, %d frames",
        summary["files_ingested"], summary["files_skipped"], summary["files_failed"], summary["frames"],
    )
    return summary
