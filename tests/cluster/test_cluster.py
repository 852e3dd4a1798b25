"""Tests of aurora_pipeline.cluster.model: the K-means scan, silhouettes and saved centroids."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from aurora_pipeline.cluster.model import (
    ClusterConfig,
    assign_clusters,
    load_centroids,
    save_centroids,
    scan_k,
    silhouette_of_labels,
    silhouette_sample_index,
)
from aurora_pipeline.errors import BadInputError, CheckpointError


def _blobs(n_centers=5, n=400, d=8, std=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-10, 10, size=(n_centers, d))
    truth = np.arange(n) % n_centers
    return centers[truth] + rng.normal(scale=std, size=(n, d)), truth


FAST = ClusterConfig(k_min=2, k_max=8, n_init=3)


def test_best_k_found_on_well_separated_blobs():
    X, truth = _blobs(n_centers=5)
    scan = scan_k(X, FAST)
    assert scan.ks.tolist() == list(range(2, 9))
    assert scan.best_k == 5 and scan.centroids.shape == (5, 8)
    assert scan.silhouettes[scan.ks == 5][0] == scan.silhouettes.max() > 0.8
    assert np.all(np.diff(scan.inertias) <= 1e-6 * scan.inertias[0])  # more clusters, less inertia
    assert scan.sample_size == scan.n_rows == 400
    # the clusters are the blobs: each blob maps to one cluster
    cluster = assign_clusters(X, scan.centroids)
    assert all(len(np.unique(cluster[truth == t])) == 1 for t in range(5))
    assert len(np.unique(cluster)) == 5


def test_minibatch_path_for_many_rows_finds_the_same_k():
    X, _ = _blobs(n_centers=4, n=600)
    scan = scan_k(X, ClusterConfig(k_min=2, k_max=6, n_init=3, minibatch_rows=100))
    assert scan.best_k == 4


def test_assign_clusters_is_nearest_centroid_in_int16():
    rng = np.random.default_rng(1)
    X, C = rng.normal(size=(1000, 6)), rng.normal(size=(7, 6))
    out = assign_clusters(X, C, block_rows=128)
    assert out.dtype == np.int16 and out.shape == (1000,)
    assert out.min() >= 0 and out.max() < 7
    brute = np.argmin(((X[:, None, :] - C[None]) ** 2).sum(axis=2), axis=1)
    np.testing.assert_array_equal(out, brute)
    with pytest.raises(BadInputError, match="features"):
        assign_clusters(X[:, :5], C)


def test_silhouette_uses_one_documented_sample():
    X, truth = _blobs(n_centers=3, n=500)
    cfg = ClusterConfig(k_min=2, k_max=4, n_init=2, silhouette_sample=200, seed=7)
    idx = silhouette_sample_index(len(X), cfg)
    assert len(idx) == 200 and len(np.unique(idx)) == 200 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(idx, silhouette_sample_index(len(X), cfg))  # same sample every time
    scan = scan_k(X, cfg)
    assert scan.sample_size == 200 and scan.n_rows == 500
    got = silhouette_of_labels(X, truth, cfg)
    assert got == pytest.approx(silhouette_score(X[idx], truth[idx]))
    assert got != pytest.approx(silhouette_score(X, truth), abs=1e-12)  # it really is a sample
    # ground truth of the blobs scores high; random labels score about zero
    rng = np.random.default_rng(0)
    assert silhouette_of_labels(X, rng.integers(0, 3, len(X)), cfg) < 0.05 < 0.8 < got
    names = np.array(["arc", "moon", "clear"])[truth]  # string labels work too
    assert silhouette_of_labels(X, names, cfg) == pytest.approx(got)


def test_bad_settings_are_refused():
    X, _ = _blobs(n=20)
    with pytest.raises(BadInputError, match="k_min"):
        ClusterConfig(k_min=1)
    with pytest.raises(BadInputError, match="k_max"):
        ClusterConfig(k_min=5, k_max=4)
    with pytest.raises(BadInputError, match="20 rows"):
        scan_k(X, ClusterConfig(k_min=2, k_max=20))
    with pytest.raises(BadInputError, match="unknown"):
        ClusterConfig.from_dict({"k": 12})
    with pytest.raises(BadInputError, match="two classes"):
        silhouette_of_labels(X, np.zeros(20, dtype=int), ClusterConfig())
    with pytest.raises(BadInputError, match="one label per row"):
        silhouette_of_labels(X, np.zeros(19, dtype=int), ClusterConfig())


def test_centroids_reload_identical_and_refusals(tmp_path):
    X, _ = _blobs(n_centers=3, n=120)
    scan = scan_k(X, ClusterConfig(k_min=2, k_max=4, n_init=2))
    out = tmp_path / "clusters"
    json_path = save_centroids(scan, out, encoder_id="enc-a")
    doc = json.loads(json_path.read_text())
    assert doc["k"] == scan.best_k == 3 and doc["scan"]["ks"] == [2, 3, 4]
    cl = load_centroids(out, expected_encoder_id="enc-a")
    np.testing.assert_array_equal(cl.centroids, scan.centroids)
    assert cl.centroids_id == doc["centroids_id"] and cl.k == 3
    np.testing.assert_array_equal(assign_clusters(X, cl.centroids), assign_clusters(X, scan.centroids))

    with pytest.raises(CheckpointError, match="enc-b"):
        load_centroids(out, expected_encoder_id="enc-b")
    with pytest.raises(BadInputError, match="overwrite"):
        save_centroids(scan, out, encoder_id="enc-other")
    save_centroids(scan, out, encoder_id="enc-a")  # a rerun rewrites the same content

    npz = out / "centroids.npz"
    good = npz.read_bytes()
    tampered = dict(np.load(io.BytesIO(good), allow_pickle=False))
    tampered["centroids"] = tampered["centroids"][::-1]  # same numbers, other order: other cluster ids
    with open(npz, "wb") as fh:
        np.savez(fh, **tampered)
    with pytest.raises(CheckpointError, match="does not match"):
        load_centroids(out)
    npz.write_bytes(good[:100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_centroids(out)
    npz.unlink()
    with pytest.raises(CheckpointError, match="no such file"):
        load_centroids(out)
