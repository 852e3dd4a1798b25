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

from aurora_pipeline.cluster.model import ClusterConfig, Centroids, assign_clusters, load_centroids, save_centroids, scan_k
from aurora_pipeline.plots import montage_png, silhouette_png
from aurora_pipeline.embed.stored import embedded_hours, pending_hours, read_embeddings, read_hour_embedding
from aurora_pipeline.store.core import Store, StoreLike, open_store
from aurora_pipeline.store.read import read_hour
from aurora_pipeline.store.stages import run_small_stage
from aurora_pipeline.store.writer import ensure_cluster

FACT = "centroids"


def assign_store(store: StoreLike, centroids: Centroids, *, sites=None, start=None, end=None, storage_options=None,
                 only: set | None = None) -> dict:
    """Write ``cluster`` for every hour embedded by the centroids' encoder and not yet assigned with them."""
    st = open_store(store, storage_options, mode="a")
    todo, done = pending_hours(st, sites, start, end, only, encoder_id=centroids.encoder_id, fact=FACT,
                               value=centroids.centroids_id,
                               made_by=f"centroids {centroids.centroids_id} come from encoder {centroids.encoder_id}",
                               fix="rerun `aurora-pipeline cluster` on this store")
    for site, year in sorted({(r.site, r.year) for r in todo}):
        ensure_cluster(st, site, year, centroids.k)
    run_small_stage(st, todo, FACT, centroids.centroids_id, read=lambda ref: read_hour_embedding(st, ref),
                    compute=lambda ref, x: {"cluster": assign_clusters(x, centroids.centroids).astype(np.int16)})
    return {"hours_assigned": len(todo), "hours": len(todo) + len(done)}


def cluster_store(
    store: StoreLike,
    out_dir: str | Path,
    cfg: ClusterConfig = ClusterConfig(),
    *,
    sites=None,
    max_fit_rows: int = 200_000,
    overwrite: bool = False,
    storage_options: dict | None = None,
) -> dict:
    """Scan k, save centroids and plots in ``out_dir``, and write ``cluster`` for the sites' hours."""
    st = open_store(store, storage_options, mode="a")
    sites = [s.lower() for s in (sites or st.sites())]
    pairs, encoder_id = embedded_hours(st, sites)
    per_site = read_embeddings(st, pairs)
    rows = [(site, i) for site, (t, _, _) in per_site.items() for i in range(len(t))]
    X = np.concatenate([x for _, x, _ in per_site.values()])
    rng = np.random.default_rng(cfg.seed)
    fit_index = np.sort(rng.choice(len(X), max_fit_rows, replace=False)) if len(X) > max_fit_rows else np.arange(len(X))
    scan = scan_k(X[fit_index], cfg)
    out_dir = Path(out_dir)
    save_centroids(scan, out_dir, encoder_id, overwrite=overwrite)
    centroids = load_centroids(out_dir, expected_encoder_id=encoder_id)
    assigned = assign_store(st, centroids, sites=sites)
    silhouette_png(scan.ks, scan.silhouettes, scan.best_k, out_dir / "silhouette_vs_k.png",
                   title=f"K-means on SimCLR embeddings ({scan.sample_size} frames scored)")
    labels = assign_clusters(X, centroids.centroids)
    montage, sizes = {}, {}
    for k in range(centroids.k):
        members = np.flatnonzero(labels == k)
        pick = rng.choice(members, min(8, len(members)), replace=False) if len(members) else []
        montage[f"cluster {k}"] = np.stack([_frame(st, per_site, rows[i]) for i in pick]) if len(pick) else np.zeros((0, 8, 8))
        sizes[f"cluster {k}"] = len(members)
    montage_png({k: v for k, v in montage.items() if len(v)}, out_dir / "cluster_montage.png", group_sizes=sizes,
                title=f"up to 8 random frames of each of the {centroids.k} K-means clusters (row: the cluster, "
                      "its number of frames)")
    return {"best_k": scan.best_k, "silhouettes": dict(zip(scan.ks.tolist(), np.round(scan.silhouettes, 4).tolist())),
            "centroids": str(out_dir), "centroids_id": centroids.centroids_id, "frames": int(len(X)), **assigned}


def _frame(st: Store, per_site, row: tuple[str, int]) -> np.ndarray:
    site, i = row
    for name, first, stop in per_site[site][2]:
        if first <= i < stop:
            hour = np.datetime64(name.split("/", 1)[1], "h")
            return read_hour(st, site, hour, ("frames",))["frames"][i - first]
    raise IndexError(row)
