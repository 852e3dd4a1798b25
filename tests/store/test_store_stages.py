"""Embeddings, labels and clusters written back into the store, and read with xarray."""

import shutil

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import aurora_pipeline
from aurora_pipeline.source.archive import list_archive
from aurora_pipeline.encoder.checkpoint import load_encoder
from aurora_pipeline.classify.model import ClassifierConfig, fit_classifier, load_classifier
from aurora_pipeline.cluster.model import ClusterConfig, load_centroids
from aurora_pipeline.cluster.driver import cluster_store
from aurora_pipeline.embed.driver import embed_with_checkpoint
from aurora_pipeline.errors import BadInputError, StoreError
from aurora_pipeline.encoder.training_frames import load_training_frames
from aurora_pipeline.ingest.driver import ingest
from aurora_pipeline.classify.driver import classify_store, fit_from_store
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.synth.archive import write_synthetic_archive
from aurora_pipeline.encoder.train import PretrainConfig, pretrain


def _train(store, out, seed):
    frames, provenance = load_training_frames(store)
    cfg = PretrainConfig(epochs=1, batch_size=16, image_size=32, seed=seed, device="cpu")
    return pretrain(frames, cfg, out, provenance=provenance)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    archive, store = root / "archive", root / "store.zarr"
    write_synthetic_archive(archive, sites=["gako", "gill"], start="2011-01-06T04", hours=2, frames_per_hour=60)
    ingest(list_archive(archive), store, PreprocessConfig(image_size=32))
    run = _train(store, root / "encoder", seed=0)
    embed_with_checkpoint(store, str(root / "encoder"), device="cpu")
    return root, archive, store, run


def test_embedding_beside_frames_with_model_id(embedded):
    root, _, store, run = embedded
    ds = aurora_pipeline.open_site(store, "gako")
    assert ds.embedding.shape == (ds.sizes["time"], 512)
    assert np.isfinite(ds.embedding.values).all()
    assert ds.embedding.attrs["aurora_model_id"] == run.model_id
    model, meta = load_encoder(str(root / "encoder"), "cpu")
    assert meta["model_id"] == run.model_id


def test_embed_rerun_rewrites_nothing_and_refuses_another_model(embedded, tmp_path):
    root, _, store, _ = embedded
    again = embed_with_checkpoint(store, str(root / "encoder"), device="cpu")
    assert again["hours_embedded"] == 0 and again["hours_skipped"] == 4
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store, copy)
    _train(copy, tmp_path / "other", seed=1)
    with pytest.raises(StoreError, match="another model"):
        embed_with_checkpoint(copy, str(tmp_path / "other"), device="cpu")
    replaced = embed_with_checkpoint(copy, str(tmp_path / "other"), device="cpu", overwrite=True)
    assert replaced["hours_embedded"] == 4


@pytest.fixture(scope="module")
def labelled(embedded):
    root, archive, store, _ = embedded
    report = fit_from_store(store, archive / "labels.csv", root / "classifier", ClassifierConfig(cv_folds=2),
                            holdout_hours_fraction=0.5)
    clf = load_classifier(root / "classifier")
    summary = classify_store(store, clf)
    return report, clf, summary


def test_labels_line_up_and_decode(embedded, labelled):
    _, archive, store, _ = embedded
    report, clf, summary = labelled
    assert summary["hours_labelled"] == 4 and report.holdout is not None
    ds = aurora_pipeline.open_site(store, "gill")
    assert ds.label.sizes["time"] == ds.frames.sizes["time"]
    np.testing.assert_allclose(ds.label_probability.sum("class").values, 1.0, atol=1e-5)
    names = ds.label.attrs["flag_meanings"].split()
    assert list(ds["class"].values) == names == list(clf.class_names)
    assert (ds.label.values == ds.label_probability.argmax("class").values).all()
    assert ds.label.attrs["aurora_classifier_id"] == clf.classifier_id
    assert ds.label_probability.attrs["aurora_encoder_id"] == clf.encoder_id
    truth = pd.read_csv(archive / "labels.csv")
    assert set(truth["class"]) >= set(names)


