"""Prefect flow `cluster-embeddings`: K-means over k, best silhouette, `cluster` written per frame."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from aurora_pipeline.cluster.model import ClusterConfig
from aurora_pipeline.cluster.driver import cluster_store


@task(cache_policy=NO_CACHE)
def fit_and_assign(store: str, out: str, sites, k_min: int, k_max: int, silhouette_sample: int, overwrite: bool) -> dict:
    cfg = ClusterConfig(k_min=k_min, k_max=k_max, silhouette_sample=silhouette_sample)
    return cluster_store(store, out, cfg, sites=sites, overwrite=overwrite)


@flow(name="cluster-embeddings", log_prints=True)
def cluster_embeddings_flow(store: str, out: str, sites: list[str] | None = None, k_min: int = ClusterConfig.k_min,
                       k_max: int = ClusterConfig.k_max, silhouette_sample: int = ClusterConfig.silhouette_sample,
                       overwrite: bool = True) -> dict:
    """Scan k in [k_min, k_max], keep the best mean silhouette, save centroids and plots in ``out``."""
    summary = fit_and_assign(store, out, sites, k_min, k_max, silhouette_sample, overwrite)
    get_run_logger().info("cluster: best k = %d", summary["best_k"])
    return summary
