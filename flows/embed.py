"""Prefect flow `embed-frames`: write the encoder's embedding of every stored frame beside it."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from aurora_pipeline.embed.config import EmbedConfig
from aurora_pipeline.embed.driver import embed_with_checkpoint


@task(cache_policy=NO_CACHE)
def embed_hours(store, checkpoint, sites, start, end, device, overwrite, dtype, dask_address) -> dict:
    logger = get_run_logger()
    return embed_with_checkpoint(
        store, checkpoint, sites=sites, start=start, end=end, device=device, overwrite=overwrite, dtype=dtype,
        dask_address=dask_address, on_hour=lambda site, hour, n: logger.info("embedded %s (%d frames)", hour, n),
    )


@flow(name="embed-frames", log_prints=True)
def embed_frames_flow(
    store: str,
    checkpoint: str,
    sites: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    device: str = EmbedConfig.device,
    overwrite: bool = False,
    dtype: str = EmbedConfig.dtype,
    dask_address: str | None = None,
) -> dict:
    """Embed the stored frames of ``sites`` in [start, end) with the encoder in ``checkpoint``."""
    summary = embed_hours(store, checkpoint, sites, start, end, device, overwrite, dtype, dask_address)
    get_run_logger().info("embed: %s", summary)
    return summary
