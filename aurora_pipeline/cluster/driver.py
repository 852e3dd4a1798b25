"""K-means on the store's embeddings: scan k, save centroids, write ``cluster`` per hour.

``cluster_store`` fits K-means for every k in ``[k_min, k_max]`` on the embeddings of
the asked sites (a seeded random sample of at most ``max_fit_rows`` rows when there are
more), keeps the k of the best mean silhouette, saves the centroids (JSON + npz, no
pickle) so that new frames are assigned later without refitting (``assign_store``),
writes ``cluster`` (time) into every hour group, and draws the silhouette-versus-k
plot and one montage of random member frames per cluster (the paper's figs. 4 and 5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from aurora_pipeline.cluster.model import ClusterConfig, Centroids, assign_clusters, load_centroids, save_centroids, scan_k
from aurora_pipeline.classify.driver import embedded_hours, read_embeddings
from aurora_pipeline.plots import montage_png, silhouette_png
from aurora_pipeline.store.zarr_layout import hour_attrs, list_sites, read_hour_variable, write_hour_variables, zarr_store

CLUSTER_ATTR = "aurora_cluster_centroids_id"


def cluster_dataset(labels: np.ndarray, centroids: Centroids) -> xr.Dataset:
    return xr.Dataset({"cluster": ("time", labels.astype(np.int16), {
        "long_name": "K-means cluster of the frame's SimCLR embedding", "units": "1",
        "valid_range": [0, centroids.k - 1], "aurora_centroids_id": centroids.centroids_id,
        "aurora_encoder_id": centroids.encoder_id})})


def assign_store(store, centroids: Centroids, *, sites=None, start=None, end=None, storage_options=None,
                 only: set[str] | None = None) -> dict:
    """Write ``cluster`` for every embedded hour not yet assigned with these centroids."""
    zs = zarr_store(store, storage_options)
    sites = [s.lower() for s in (sites or list_sites(zs))]
    pairs, encoder_id = embedded_hours(zs, sites, start, end, only)
    if encoder_id != centroids.encoder_id:
        from aurora_pipeline.errors import StoreError

        raise StoreError(f"centroids {centroids.centroids_id} come from encoder {centroids.encoder_id}, the store's "
                         f"embeddings from {encoder_id}. Fix: rerun `aurora-pipeline cluster` on this store.")
    written = 0
    for site, hour in pairs:
        if (hour_attrs(zs, site, hour) or {}).get(CLUSTER_ATTR) == centroids.centroids_id:
            continue
        x = read_hour_variable(zs, site, hour, "embedding").astype(np.float32)
        write_hour_variables(zs, site, hour, cluster_dataset(assign_clusters(x, centroids.centroids), centroids),
                             CLUSTER_ATTR, centroids.centroids_id)
        written += 1
    return {"hours_assigned": written, "hours": len(pairs)}


def cluster_store(
    store,
    out_dir: str | Path,
    cfg: ClusterConfig = ClusterConfig(),
    *,
    sites=None,
    max_fit_rows: int = 200_000,
    overwrite: bool = False,
    storage_options: dict | None = None,
) -> dict:
    """Scan k, save centroids and plots in ``out_dir``, and write ``cluster`` for the sites' hours."""
    zs = zarr_store(store, storage_options)
    sites = [s.lower() for s in (sites or list_sites(zs))]
    pairs, encoder_id = embedded_hours(zs, sites)
    per_site = read_embeddings(zs, pairs)
    rows = [(site, i) for site, (t, _, _) in per_site.items() for i in range(len(t))]
    X = np.concatenate([x for _, x, _ in per_site.values()])
    rng = np.random.default_rng(cfg.seed)
    fit_index = np.sort(rng.choice(len(X), max_fit_rows, replace=False)) if len(X) > max_fit_rows else np.arange(len(X))
    scan = scan_k(X[fit_index], cfg)
    out_dir = Path(out_dir)
    save_centroids(scan, out_dir, encoder_id, overwrite=overwrite)
    centroids = load_centroids(out_dir, expected_encoder_id=encoder_id)
    assigned = assign_store(store, centroids, sites=sites, storage_options=storage_options)
    silhouette_png(scan.ks, scan.silhouettes, scan.best_k, out_dir / "silhouette_vs_k.png",
                   title=f"K-means on SimCLR embeddings ({scan.sample_size} frames scored)")
    labels = assign_clusters(X, centroids.centroids)
    montage = {}
    for k in range(centroids.k):
        members = np.flatnonzero(labels == k)
        pick = rng.choice(members, min(8, len(members)), replace=False) if len(members) else []
        montage[f"cluster {k} ({len(members)})"] = np.stack([_frame(zs, per_site, rows[i]) for i in pick]) if len(pick) else np.zeros((0, 8, 8))
    montage_png({k: v for k, v in montage.items() if len(v)}, out_dir / "cluster_montage.png",
                title=f"random frames of each of the {centroids.k} clusters")
    return {"best_k": scan.best_k, "silhouettes": dict(zip(scan.ks.tolist(), np.round(scan.silhouettes, 4).tolist())),
            "centroids": str(out_dir), "centroids_id": centroids.centroids_id, "frames": int(len(X)), **assigned}


def _frame(zs, per_site, row: tuple[str, int]) -> np.ndarray:
    site, i = row
    for hour, first, stop in per_site[site][2]:
        if first <= i < stop:
            import zarr

            from aurora_pipeline.store.zarr_layout import hour_group

            return zarr.open_array(zs, path=f"{hour_group(site, hour)}/frames", mode="r")[i - first]
    raise IndexError(row)
