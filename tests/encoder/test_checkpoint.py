"""Checkpoints: safe loading, ids, and refusal of truncated or foreign files."""

import hashlib
import io
import json
import shutil

import fsspec
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import aurora_pipeline
from aurora_pipeline.encoder import checkpoint as ckpt
from aurora_pipeline.errors import CheckpointError
from aurora_pipeline.encoder import ProjectionHead, resnet18_encoder


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    encoder, head = resnet18_encoder(), ProjectionHead()
    optimizer = torch.optim.Adam(list(encoder.parameters()) + list(head.parameters()))
    state = {"optimizer": optimizer.state_dict(), "order_rng": torch.Generator().get_state(), "step_loss": torch.tensor([1.0, 2.0])}
    return encoder, head, state


@pytest.fixture
def run(tmp_path, parts):
    """A run directory with epoch-0001 and final/ written by save_checkpoint."""
    encoder, head, state = parts
    meta = {"config": {"image_size": 32}, "provenance": {"source": "unit test"}, "epoch": 1}
    for name in ("epoch-0001", "final"):
        ckpt.save_checkpoint(tmp_path / name, encoder=encoder, head=head, training_state=state, meta=meta)
    ckpt.write_latest(tmp_path, "epoch-0001")
    return tmp_path


def test_round_trip_restores_the_encoder(run, parts):
    loaded, meta = ckpt.load_encoder(run / "final")
    for (name, a), b in zip(parts[0].state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert not loaded.training
    assert meta["provenance"] == {"source": "unit test"} and meta["config"]["image_size"] == 32
    assert meta["aurora_pipeline_version"] == aurora_pipeline.__version__
    weights = (run / "final" / ckpt.ENCODER_FILE).read_bytes()
    digest = hashlib.sha256(weights + json.dumps({"image_size": 32}, sort_keys=True).encode()).hexdigest()
    assert meta["model_id"] == "simclr-" + digest[:16] == ckpt.model_id_of(weights, {"image_size": 32})


def test_same_weights_same_model_id(run):
    assert ckpt.load_encoder(run / "final")[1]["model_id"] == ckpt.load_encoder(run / "epoch-0001")[1]["model_id"]


def test_run_directory_resolves_to_final_then_latest(run):
    assert ckpt.load_encoder(run)[1]["path"].endswith("final")
    shutil.rmtree(run / "final")
    assert ckpt.load_encoder(run)[1]["path"].endswith("epoch-0001")


def test_fsspec_urls(run):
    assert ckpt.load_encoder(f"file://{run}/final")[1]["path"] == f"file://{run}/final"
    memory = fsspec.filesystem("memory")
    for path in (run / "final").iterdir():
        memory.pipe_file(f"/ckpt/final/{path.name}", path.read_bytes())
    encoder, meta = ckpt.load_encoder("memory://ckpt")
    assert meta["path"] == "memory://ckpt/final" and isinstance(encoder, nn.Module)


def test_training_state_loads_with_weights_only(run):
    state = torch.load(run / "final" / ckpt.TRAINING_FILE, weights_only=True)
    assert torch.equal(state["step_loss"], torch.tensor([1.0, 2.0]))
    sidecar, blobs, state = ckpt.load_training_state(run / "final")
    assert set(blobs) == {ckpt.ENCODER_FILE, ckpt.HEAD_FILE} and "optimizer" in state


def test_truncated_weights_refused(run):
    path = run / "final" / ckpt.ENCODER_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"final: encoder\.safetensors .*truncated.*Fix:"):
        ckpt.load_encoder(run / "final")


def test_changed_byte_refused(run):
    path = run / "final" / ckpt.ENCODER_FILE
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        ckpt.load_encoder(run / "final")


def test_missing_sidecar_refused(run):
    (run / "final" / ckpt.SIDECAR_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"final: incomplete checkpoint.*Fix:"):
        ckpt.load_encoder(run / "final")


def test_foreign_safetensors_file_refused(tmp_path):
    save_file({"weight": torch.randn(3, 3)}, tmp_path / ckpt.ENCODER_FILE)
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        ckpt.load_encoder(tmp_path)
    with pytest.raises(CheckpointError, match="no SimCLR checkpoint found"):
        ckpt.load_encoder(tmp_path / "nothing-here")


def test_foreign_weights_with_a_valid_sidecar_refused(tmp_path, parts):
    ckpt.save_checkpoint(tmp_path, encoder=nn.Linear(4, 2), head=parts[1], training_state={},
                         meta={"config": {"image_size": 32}})
    with pytest.raises(CheckpointError, match=r"not a ResNet .*missing .*unexpected"):
        ckpt.load_encoder(tmp_path)


def test_wrong_shapes_refused(tmp_path, parts):
    encoder = resnet18_encoder()
    encoder.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)  # an RGB stem
    ckpt.save_checkpoint(tmp_path, encoder=encoder, head=parts[1], training_state={},
                         meta={"config": {"image_size": 32}})
    with pytest.raises(CheckpointError, match=r"wrong shapes for \['conv1.weight'\]"):
        ckpt.load_encoder(tmp_path)


def _rewrite_sidecar(directory, **changes):
    sidecar = json.loads((directory / ckpt.SIDECAR_FILE).read_text())
    sidecar.update(changes)
    (directory / ckpt.SIDECAR_FILE).write_text(json.dumps(sidecar))


