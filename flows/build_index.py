"""Prefect flow `build-index`: the similarity index of the store's embeddings, built or updated.

One run at a time (Prefect global concurrency limit ``aurora-index``, one slot). The
library itself replaces the index's sidecar under the store's lock and only if no other
run replaced it meanwhile (``aurora_pipeline.search.saved``), so library callers outside
Prefect are safe too.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from aurora_pipeline.search.driver import index_store
from aurora_pipeline.search.config import IndexConfig
from flows._concurrency import ensure_limits

LIMIT = "aurora-index"


@task(cache_policy=NO_CACHE)
def index_hours(store, index, sites, start, end, rebuild, keep_training, model, checkpoint, config: dict) -> dict:
    return index_store(store, index=index, sites=sites, start=start, end=end, rebuild=rebuild,
                       keep_training=keep_training, model=model, checkpoint=checkpoint,
                       config=IndexConfig.from_dict(config))


@flow(name="build-index", log_prints=True)
def build_index_flow(store: str, index: str | None = None, sites: list[str] | None = None, start: str | None = None,
                     end: str | None = None, rebuild: bool = False, keep_training: bool = False,
                     model: str | None = None, checkpoint: str | None = None, config: dict | None = None) -> dict:
    """Build the index of ``store`` (or update it: new, late and re-embedded hours) beside it."""
    ensure_limits([LIMIT])
    with concurrency(LIMIT, occupy=1, strict=True):
        summary = index_hours(store, index, sites, start, end, rebuild, keep_training, model, checkpoint, config or {})
    get_run_logger().info("build-index: %s", summary)
    return summary
