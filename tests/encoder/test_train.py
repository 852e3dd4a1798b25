"""SimCLR pre-training, resume, determinism, embedding and device selection.

The training runs are small (32 frames of 32x32, batches of 8) and shared through
module-scoped fixtures, so the whole file stays well under a minute on 2 cores.
"""

import json
import threading

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aurora_pipeline.encoder import checkpoint as ckpt
from aurora_pipeline.device import memory_format_for, prefetched, resolve_device, supports_bf16
from aurora_pipeline.embed.model import EmbedConfig, embed_batches, embed_frames, inference_model
from aurora_pipeline.encoder.backbone import fold_batch_norms, frames_to_input
from aurora_pipeline.errors import BadInputError, CheckpointError
from aurora_pipeline.encoder.train import PretrainConfig, TrainProgress, batches_of_epoch, pretrain

CFG = PretrainConfig(epochs=3, batch_size=8, image_size=32, log_every=2, seed=0)


def patterns(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 frames of four kinds: horizontal bands, vertical bands, a blob, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size))
    for i in range(n):
        kind, phase, freq = i % 4, rng.uniform(0, 2 * np.pi), rng.uniform(2, 4)
        if kind == 0:
            out[i] = np.sin(2 * np.pi * freq * y + phase)
        elif kind == 1:
            out[i] = np.sin(2 * np.pi * freq * x + phase)
        elif kind == 2:
            out[i] = 2 * np.exp(-((x - rng.uniform(0.3, 0.7)) ** 2 + (y - rng.uniform(0.3, 0.7)) ** 2) / 0.02) - 1
        else:
            out[i] = rng.normal(0, 0.5, (size, size))
    return ((out.clip(-1, 1) + 1) * 127.5).astype(np.uint8)


FRAMES = patterns(32)


