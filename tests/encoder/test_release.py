"""import-encoder: the published encoder's layout into the project's 1-channel checkpoint, and every refusal.

The release itself cannot be fetched here; ``release_standin`` writes a state dict of its exact
layout with random weights and batch-norm statistics (see tests/release_standin.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aurora_pipeline.encoder.checkpoint import load_encoder
from aurora_pipeline.encoder.release import RELEASE_SHA256, RELEASE_SIZE, import_encoder, release_layout
from aurora_pipeline.errors import BadInputError
from release_standin import green_input, relative_error, release_like_state, save_state, three_channel_model


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, str, dict]:
    path = tmp_path_factory.mktemp("release") / "aurora-fm-no-finetune.tar"
    state = release_like_state(seed=3)
    return path, save_state(state, path), state


def test_the_layout_is_the_publishers(release):
    layout = release_layout()
    assert "encoder.conv1.weight" in layout and layout["encoder.conv1.weight"] == (64, 3, 7, 7)
    assert not any(k.startswith("encoder.fc.") for k in layout)
    assert layout["projector.0.weight"] == (512, 512) and layout["projector.2.weight"] == (64, 512)
    assert "encoder.layer4.1.bn2.running_var" in layout and "encoder.bn1.num_batches_tracked" in layout
    assert set(release[2]) == set(layout)


def test_import_is_strict_and_embeds_like_the_three_channel_model(release, tmp_path):
    path, digest, state = release
    meta = import_encoder(path, tmp_path / "ckpt", sha256=digest)
    assert meta["config"] == {"image_size": 224}
    assert meta["preprocess"]["fov"] == "oath" and meta["preprocess"]["image_size"] == 224
    assert meta["provenance"]["imported_from"] == {"name": path.name, "size": path.stat().st_size, "sha256": digest}
    assert meta["provenance"]["is_the_release"] is False and meta["provenance"]["licence"] == "CC-BY-4.0"
    encoder, loaded = load_encoder(tmp_path / "ckpt")
    assert loaded["model_id"] == meta["model_id"]
    torch.testing.assert_close(encoder.conv1.weight, state["encoder.conv1.weight"][:, 1:2])
    torch.testing.assert_close(encoder.layer3[0].bn1.running_var, state["encoder.layer3.0.bn1.running_var"])
    x = torch.rand(4, 64, 64)  # the function, not the size, is the point here (224 px: test_release_on_gakona)
    with torch.no_grad():
        h1, h3 = encoder(x[:, None]), three_channel_model(state)(green_input(x))
    assert relative_error(h1, h3) <= 1e-5
    # the same file again into the same folder is the same checkpoint; the id covers weights and setting
    assert import_encoder(path, tmp_path / "ckpt", sha256=digest)["model_id"] == meta["model_id"]
    other = tmp_path / "other.tar"
    other_digest = save_state(release_like_state(4), other)
    assert import_encoder(other, tmp_path / "ckpt2", sha256=other_digest)["model_id"] != meta["model_id"]
    with pytest.raises(BadInputError, match="already holds another checkpoint"):
        import_encoder(other, tmp_path / "ckpt", sha256=other_digest)


def test_without_a_digest_only_the_release_itself_is_accepted(release, tmp_path):
    path, digest, _ = release
    with pytest.raises(BadInputError) as err:
        import_encoder(path, tmp_path / "ckpt")
    message = str(err.value)
    assert "\n" not in message and RELEASE_SHA256 in message and str(RELEASE_SIZE) in message
    assert digest in message and "--sha256" in message
    with pytest.raises(BadInputError, match="not that of the digest given"):
        import_encoder(path, tmp_path / "ckpt", sha256="0" * 64)
    with pytest.raises(BadInputError, match="64 hex digits"):
        import_encoder(path, tmp_path / "ckpt", sha256="f9c97e90")
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("change,named", [
    (lambda s: s.pop("encoder.layer2.0.bn1.running_mean"), "missing key(s) ['encoder.layer2.0.bn1.running_mean']"),
    (lambda s: s.update({"encoder.fc.weight": torch.zeros(1000, 512)}), "extra key(s) ['encoder.fc.weight']"),
    (lambda s: s.update({"projector.2.weight": torch.zeros(128, 512)}), "key projector.2.weight has shape (128, 512)"),
    (lambda s: s.update({"encoder.conv1.weight": torch.zeros(64, 1, 7, 7)}), "key encoder.conv1.weight has shape"),
])
def test_a_missing_extra_or_misshapen_key_is_named_in_one_line(release, tmp_path, change, named):
    state = dict(release[2])
    change(state)
    path = tmp_path / "edited.tar"
    digest = save_state(state, path)
    with pytest.raises(BadInputError) as err:
        import_encoder(path, tmp_path / "ckpt", sha256=digest)
    assert named in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "ckpt").exists()


class _Payload:
    """Unpickling this would create ``marker``: what a hostile checkpoint does to run code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_payload_is_refused_in_one_line_and_never_run(release, tmp_path):
    marker = tmp_path / "payload-ran"
    state = dict(release[2])
    state["encoder.conv1.weight"] = _Payload(marker)
    path = tmp_path / "hostile.tar"
    digest = save_state(state, path)
    assert not marker.exists()
    with pytest.raises(BadInputError) as err:
        import_encoder(path, tmp_path / "ckpt", sha256=digest)
    assert "weights_only=True" in str(err.value) and "nothing in it was run" in str(err.value)
    assert "\n" not in str(err.value)
    assert not marker.exists() and not (tmp_path / "ckpt").exists()


def test_the_command_prints_the_checkpoint_or_one_error_line(release, tmp_path, capsys):
    from aurora_cli.main import main

    path, digest, _ = release
    assert main(["import-encoder", str(path), "--out", str(tmp_path / "ckpt"), "--sha256", digest]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["image_size"] == 224 and printed["source"]["sha256"] == digest
    assert printed["model_id"] == json.loads((tmp_path / "ckpt" / "state.json").read_text())["model_id"]
    assert main(["import-encoder", str(path), "--out", str(tmp_path / "ckpt2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and RELEASE_SHA256 in err
    assert np.isclose(printed["preprocess"]["fov_shrink"], 0.15)
