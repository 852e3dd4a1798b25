"""fit-classifier --oath-dir: the OATH classifier of an imported encoder, applied to a store by
`classify` and by the nightly run (`label-archive`), on the synthetic OATH stand-in.

The encoder is the release's layout with random weights (tests/release_standin.py), so the
accuracies mean nothing here; what is tested is the chain: the classifier is bound to the
encoder's id, its six OATH classes land in the store, and the nightly run uses it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from aurora_pipeline.store.read import hour_facts

import aurora_pipeline
from aurora_pipeline.classify.driver import classify_store
from aurora_pipeline.classify.model import load_classifier
from aurora_pipeline.embed.driver import embed_with_checkpoint
from aurora_pipeline.encoder.release import import_encoder
from aurora_pipeline.oath.dataset import CLASS_NAMES
from aurora_pipeline.oath.synth import write_synthetic_oath
from aurora_pipeline.store.core import Store
from aurora_pipeline.synth.archive import write_synthetic_archive
from release_standin import release_like_state, save_state

SITE, FRAMES_PER_HOUR = "gako", 4


@pytest.fixture(scope="module")
def oath_models(tmp_path_factory):
    """The synthetic OATH stand-in (60 images) and the release stand-in imported."""
    root = tmp_path_factory.mktemp("oath-classifier")
    write_synthetic_oath(root / "oath", n=60, seed=0, workers=1)
    digest = save_state(release_like_state(seed=7), root / "aurora-fm-no-finetune.tar")
    meta = import_encoder(root / "aurora-fm-no-finetune.tar", root / "encoder", sha256=digest)
    return root, str(root / "encoder"), meta["model_id"]


def test_fit_classifier_on_oath_then_classify_and_the_nightly_run_use_it(oath_models, tmp_path, capsys):
    from aurora_cli.main import main
    from flows.ingest import ingest_archive
    from flows.label_archive import label_archive

    root, ckpt, model_id = oath_models
    clf_dir = tmp_path / "oath-classifier"
    assert main(["fit-classifier", "--oath-dir", str(root / "oath"), "--checkpoint", ckpt, "--out", str(clf_dir),
                 "--splits", "0,1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    printed = json.loads(out[out.index("{"):])
    assert printed["encoder_id"] == model_id and printed["oath_images"] == 60
    assert len(printed["oath_split_accuracies"]) == 2 and 0.0 <= printed["oath_split_accuracy"] <= 1.0
    clf = load_classifier(clf_dir, expected_encoder_id=model_id)
    assert clf.class_names == CLASS_NAMES and clf.classifier_id == printed["classifier_id"]
    saved = json.loads((clf_dir / "classifier.json").read_text())
    assert saved["metrics"]["kind"] == "oath_reference_splits" and saved["metrics"]["preprocess"]["fov"] == "oath"
    assert saved["metrics"]["n_samples"] == 2 * 18  # the test parts of two splits of 60 images

    # a store made with the encoder's setting (ingest --checkpoint), embedded by it, labelled by `classify`
    archive, store = tmp_path / "archive", tmp_path / "store.zarr"
    write_synthetic_archive(archive, sites=SITE, start="2011-01-06T05", hours=1, frames_per_hour=FRAMES_PER_HOUR)
    ingest_archive(archive=str(archive), store=str(store), sites=[SITE], checkpoint=ckpt)
    assert Store.open(store).preprocess["image_size"] == 224 and Store.open(store).preprocess["fov"] == "oath"
    embed_with_checkpoint(store, ckpt, device="cpu")
    labelled = classify_store(store, clf)
    assert labelled["hours_labelled"] == 1 and sum(labelled["label_counts"].values()) == FRAMES_PER_HOUR
    ds = aurora_pipeline.open_site(store, SITE)
    assert ds.label.attrs["flag_meanings"].split() == list(CLASS_NAMES)
    assert np.isfinite(ds.label.values).all()

    # the nightly run ingests a new hour in the store's setting, embeds and labels it with the OATH classifier
    write_synthetic_archive(archive, sites=SITE, start="2011-01-06T06", hours=1, frames_per_hour=FRAMES_PER_HOUR)
    night = label_archive(archive=str(archive), store=str(store), checkpoint=ckpt, classifier=str(clf_dir),
                          sites=[SITE], reconcile=True, device="cpu")
    assert (night["files_new"], night["files_ingested"], night["hours_labelled"]) == (1, 1, 1)
    facts = hour_facts(store, SITE)
    assert facts["classifier"].tolist() == [clf.classifier_id] * 2 and facts["embedding_model"].eq(model_id).all()
    ds = aurora_pipeline.open_site(store, SITE)
    assert ds.frames.shape == (2 * FRAMES_PER_HOUR, 224, 224) and np.isfinite(ds.label.values).all()


def test_the_oath_path_and_the_labels_path_are_not_mixed(oath_models, tmp_path, capsys):
    from aurora_cli.main import main

    root, ckpt, _ = oath_models
    assert main(["fit-classifier", "--oath-dir", str(root / "oath"), "--out", str(tmp_path / "c")]) == 2
    assert "--oath-dir and --checkpoint go together" in capsys.readouterr().err
    assert main(["fit-classifier", "--store", "s.zarr", "--out", str(tmp_path / "c")]) == 2
    assert "needs --store and --labels" in capsys.readouterr().err
