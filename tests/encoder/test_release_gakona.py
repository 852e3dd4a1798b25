"""The imported encoder on the real Gakona CDF: a store made with ``--checkpoint`` holds the frames the
publisher's recipe makes, its embeddings are the publisher's 3-channel model's, and stores of another
setting are refused, for imported and self-trained checkpoints alike."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from aurora_pipeline.store.read import hour_facts
import torch

import aurora_pipeline
from aurora_pipeline.embed.driver import embed_with_checkpoint
from aurora_pipeline.encoder.checkpoint import load_encoder
from aurora_pipeline.encoder.release import import_encoder
from aurora_pipeline.errors import CheckpointError, StoreError
from aurora_pipeline.ingest.driver import ingest
from aurora_pipeline.ingest.setting import encoder_config
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.source.archive import list_archive, relative_path
from aurora_pipeline.source.cdf import parse_archive_name
from aurora_pipeline.store.core import Store
from release_standin import green_input, relative_error, release_like_state, save_state, three_channel_model

GAKO_CDF = Path(__file__).resolve().parents[3] / "shared" / "data" / "themis" / "thg_l1_asf_gako_2011010617_v01.cdf"
pytestmark = pytest.mark.skipif(not GAKO_CDF.is_file(),
                                reason=f"real THEMIS file not found at {GAKO_CDF} (../shared/data is absent)")


def _recipe(raw: np.ndarray, size: int) -> np.ndarray:
    from oath_recipe import recipe  # tests/oath_recipe.py

    return recipe(raw, size)


@pytest.fixture(scope="module")
def gakona(tmp_path_factory):
    """An archive of the one real Gakona file, the release stand-in imported, and a store ingested with it."""
    root = tmp_path_factory.mktemp("gakona")
    site, hour = parse_archive_name(GAKO_CDF.name)
    target = root / "archive" / relative_path(site, hour)
    target.parent.mkdir(parents=True)
    shutil.copyfile(GAKO_CDF, target)
    state = release_like_state(seed=5)
    digest = save_state(state, root / "aurora-fm-no-finetune.tar")
    ckpt = str(root / "aurora-fm")
    import_encoder(root / "aurora-fm-no-finetune.tar", ckpt, sha256=digest)
    store = root / "store.zarr"
    ingest(list_archive(str(root / "archive")), store, encoder_config(ckpt))
    # float32 throughout: the comparison below is of the import's arithmetic; on a CPU with native bf16
    # the default autocast puts the embeddings ~1% away (more than frames of one hour differ by)
    report = embed_with_checkpoint(store, ckpt, device="cpu", mixed_precision=False)
    return root, ckpt, store, state, report


def test_the_store_holds_the_recipes_frames_and_the_three_channel_models_embeddings(gakona):
    from aurora_pipeline.source.cdf import read_asi_cdf

    root, ckpt, store, state, report = gakona
    st = Store.open(store)
    assert st.preprocess == PreprocessConfig(image_size=224).setting()  # the encoder's setting, at 224 px
    ds = aurora_pipeline.open_site(store, "gako")
    frames, embedding = ds.frames.values, ds.embedding.values
    raw = read_asi_cdf(GAKO_CDF).images
    assert frames.shape == (len(raw), 224, 224) and report["frames"] == len(raw)
    expected = _recipe(raw, 224)
    np.testing.assert_array_equal(frames, expected)     # PIL's resize (oath_resize="pil"): the recipe's bytes
    # the publisher's model on the recipe's input: (n, 3, 224, 224), the frame in green
    with torch.no_grad():
        h3 = three_channel_model(state)(green_input(torch.from_numpy(expected).float() / 255.0)).numpy()
    assert relative_error(embedding, h3) <= 0.002
    # and the frames differ from one another enough for that to mean something
    assert relative_error(embedding[0], embedding[-1]) > 0.002


def test_an_encoder_imported_before_oath_resize_keeps_the_float64_frames_it_was_given():
    from aurora_pipeline.encoder.checkpoint import encoder_preprocess

    before = {k: v for k, v in PreprocessConfig(image_size=224).setting().items() if k != "oath_resize"}
    assert encoder_preprocess({"preprocess": before})["oath_resize"] == "float64"
    assert encoder_preprocess({}) is None


def test_embed_refuses_a_store_of_another_setting_naming_both(gakona, tmp_path):
    root, ckpt, _, _, _ = gakona
    other = tmp_path / "cropped.zarr"
    ingest(list_archive(str(root / "archive")), other, PreprocessConfig(fov="circle", image_size=64))
    with pytest.raises(StoreError) as err:
        embed_with_checkpoint(other, ckpt, device="cpu")
    message = str(err.value)
    assert "\n" not in message and "fov='circle'" in message and "fov='oath'" in message
    assert "image_size=64" in message and "image_size=224" in message and "--checkpoint" in message
    assert hour_facts(other, "gako")["embedding_model"].eq("").all()  # nothing was written


def test_a_self_trained_checkpoint_records_its_stores_setting_and_refuses_others(gakona, tmp_path):
    from aurora_pipeline.encoder.train import PretrainConfig, pretrain
    from aurora_pipeline.encoder.training_frames import load_training_frames

    root, _, _, _, _ = gakona
    small = tmp_path / "small.zarr"
    ingest(list_archive(str(root / "archive")), small, PreprocessConfig(image_size=32))
    frames, provenance = load_training_frames(small)
    trained = pretrain(frames, PretrainConfig(epochs=1, batch_size=8, image_size=32, device="cpu"), tmp_path / "enc",
                       provenance=provenance, preprocess=provenance["preprocess"])
    _, meta = load_encoder(trained.checkpoint)
    assert meta["preprocess"] == PreprocessConfig(image_size=32).setting()
    assert encoder_config(trained.checkpoint) == PreprocessConfig(image_size=32)
    embed_with_checkpoint(small, trained.checkpoint, device="cpu")  # its own store: fine
    other = tmp_path / "other.zarr"
    ingest(list_archive(str(root / "archive")), other, PreprocessConfig(fov="circle", image_size=32))
    with pytest.raises(StoreError, match="fov='circle'.*expects fov='oath'"):
        embed_with_checkpoint(other, trained.checkpoint, device="cpu")
    # a checkpoint that records no setting (trained before they did) cannot set a store's
    untracked = pretrain(frames, PretrainConfig(epochs=1, batch_size=8, image_size=32, device="cpu"), tmp_path / "old")
    with pytest.raises(CheckpointError, match="records no preprocessing setting"):
        encoder_config(untracked.checkpoint)