def test_classify_rerun_is_idempotent(embedded, labelled):
    _, _, store, _ = embedded
    _, clf, _ = labelled
    assert classify_store(store, clf)["hours_labelled"] == 0


def test_classifier_of_another_encoder_is_refused(embedded, labelled, tmp_path):
    _, _, store, _ = embedded
    _, clf, _ = labelled
    rng = np.random.default_rng(0)
    foreign = fit_classifier(rng.normal(size=(20, 512)), np.array(["arc", "moon"] * 10), ClassifierConfig(),
                             encoder_id="simclr-0000000000000000")
    with pytest.raises(StoreError, match="fitted on encoder"):
        classify_store(store, foreign)


def test_classify_says_how_many_hours_it_left_and_why(embedded, labelled, tmp_path):
    """issue 18 item 8: hours embedded by another encoder were neither labelled nor counted."""
    root, _, store, _ = embedded
    _, clf, _ = labelled
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store, copy)
    other = _train(copy, tmp_path / "other", seed=1)
    embed_with_checkpoint(copy, str(tmp_path / "other"), sites=["gill"], device="cpu", overwrite=True)
    summary = classify_store(copy, clf)
    why = f"embedded by encoder {other.model_id}, not {clf.encoder_id}"
    assert summary["hours_left"] == 2 and summary["hours_left_why"] == {why: 2}
    assert summary["hours_left_examples"][why] == "gill/2011-01-06T04"
    assert summary["hours_labelled"] == 0 and summary["hours_skipped"] == 2  # gako: labelled before the copy


def test_labels_csv_with_unmatched_rows_is_counted(embedded, tmp_path):
    root, archive, store, _ = embedded
    bad = pd.read_csv(archive / "labels.csv")
    bad.loc[0, "site"] = "abcd"
    bad.loc[1, "time"] = "1999-01-01T00:00:00.000"
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    with pytest.raises(BadInputError, match=r"1 rows name sites not in the store.*1 rows have times"):
        fit_from_store(store, path, tmp_path / "clf")


def test_clusters_in_range_and_centroids_reload(embedded, labelled):
    root, _, store, _ = embedded
    summary = cluster_store(store, root / "clusters", ClusterConfig(k_min=2, k_max=4, n_init=2))
    centroids = load_centroids(root / "clusters")
    ds = aurora_pipeline.open_site(store, "gako")
    assert summary["best_k"] == centroids.k
    assert ds.cluster.min() >= 0 and ds.cluster.max() < centroids.k
    assert (root / "clusters" / "silhouette_vs_k.png").stat().st_size > 0
    assert (root / "clusters" / "cluster_montage.png").stat().st_size > 0


def test_open_sites_and_plain_datatree(embedded, labelled):
    _, _, store, _ = embedded
    both = aurora_pipeline.open_sites(store, ["gako", "gill"])
    assert set(np.unique(both.site.values)) == {"gako", "gill"}
    assert (np.diff(both.time.values) >= np.timedelta64(0)).all()
    arcs = aurora_pipeline.open_sites(store, label="clear")
    code = list(arcs.label.attrs["flag_meanings"].split()).index("clear")
    assert (arcs.label.values == code).all()
    tree = xr.open_datatree(store, engine="zarr", consolidated=False)
    year = tree["gako/2011"].dataset
    assert {"frames", "embedding", "label", "label_probability", "hour_frames"} <= set(year.data_vars)


def test_comparison_with_a_random_init_encoder_reports_both(embedded):
    from aurora_pipeline.classify.evaluation import compare_with_random_init

    root, archive, store, _ = embedded
    out = compare_with_random_init(store, archive / "labels.csv", str(root / "encoder"), holdout_hours_fraction=0.5,
                                   device="cpu")
    assert out["frames_fitted"] > 0 and out["frames_held_out"] > 0
    for name in ("simclr", "random_init"):
        assert 0.0 <= out[name]["holdout_accuracy"] <= 1.0
        assert 0.0 <= out[name]["hour_cv_accuracy"] <= 1.0