def weights(run_dir):
    out = {}
    for name in (ckpt.ENCODER_FILE, ckpt.HEAD_FILE):
        out.update({f"{name}:{k}": v for k, v in load_file(run_dir / ckpt.FINAL_DIR / name).items()})
    return out


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 3-epoch run, with its progress reports."""
    run_dir = tmp_path_factory.mktemp("straight")
    reports = []
    result = pretrain(FRAMES, CFG, run_dir, progress=reports.append, provenance={"frames": "patterns(32)"})
    return run_dir, result, reports


def test_training_lowers_the_loss(straight):
    _, result, _ = straight
    assert len(result.epoch_loss) == 3 and len(result.step_loss) == 3 * 4
    assert result.epoch_loss[-1] < result.epoch_loss[0] - 0.1
    assert np.isfinite(result.step_loss).all()


def test_run_directory_layout_and_loss_curve(straight):
    run_dir, result, _ = straight
    assert result.checkpoint == str(run_dir / "final") and result.model_id.startswith("simclr-")
    assert sorted(p.name for p in run_dir.glob("epoch-*")) == ["epoch-0002", "epoch-0003"]  # keep_checkpoints=2
    assert (run_dir / "latest").read_text().strip() == "epoch-0003"
    curve = json.loads((run_dir / "loss.json").read_text())
    assert curve["step_loss"] == result.step_loss and curve["epoch_loss"] == result.epoch_loss
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from aurora_pipeline.encoder.train import loss_figure

    title = loss_figure(result.step_loss, result.epoch_loss).axes[0].get_title()  # what loss.png shows
    assert title == f"SimCLR pre-training loss (NT-Xent, eq. 3): 3 epochs, {len(result.step_loss)} steps"
    sidecar = json.loads((run_dir / "final" / "state.json").read_text())
    assert sidecar["provenance"] == {"frames": "patterns(32)"}
    assert sidecar["epoch"] == 3 and sidecar["model_id"] == result.model_id
    assert PretrainConfig.from_dict(sidecar["config"]) == CFG


def test_progress_reports(straight):
    _, result, reports = straight
    assert all(isinstance(r, TrainProgress) for r in reports)
    assert [(r.epoch, r.step) for r in reports] == [(e, s) for e in (1, 2, 3) for s in (2, 4)]
    ends = [r for r in reports if r.step == 4]
    assert [r.epoch_loss for r in ends] == pytest.approx(result.epoch_loss)
    assert all(r.images_per_second > 0 and r.steps_per_epoch == 4 for r in reports)


class Interrupt(Exception):
    pass


def interrupt_at(epoch, step):
    def report(p):
        if (p.epoch, p.step) == (epoch, step):
            raise Interrupt

    return report


def test_resume_gives_the_same_weights(straight, tmp_path):
    run_dir, result, _ = straight
    # a 1-epoch run, extended to 3 epochs and killed half-way through epoch 3, then resumed
    pretrain(FRAMES, PretrainConfig(**{**CFG.to_dict(), "epochs": 1}), tmp_path)
    with pytest.raises(Interrupt):
        pretrain(FRAMES, CFG, tmp_path, resume=True, progress=interrupt_at(3, 2))
    assert (tmp_path / "latest").read_text().strip() == "epoch-0002"
    resumed = pretrain(FRAMES, CFG, tmp_path, resume=True)
    assert_same_weights(weights(tmp_path), weights(run_dir))
    assert resumed.model_id == result.model_id and resumed.step_loss == result.step_loss
    # on a CPU with bf16 (supports_bf16) this ran in bf16 mixed precision: resume is exact there too
    assert result.mixed_precision == supports_bf16("cpu")
    again = pretrain(FRAMES, CFG, tmp_path, resume=True)  # already finished: nothing to do
    assert again.model_id == result.model_id and again.epochs == 3


def test_resume_skips_an_incomplete_checkpoint(tmp_path):
    cfg = PretrainConfig(epochs=2, batch_size=4, image_size=32, seed=1)
    pretrain(FRAMES[:8], cfg, tmp_path)
    (tmp_path / "final" / ckpt.SIDECAR_FILE).unlink()
    (tmp_path / "epoch-0002" / ckpt.ENCODER_FILE).write_bytes(b"partial")  # as if killed while saving epoch 2
    result = pretrain(FRAMES[:8], cfg, tmp_path, resume=True)  # redoes epoch 2 from epoch-0001
    fresh = pretrain(FRAMES[:8], cfg, tmp_path / "fresh")
    assert result.model_id == fresh.model_id


def test_same_seed_same_weights_in_float32(tmp_path):
    # bf16 mixed precision is covered by test_resume_gives_the_same_weights on CPUs that support it
    cfg = PretrainConfig(epochs=1, batch_size=4, image_size=32, mixed_precision=False)
    a = pretrain(FRAMES[:8], cfg, tmp_path / "a")
    b = pretrain(FRAMES[:8], cfg, tmp_path / "b")
    c = pretrain(FRAMES[:8], PretrainConfig(**{**cfg.to_dict(), "seed": 1}), tmp_path / "c")
    assert not a.mixed_precision
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert a.model_id == b.model_id != c.model_id


def test_refuses_to_overwrite_a_run(straight):
    run_dir, _, _ = straight
    with pytest.raises(CheckpointError, match="already holds a training run.*resume=True"):
        pretrain(FRAMES, CFG, run_dir)


def test_resume_refuses_other_settings_or_data(straight):
    run_dir, _, _ = straight
    with pytest.raises(CheckpointError, match=r"settings \['lr'\] differ"):
        pretrain(FRAMES, PretrainConfig(**{**CFG.to_dict(), "lr": 1e-3}), run_dir, resume=True)
    with pytest.raises(CheckpointError, match="trained on 32 frames and 30 were given"):
        pretrain(FRAMES[:30], CFG, run_dir, resume=True)


def test_small_dataset_is_one_batch(tmp_path):
    result = pretrain(FRAMES[:5], PretrainConfig(epochs=1, batch_size=128, image_size=32), tmp_path)
    assert len(result.step_loss) == 1


def test_frames_resized_to_image_size(tmp_path):
    big = np.repeat(np.repeat(FRAMES[:4], 2, axis=1), 2, axis=2)  # 64x64 frames, model at 32
    result = pretrain(big, PretrainConfig(epochs=1, batch_size=4, image_size=32), tmp_path)
    assert np.isfinite(result.step_loss).all()


def test_bad_frames_refused(tmp_path):
    with pytest.raises(BadInputError, match="at least 2"):
        pretrain(FRAMES[:1], CFG, tmp_path)
    with pytest.raises(BadInputError, match="uint8"):
        pretrain(FRAMES.astype(np.float32), CFG, tmp_path / "float")


def test_batches_are_a_seeded_permutation_without_the_last_partial_batch():
    batches = batches_of_epoch(10, 4, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [4, 4]
    assert all((np.diff(b) > 0).all() for b in batches)  # sorted, as Zarr-backed sources want
    assert len(set(np.concatenate(batches))) == 8
    again = batches_of_epoch(10, 4, torch.Generator().manual_seed(0))
    assert all((a == b).all() for a, b in zip(batches, again))


@pytest.mark.parametrize(
    "bad", [dict(epochs=0), dict(batch_size=1), dict(temperature=0.0), dict(image_size=16), dict(lr=-1.0), dict(device="gpu")]
)
def test_bad_settings_refused(bad):
    with pytest.raises(BadInputError):
        PretrainConfig(**bad)


def test_unknown_setting_refused():
    with pytest.raises(BadInputError, match="unknown setting"):
        PretrainConfig.from_dict({"epochs": 3, "learning_rate": 0.1})
    with pytest.raises(BadInputError, match="unknown setting"):
        PretrainConfig.from_dict({"augment": {"colour_jitter": 0.5}})
    assert PretrainConfig.from_dict({"augment": {"crop_scale": [0.2, 1.0]}}).augment.crop_scale == (0.2, 1.0)


# ---- embedding ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder(straight):
    return ckpt.load_encoder(straight[0])[0]


def test_embeddings_are_finite_512_vectors(encoder):
    h = embed_frames(encoder, FRAMES, EmbedConfig(batch_size=10), image_size=32)
    assert h.shape == (32, 512) and h.dtype == np.float32 and np.isfinite(h).all()
    assert np.abs(h).max() > 0 and not np.allclose(h[0], h[1])


def test_embedding_does_not_depend_on_batching(encoder):
    cfg = EmbedConfig(mixed_precision=False)
    whole = embed_frames(encoder, FRAMES, cfg, 32)
    parts = list(embed_batches(encoder, [FRAMES[:5], FRAMES[5:6], FRAMES[6:]], EmbedConfig(batch_size=4, mixed_precision=False), 32))
    assert [p.shape[0] for p in parts] == [5, 1, 26]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-4, atol=1e-5)


def test_mixed_precision_embeddings_close_to_float32(encoder):
    fp32 = embed_frames(encoder, FRAMES, EmbedConfig(mixed_precision=False), 32)
    mixed = embed_frames(encoder, FRAMES, EmbedConfig(mixed_precision=True, dtype="float16"), 32)
    assert mixed.dtype == np.float16
    cosine = (fp32 * mixed).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(mixed.astype(np.float32), axis=1)
    assert cosine.min() > 0.99


def reference_embeddings(encoder, frames: np.ndarray) -> np.ndarray:
    """The plain float32 path: the encoder as loaded, contiguous, eval mode, no folding."""
    model = encoder.to(memory_format=torch.contiguous_format).eval()
    with torch.no_grad():
        return model(frames_to_input(torch.from_numpy(frames))).numpy()


def test_default_float32_embeddings_match_the_contiguous_reference(encoder):
    """The default path (folded batch norms, channels_last on CPUs) is the same function.

    Tolerance: every frame's cosine to the reference >= 0.99999 and relative error
    <= 1e-5; measured about 5e-7 (float32 rounding of the folded weights and of the
    other convolution kernels)."""
    got = embed_frames(encoder, FRAMES, EmbedConfig(device="cpu", mixed_precision=False))
    ref = reference_embeddings(encoder, FRAMES)
    cosine = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cosine.min() >= 0.99999
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) <= 1e-5
    assert not np.allclose(ref[0], ref[1])  # the frames do give different embeddings


def test_folding_removes_every_batch_norm_and_keeps_the_function(encoder):
    folded = fold_batch_norms(encoder)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules())  # the original is untouched
    x = frames_to_input(torch.from_numpy(FRAMES[:4]))
    with torch.no_grad():
        a, b = encoder.eval()(x), folded(x)
    assert float((a - b).norm() / a.norm()) <= 1e-5


def test_inference_copy_is_reused_until_the_weights_change(encoder):
    fmt = memory_format_for("cpu", False, "embed")
    first = inference_model(encoder, torch.device("cpu"), fmt)
    assert inference_model(encoder, torch.device("cpu"), fmt) is first
    assert inference_model(encoder, torch.device("cpu"), torch.contiguous_format) is not first
    with torch.no_grad():
        encoder.conv1.weight.mul_(1.0)  # an in-place update, as an optimizer step makes
    assert inference_model(encoder, torch.device("cpu"), fmt) is not first


def test_memory_format_rule():
    cl, contiguous = torch.channels_last, torch.contiguous_format
    assert memory_format_for("cpu", True, "train") == cl and memory_format_for("cpu", True, "embed") == cl
    onednn = cl if torch.backends.mkldnn.is_available() else contiguous
    assert memory_format_for("cpu", False, "embed") == onednn and memory_format_for("cpu", False, "train") == onednn
    assert memory_format_for("cuda", True, "embed") == cl and memory_format_for("cuda", False, "embed") == contiguous
    with pytest.raises(BadInputError, match="kind of work"):
        memory_format_for("cpu", False, "infer")


def test_embedding_restores_train_mode_and_refuses_bad_frames(encoder):
    encoder.train()
    embed_frames(encoder, FRAMES[:2], EmbedConfig(), 32)
    assert encoder.training
    encoder.eval()
    with pytest.raises(BadInputError, match="uint8"):
        embed_frames(encoder, FRAMES.astype(np.int16), EmbedConfig(), 32)
    with pytest.raises(BadInputError, match="uint8"):
        list(embed_batches(encoder, [FRAMES[:2], FRAMES[:2, 0]], EmbedConfig(), 32))
    assert embed_frames(encoder, FRAMES[:0], EmbedConfig(), 32).shape == (0, 512)


def test_bad_embed_settings_refused():
    with pytest.raises(BadInputError, match="dtype"):
        EmbedConfig(dtype="int8")
    with pytest.raises(BadInputError, match="unknown setting"):
        EmbedConfig.from_dict({"batch": 4})
    assert EmbedConfig.from_dict({"batch_size": 4}).batch_size == 4


# ---- device and prefetching -----------------------------------------------------------------


def test_device_selection():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(BadInputError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BadInputError, match="sees no CUDA GPU"):
            resolve_device("cuda")
    assert isinstance(supports_bf16("cpu"), bool)


def test_prefetched_keeps_order_and_raises_producer_errors():
    assert list(prefetched(range(50), depth=3)) == list(range(50))

    def broken():
        yield 1
        raise ValueError("bad chunk")

    got = []
    with pytest.raises(ValueError, match="bad chunk"):
        for item in prefetched(broken()):
            got.append(item)
    assert got == [1]


def test_prefetched_stops_its_thread_when_closed():
    before = threading.active_count()
    items = prefetched(iter(range(10**9)), depth=2)
    assert next(items) == 0
    items.close()
    assert threading.active_count() == before