def test_not_safetensors_refused(run):
    garbage = b"this is not a safetensors file" * 10
    (run / "final" / ckpt.ENCODER_FILE).write_bytes(garbage)
    sidecar = json.loads((run / "final" / ckpt.SIDECAR_FILE).read_text())
    sidecar["files"][ckpt.ENCODER_FILE] = hashlib.sha256(garbage).hexdigest()
    _rewrite_sidecar(run / "final", files=sidecar["files"], model_id=ckpt.model_id_of(garbage, {"image_size": 32}))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        ckpt.load_encoder(run / "final")


def test_model_id_mismatch_refused(run):
    _rewrite_sidecar(run / "final", model_id="simclr-0000000000000000")
    with pytest.raises(CheckpointError, match="is not the id of these weights"):
        ckpt.load_encoder(run / "final")


def test_the_model_id_covers_the_input_size_and_an_edited_one_is_refused(run, parts, tmp_path):
    encoder, head, state = parts
    other = ckpt.save_checkpoint(tmp_path / "at64", encoder=encoder, head=head, training_state=state,
                                 meta={"config": {"image_size": 64}})
    ours = ckpt.load_encoder(run / "final")[1]
    assert other["model_id"] != ours["model_id"]  # same weights, other embeddings: another id
    assert ckpt.load_encoder(tmp_path / "at64")[1]["model_id"] == other["model_id"]
    sidecar = json.loads((run / "final" / ckpt.SIDECAR_FILE).read_text())
    _rewrite_sidecar(run / "final", config={**sidecar["config"], "image_size": 64})  # edited by hand
    with pytest.raises(CheckpointError, match="with image_size=64 .* edited after saving"):
        ckpt.load_encoder(run / "final")


@pytest.mark.parametrize("bad", [100000, "abc", 31, None, 64.0, True])
def test_impossible_image_size_in_a_sidecar_is_a_checkpoint_error(run, bad):
    sidecar = json.loads((run / "final" / ckpt.SIDECAR_FILE).read_text())
    _rewrite_sidecar(run / "final", config={**sidecar["config"], "image_size": bad})
    with pytest.raises(CheckpointError, match=r"config\.image_size .* not a whole number of pixels in 32\.\.512"):
        ckpt.load_encoder(run / "final")


def test_foreign_sidecar_refused(run):
    _rewrite_sidecar(run / "final", format="something else")
    with pytest.raises(CheckpointError, match="not an aurora-pipeline SimCLR checkpoint"):
        ckpt.load_encoder(run / "final")


def test_training_state_with_code_refused(run):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    buffer = io.BytesIO()
    torch.save({"x": Evil()}, buffer)
    (run / "final" / ckpt.TRAINING_FILE).write_bytes(buffer.getvalue())
    sidecar = json.loads((run / "final" / ckpt.SIDECAR_FILE).read_text())
    sidecar["files"][ckpt.TRAINING_FILE] = hashlib.sha256(buffer.getvalue()).hexdigest()
    _rewrite_sidecar(run / "final", files=sidecar["files"])
    with pytest.raises(CheckpointError) as caught:
        ckpt.load_training_state(run / "final")
    message = str(caught.value)  # issue 18 item 15: one line, no torch text advising weights_only=False
    assert "training_state.pt: not a safe checkpoint file" in message and "nothing in it was run" in message
    assert "\n" not in message and "weights_only" not in message
    assert "resume from another epoch: move final out of" in message and "kept: epoch-0001" in message


def test_latest_complete_skips_an_interrupted_save(run, parts):
    encoder, head, state = parts
    ckpt.save_checkpoint(run / "epoch-0002", encoder=encoder, head=head, training_state=state, meta={})
    ckpt.write_latest(run, "epoch-0002")
    assert ckpt.latest_complete(run) == run / "epoch-0002"
    (run / "epoch-0002" / ckpt.SIDECAR_FILE).unlink()  # as if the process died before the sidecar
    assert ckpt.latest_complete(run) == run / "epoch-0001"


def test_prune_keeps_the_newest(run, parts):
    encoder, head, state = parts
    for epoch in (2, 3):
        ckpt.save_checkpoint(run / ckpt.epoch_dir_name(epoch), encoder=encoder, head=head, training_state=state, meta={})
    ckpt.prune_epochs(run, keep=2)
    assert sorted(p.name for p in run.glob("epoch-*")) == ["epoch-0002", "epoch-0003"]


def test_load_from_s3(run, s3_env):
    bucket = s3_env.make_bucket("checkpoints")
    s3 = s3_env.filesystem()
    s3.put(str(run / "final"), f"{bucket}/runs/one/final", recursive=True)
    encoder, meta = ckpt.load_encoder(f"{bucket}/runs/one")  # endpoint from AWS_ENDPOINT_URL_S3
    assert meta["path"] == f"{bucket}/runs/one/final" and isinstance(encoder, nn.Module)
    _, meta = ckpt.load_encoder(f"{bucket}/runs/one/final", storage_options=s3_env.storage_options())
    s3.pipe_file(f"{bucket}/runs/one/final/{ckpt.ENCODER_FILE}", b"truncated")
    with pytest.raises(CheckpointError, match=r"s3://checkpoints/runs/one/final: encoder\.safetensors"):
        ckpt.load_encoder(f"{bucket}/runs/one/final", storage_options=s3_env.storage_options())
