"""The FAISS index on its own: parameters from n, exact and IVF-PQ search, filters, removal, saving."""

import numpy as np
import pytest

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.search.catalog import Catalog
from aurora_pipeline.search.config import IndexConfig
from aurora_pipeline.search.index import VectorIndex, choose_params, complete_params, normalized

SMALL_IVF = IndexConfig(exact_below=1000, nlist=16, pca_dim=32, pq_m=16, train_per_list=64)


def clustered(n, d=64, centres=20, latent=8, seed=0):
    """Clusters on a low-dimensional manifold, as embeddings are (not isotropic noise)."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(0).standard_normal((latent, d)).astype(np.float32)
    c = np.random.default_rng(1).standard_normal((centres, latent)).astype(np.float32)
    z = c[rng.integers(0, centres, n)] + 0.4 * rng.standard_normal((n, latent)).astype(np.float32)
    return normalized(z @ mix + 0.02 * rng.standard_normal((n, d)).astype(np.float32))


def test_parameters_follow_the_number_of_vectors():
    small = choose_params(5_000, 512)
    assert small["kind"] == "exact" and small["factory"] == "IDMap2,Flat"
    big = choose_params(1_000_000, 512)
    assert big["kind"] == "ivfpq" and big["nlist"] == 1024 and big["factory"] is None  # PCA from the sample
    assert 8 <= big["nprobe"] <= big["nlist"] and big["n_train"] == 64 * 1024
    bigger = choose_params(100_000_000, 512)
    assert bigger["nlist"] == 8192 and bigger["n_train"] == IndexConfig().max_train
    rng = np.random.default_rng(0)
    low_rank = rng.standard_normal((4000, 20)) @ rng.standard_normal((20, 512)) + 0.01 * rng.standard_normal((4000, 512))
    done = complete_params(big, low_rank)
    assert done["pca_dim"] == 96 and done["factory"] == "PCAR96,IVF1024,PQ96x4fs" and done["pca_variance_kept"] > 0.95
    assert complete_params(big, rng.standard_normal((4000, 512)))["pca_dim"] == 480  # no strong directions
    assert VectorIndex.create(done).bytes_per_vector() == 48 + 8  # <= 64 bytes a vector
    with pytest.raises(BadInputError, match="pq_m"):
        IndexConfig(pq_m=7)
    with pytest.raises(BadInputError, match="unknown setting"):
        IndexConfig.from_dict({"nlsit": 3})


def test_exact_index_equals_brute_force_and_honours_the_filter():
    x = clustered(800)
    params = choose_params(len(x), x.shape[1])
    index = VectorIndex.create(params)
    index.add(x[:500], first_row=0)
    index.add(x[500:], first_row=500)
    q = x[[3, 400, 777]]
    scores, rows = index.search(q, 10)
    truth = np.argsort(-(q @ x.T), axis=1)[:, :10]
    assert (rows == truth).all()
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, truth, axis=1), rtol=1e-5)
    allowed = np.arange(len(x)) % 3 == 0
    _, rows = index.search(q, 10, allowed)
    assert (rows % 3 == 0).all()
    masked = np.where(allowed, q @ x.T, -np.inf)
    assert (rows == np.argsort(-masked, axis=1)[:, :10]).all()


def test_ivfpq_finds_the_neighbours_after_an_exact_rerank():
    x = clustered(6050)
    x, q = x[:6000], x[6000:]  # queries from the same clusters, not in the index
    index = VectorIndex.create(choose_params(len(x), x.shape[1], SMALL_IVF))
    assert index.kind == "ivfpq" and not index.is_trained
    index.train(x[:2000])
    index.add(x, first_row=0)
    _, rows = index.search(q, 100, nprobe=4)
    recall = []
    for qi, cand in zip(q, rows):
        cand = cand[cand >= 0]
        best = cand[np.argsort(-(x[cand] @ qi))[:10]]
        recall.append(len(set(best) & set(np.argsort(-(x @ qi))[:10])) / 10)
    assert np.mean(recall) >= 0.9


@pytest.mark.parametrize("config", [IndexConfig(), SMALL_IVF], ids=["exact", "ivfpq"])
def test_adding_in_another_order_gives_the_same_contents(config):
    x = clustered(3000)
    fresh = VectorIndex.create(choose_params(len(x), x.shape[1], config))
    fresh.train(x[:2000])
    later = fresh.empty_copy()
    fresh.add(x, first_row=0)
    later.add(x[1000:], first_row=1000)  # a late hour arrives after the ones that follow it
    later.add(x[:1000], first_row=0)
    rows_a, payload_a = fresh.contents()
    rows_b, payload_b = later.contents()
    assert (rows_a == np.arange(3000)).all() and (rows_a == rows_b).all()
    assert (payload_a == payload_b).all()
    other = fresh.empty_copy()
    other.add(x[::-1].copy(), first_row=0)  # same rows, other vectors: the contents differ
    assert not (other.contents()[1] == payload_a).all()


def test_training_is_deterministic_and_saving_keeps_everything():
    x = clustered(3000)
    params = choose_params(len(x), x.shape[1], SMALL_IVF)
    a, b = VectorIndex.create(params), VectorIndex.create(params)
    a.train(x[:2000])
    b.train(x[:2000])
    assert a.trained_state() == b.trained_state()
    a.add(x, 0)
    again = VectorIndex.from_bytes(a.to_bytes(), params)
    assert again.ntotal == 3000
    assert all((u == v).all() for u, v in zip(a.contents(), again.contents()))


def test_zero_or_nan_vectors_are_refused():
    with pytest.raises(BadInputError, match="1 of 2 vectors"):
        normalized(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(BadInputError, match="NaN"):
        normalized(np.array([[np.nan, 1.0]]))


def test_catalog_maps_rows_to_frames_and_filters_by_hour():
    cat = Catalog()
    cat.append_hour("gako", 2011, 100, 100 * 1536, np.array([0, 1, 2]), "m|a|3", "c1")
    cat.append_hour("gill", 2011, 101, 101 * 1536, np.array([2, 2]), "m|b|2", "c1")
    site, year, slot = cat.frames_of(np.array([0, 2, 3, 4, 5]))
    assert site.tolist() == [0, 0, 1, 1, -1] and slot[:4].tolist() == [153600, 153602, 155136, 155137]
    assert cat.allowed_rows(sites=["gill"]).tolist() == [False, False, False, True, True]
    hour_100 = np.datetime64("2011-01-05T04", "ms")  # hour 100 of 2011
    assert cat.allowed_rows(end=hour_100 + np.timedelta64(1, "h")).tolist() == [True] * 3 + [False] * 2
    assert cat.allowed_rows(label_codes=[2]).tolist() == [False, False, True, True, True]
    removed = cat.drop_hours([0])  # its rows stay in the FAISS index, dead: never returned
    assert removed.tolist() == [0, 1, 2] and cat.frames_of(np.array([1]))[0].tolist() == [-1]
    assert cat.allowed_rows().tolist() == [False, False, False, True, True] and cat.n_dead == 3
    again = Catalog.from_bytes(cat.to_bytes(), cat.sites, "test")
    assert again.hour_lookup() == {("gill", 2011, 101): 0} and again.next_row == 5
