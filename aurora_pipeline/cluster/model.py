"""K-means clustering of embeddings and the silhouette scan over k (paper section III.E).

The paper runs K-means on the SimCLR representations for k = 3..15 and compares the
mean silhouette score of each k (best: 0.212 at k = 12), and the silhouette of the
ground-truth labels used as clusters (0.011). ``scan_k`` does the same:

* K-means is fitted on **all** rows for every k (``n_init`` restarts, ``seed``). Beyond
  ``minibatch_rows`` rows (default 200,000) it uses scikit-learn's MiniBatchKMeans
  instead, which needs memory and time proportional to the batch, not to n.
* The silhouette needs all pairwise distances (O(n^2)), so when X has more than
  ``silhouette_sample`` rows it is computed on a random sample of that many rows,
  drawn once (``silhouette_sample_index``: numpy default_rng(seed), without
  replacement, sorted) and reused for every k and for ``silhouette_of_labels``, so the
  scores are comparable. Distances are Euclidean.
* The best k is the one with the highest mean silhouette (the first one on ties).

Centroids are saved like the classifier (``centroids.json`` + ``centroids.npz``, no
pickle, content-hash ``centroids_id``, refused when made from another encoder).

Example:
    >>> scan = scan_k(X, ClusterConfig())
    >>> scan.best_k, scan.silhouettes.max()
    >>> save_centroids(scan, "out/clusters", encoder_id="simclr-3f2a...")
    >>> cl = load_centroids("out/clusters", expected_encoder_id="simclr-3f2a...")
    >>> cluster = assign_clusters(X_new, cl.centroids)     # (m,) int16 in [0, k)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from aurora_pipeline.artifact import SavedModel, read_artifact
from aurora_pipeline.classify.model import check_features
from aurora_pipeline.cluster.config import ClusterConfig  # the settings live there (light); re-exported
from aurora_pipeline.errors import BadInputError, CheckpointError

CENTROIDS_FORMAT = "aurora-pipeline-centroids"


@dataclass(frozen=True, eq=False)
class ClusterScan:
    """Result of scan_k.

    Attributes:
        ks: (m,) int64, the k tried. silhouettes: (m,) float64 mean silhouette per k
            (on the sample). inertias: (m,) float64 K-means inertia per k (all rows).
        best_k: k of the highest silhouette. centroids: (best_k, d) float64 of that fit.
        sample_size: rows the silhouettes were computed on. n_rows: rows K-means saw.
    """

    ks: np.ndarray
    silhouettes: np.ndarray
    inertias: np.ndarray
    best_k: int
    centroids: np.ndarray
    sample_size: int
    n_rows: int
    config: ClusterConfig


@dataclass(frozen=True, eq=False)
class Centroids(SavedModel):
    """Centroids as loaded by load_centroids; ``centroids_id`` is their content hash."""

    centroids: np.ndarray    # (k, d) float64
    encoder_id: str
    config: ClusterConfig
    centroids_id: str = field(init=False)
    ID_PREFIX, ID_FIELD, STEM, FORMAT = "kmeans", "centroids_id", "centroids", CENTROIDS_FORMAT

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids}

    def _hashed_meta(self) -> dict:
        return {"encoder_id": self.encoder_id, "config": dataclasses.asdict(self.config)}


def silhouette_sample_index(n: int, cfg: ClusterConfig) -> np.ndarray:
    """Rows used for silhouettes: all of them, or ``cfg.silhouette_sample`` drawn without
    replacement with numpy default_rng(cfg.seed), sorted. (n_sample,) int64."""
    if n <= cfg.silhouette_sample:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(cfg.seed)
    return np.sort(rng.choice(n, size=cfg.silhouette_sample, replace=False)).astype(np.int64)


def scan_k(X: np.ndarray, cfg: ClusterConfig = ClusterConfig()) -> ClusterScan:
    """K-means for every k in [k_min, k_max] and the mean silhouette of each.

    Args:
        X: (n, d) embeddings, n > k_max.
    Raises:
        BadInputError: X not a finite 2-d array, or k_max >= n.
    """
    X = check_features(X, "X")
    n = len(X)
    if cfg.k_max >= n:
        raise BadInputError("X", f"has {n} rows, too few for k_max={cfg.k_max} (needs more than k_max rows)",
                            "lower k_max or cluster more frames")
    sample = silhouette_sample_index(n, cfg)
    ks = np.arange(cfg.k_min, cfg.k_max + 1, dtype=np.int64)
    silhouettes, inertias = [], []
    best_sil, best_k, best_centroids = -np.inf, None, None
    for k in ks:
        model = _kmeans(int(k), n, cfg).fit(X)
        # NaN when K-means found fewer than 2 distinct clusters among the sampled rows (duplicate rows)
        silhouettes.append(_sampled_silhouette(X, model.labels_, sample))
        inertias.append(float(model.inertia_))
        if silhouettes[-1] > best_sil:
            best_sil, best_k, best_centroids = silhouettes[-1], int(k), model.cluster_centers_.astype(np.float64)
    if best_k is None:
        raise BadInputError("X", f"K-means found fewer than 2 distinct clusters for every k in {cfg.k_min}..{cfg.k_max}",
                            "check that the embeddings are not all identical")
    return ClusterScan(ks=ks, silhouettes=np.asarray(silhouettes), inertias=np.asarray(inertias),
                       best_k=best_k, centroids=best_centroids, sample_size=len(sample), n_rows=n, config=cfg)


def silhouette_of_labels(X: np.ndarray, labels: Sequence, cfg: ClusterConfig = ClusterConfig()) -> float:
    """Mean silhouette with given labels (e.g. ground-truth classes) as the clusters, on
    the same sample of rows as scan_k uses for the same n and cfg.

    Raises:
        BadInputError: labels not one per row, or fewer than two distinct labels in the sample.
    """
    X = check_features(X, "X")
    labels = np.asarray(labels)
    if labels.shape != (len(X),):
        raise BadInputError("labels", f"must have one label per row of X ({len(X)}), got shape {labels.shape}",
                            "align labels with X")
    _, codes = np.unique(labels, return_inverse=True)
    sample = silhouette_sample_index(len(X), cfg)
    score = _sampled_silhouette(X, codes.ravel(), sample)
    if np.isnan(score):
        raise BadInputError("labels", f"need 2 to n-1 distinct labels among the {len(sample)} sampled rows, got "
                            f"{len(np.unique(codes[sample]))}", "pass labels of at least two classes")
    return score


def assign_clusters(X: np.ndarray, centroids: np.ndarray, block_rows: int = 65536) -> np.ndarray:
    """Index of the nearest centroid (Euclidean) for each row, (n,) int16.

    Processed ``block_rows`` rows at a time so memory stays O(block_rows * k).
    Raises:
        BadInputError: shapes disagree or non-finite values.
    """
    C = check_features(centroids, "centroids")
    if len(C) > np.iinfo(np.int16).max:
        raise BadInputError("centroids", f"{len(C)} clusters do not fit int16", "use fewer clusters")
    X = check_features(X, "X", C.shape[1])
    c_sq = (C ** 2).sum(axis=1)
    out = np.empty(len(X), dtype=np.int16)
    for start in range(0, len(X), block_rows):
        block = X[start:start + block_rows]
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 is the same for every c, so left out
        out[start:start + len(block)] = np.argmin(c_sq - 2.0 * block @ C.T, axis=1)
    return out


def save_centroids(scan: ClusterScan, out_dir: str | os.PathLike, encoder_id: str, *,
                   overwrite: bool = False) -> Path:
    """Write ``centroids.npz`` and ``centroids.json`` (best k's centroids, the scan's ks,
    silhouettes and inertias, config, encoder id) into ``out_dir``.

    A rerun with the same centroids rewrites them; different centroids already there are
    refused unless ``overwrite``. Returns the path of centroids.json.
    Raises: BadInputError (empty encoder_id, refusing to overwrite).
    """
    if not isinstance(encoder_id, str) or not encoder_id:
        raise BadInputError("encoder_id", "is empty", "pass the id of the encoder that made these embeddings")
    cl = Centroids(centroids=np.asarray(scan.centroids, dtype=np.float64), encoder_id=encoder_id, config=scan.config)
    return cl.write(out_dir, {"k": cl.k, "n_features": int(cl.centroids.shape[1]),
                              "scan": {"ks": scan.ks.tolist(), "silhouettes": scan.silhouettes.tolist(),
                                       "inertias": scan.inertias.tolist(), "best_k": scan.best_k,
                                       "sample_size": scan.sample_size, "n_rows": scan.n_rows}}, overwrite)


def load_centroids(path: str | os.PathLike, expected_encoder_id: str | None = None) -> Centroids:
    """Load centroids saved by save_centroids (``path``: the directory or either file).

    Raises:
        CheckpointError: missing, truncated or foreign files, hash mismatch, or made from
            another encoder's embeddings than ``expected_encoder_id``.
    """
    meta, arrays, json_path = read_artifact(Path(path), "centroids", CENTROIDS_FORMAT, ("centroids",))
    try:
        cl = Centroids(centroids=arrays["centroids"], encoder_id=str(meta["encoder_id"]),
                       config=ClusterConfig(**meta["config"]))
        if cl.centroids.ndim != 2:
            raise ValueError(f"centroids have shape {cl.centroids.shape}")
    except (KeyError, TypeError, ValueError, BadInputError) as exc:
        raise CheckpointError(f"{json_path}: not valid centroids ({exc}). Fix: run the clustering again.") from exc
    cl.check_loaded(json_path, meta, expected_encoder_id,
                    "rerun the clustering (`aurora-pipeline cluster`) on this store's embeddings")
    return cl


def _kmeans(k: int, n: int, cfg: ClusterConfig):
    # sklearn: only when clustering (loading centroids stays light)
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if n > cfg.minibatch_rows:
        return MiniBatchKMeans(n_clusters=k, n_init=cfg.n_init, max_iter=cfg.max_iter, random_state=cfg.seed,
                               batch_size=4096)
    return KMeans(n_clusters=k, n_init=cfg.n_init, max_iter=cfg.max_iter, random_state=cfg.seed)


def _sampled_silhouette(X: np.ndarray, labels: np.ndarray, sample: np.ndarray) -> float:
    """Mean silhouette of the sampled rows; NaN when they hold fewer than 2 or more than n-1 labels."""
    # sklearn: only when scoring silhouettes
    from sklearn.metrics import silhouette_score

    labels = labels[sample]
    if not 2 <= len(np.unique(labels)) <= len(sample) - 1:
        return float("nan")
    return float(silhouette_score(X[sample], labels, metric="euclidean"))
