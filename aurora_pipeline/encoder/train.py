"""SimCLR pre-training of the encoder (paper section III.C), with checkpoints and resume.

The loop, top to bottom: each epoch draws a seeded permutation of the frames and cuts
it into batches of ``batch_size`` frames (the last, smaller batch is dropped); a
background thread reads the next batch's uint8 frames and draws its augmentation
parameters while the device works on the current one; on the device each frame is
scaled to [0, 1], resized to ``image_size``, turned into two views, and one Adam step
is taken on the NT-Xent loss. After every epoch a complete checkpoint is written
(``aurora_pipeline.encoder.checkpoint``) together with the loss curve (``loss.json``,
``loss.png``); after the last, ``final/``.

Reproducibility: the model's initial weights, the permutations and the augmentations
come from three seeds derived from ``seed``, the latter two from CPU
``torch.Generator`` objects whose states are checkpointed. On the CPU the same seed
gives bit-identical weights, in float32 and in bf16 mixed precision (tested with a
fixed thread count), and ``resume=True`` after an interruption gives the same weights
as an uninterrupted run. On a GPU, cuDNN may pick non-deterministic kernels.

``images_per_second`` counts input frames (each frame makes two views).

Example:
    >>> frames = np.load("frames.npy")                # (n, 128, 128) uint8
    >>> result = pretrain(frames, PretrainConfig(epochs=100), "runs/simclr-2024")
    >>> result.model_id, result.checkpoint            # 'simclr-3f2a...', 'runs/simclr-2024/final'
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch
from torch import nn

from aurora_pipeline.atomic import atomic_path, atomic_write
from aurora_pipeline.encoder import checkpoint as ckpt
from aurora_pipeline.encoder.config import PretrainConfig
from aurora_pipeline.device import autocast, memory_format, memory_format_for, prefetched, resolve_device, use_mixed_precision
from aurora_pipeline.errors import BadInputError, CheckpointError
from aurora_pipeline.encoder.augment import AugmentParams, apply_params, sample_params
from aurora_pipeline.encoder.backbone import REPRESENTATION_DIM, frames_to_input, resnet18_encoder
from aurora_pipeline.encoder.head import ProjectionHead
from aurora_pipeline.encoder.loss import nt_xent_loss

log = logging.getLogger(__name__)

# Settings that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = ("epochs", "device", "num_threads", "log_every", "keep_checkpoints")


class FrameSource(Protocol):
    """What ``pretrain`` reads frames from: a numpy array, a Zarr-backed reader..."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: np.ndarray) -> np.ndarray: ...  # sorted int indices -> (k, H, W) uint8


@dataclass(frozen=True)
class TrainProgress:
    """One progress report: every ``log_every`` steps and at the end of each epoch."""

    epoch: int                # 1-based
    epochs: int
    step: int                 # 1-based step within the epoch
    steps_per_epoch: int
    loss: float               # mean loss of the steps since the previous report
    images_per_second: float  # frames per second since the previous report
    epoch_loss: float | None = None  # mean loss of the epoch, on the epoch's last report


@dataclass(frozen=True)
class TrainResult:
    checkpoint: str           # the final/ directory
    model_id: str             # "simclr-" + 16 hex digits of the encoder weights' sha256
    epochs: int
    step_loss: list[float] = field(repr=False)
    epoch_loss: list[float] = field(repr=False)
    images_per_second: float  # mean training frames/s of this call (nan if it trained nothing)
    device: str
    mixed_precision: bool


def _seeds(seed: int) -> tuple[int, int, int]:
    model_seed, order_seed, augment_seed = np.random.SeedSequence(seed).generate_state(3, dtype=np.uint32)
    return int(model_seed), int(order_seed), int(augment_seed)


def build_model(cfg: PretrainConfig, device: torch.device, channels_last: bool) -> tuple[nn.Module, nn.Module]:
    """Encoder and projection head with seeded initial weights, on ``device`` (the
    encoder channels_last or contiguous; ``pretrain`` follows ``memory_format_for``)."""
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(_seeds(cfg.seed)[0])
        encoder = resnet18_encoder()
        head = ProjectionHead(REPRESENTATION_DIM, cfg.projection_hidden_dim, cfg.projection_dim)
    encoder = encoder.to(device, memory_format=memory_format(channels_last))
    return encoder, head.to(device)


def batches_of_epoch(n_frames: int, batch_size: int, generator: torch.Generator) -> list[np.ndarray]:
    """Sorted frame indices of each batch: a permutation cut into full batches.

    A dataset smaller than ``batch_size`` is one batch of everything.
    """
    order = torch.randperm(n_frames, generator=generator).numpy()
    if n_frames < batch_size:
        return [np.sort(order)]
    full = n_frames // batch_size
    return [np.sort(order[i * batch_size : (i + 1) * batch_size]) for i in range(full)]


def _load_batches(frames, batches, cfg: PretrainConfig, generator: torch.Generator, pin: bool) -> Iterator[tuple[torch.Tensor, AugmentParams]]:
    """Runs in the prefetch thread: uint8 frames and augmentation draws of each batch."""
    for index in batches:
        batch = np.asarray(frames[index])
        if batch.dtype != np.uint8 or batch.ndim != 3 or batch.shape[0] != len(index):
            raise BadInputError(
                "frames",
                f"frames[{len(index)} indices] gave {batch.dtype} {batch.shape}, expected uint8 ({len(index)}, H, W).",
                "give preprocessed uint8 frames (0..255 meaning 0..1).",
            )
        tensor = torch.from_numpy(np.ascontiguousarray(batch))
        params = sample_params(2 * len(index), cfg.augment, generator, (cfg.image_size, cfg.image_size))
        yield (tensor.pin_memory(), params.pin_memory()) if pin else (tensor, params)


def pretrain(
    frames: FrameSource,
    cfg: PretrainConfig,
    checkpoint_dir: str | Path,
    *,
    resume: bool = False,
    progress: Callable[[TrainProgress], None] | None = None,
    provenance: dict[str, Any] | None = None,
    preprocess: dict[str, Any] | None = None,
) -> TrainResult:
    """Train the SimCLR encoder and head on ``frames``; checkpoint every epoch.

    Args:
        frames: ``len(frames)`` >= 2 and ``frames[sorted int indices]`` -> (k, H, W) uint8.
        cfg: the settings (``PretrainConfig``).
        checkpoint_dir: local directory for the run; must hold no checkpoint unless resuming.
        resume: continue from the newest complete checkpoint in ``checkpoint_dir`` (a
            fresh start if there is none; nothing to do if it already reached
            ``cfg.epochs``). Only ``epochs``, ``device``, ``num_threads``, ``log_every``
            and ``keep_checkpoints`` may differ from the interrupted run.
        progress: called with a ``TrainProgress`` every ``log_every`` steps and at the
            end of each epoch.
        provenance: JSON-serialisable facts about the training data, saved in the sidecar.
        preprocess: the preprocessing setting of the frames (the store's ``setting()``),
            recorded in the sidecar and the model id: ``embed`` then refuses a store of
            another setting. None: not recorded (frames of unknown preparation).

    Returns:
        ``TrainResult`` with the final checkpoint, model id and loss history.

    Raises:
        BadInputError: too few frames, frames not uint8 (n, H, W), bad settings.
        CheckpointError: ``checkpoint_dir`` already holds a run (without ``resume``),
            or the run to resume was made with other settings or data.
    """
    n_frames = len(frames)
    if n_frames < 2:
        raise BadInputError("frames", f"{n_frames} frame(s); SimCLR needs at least 2 (other frames are the negatives).", "give more frames.")
    run_dir = Path(checkpoint_dir)
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    mixed = use_mixed_precision(device, cfg.mixed_precision)
    encoder, head = build_model(cfg, device, memory_format_for(device, mixed, "train") == torch.channels_last)
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay)
    _, order_seed, augment_seed = _seeds(cfg.seed)
    order_gen = torch.Generator().manual_seed(order_seed)
    augment_gen = torch.Generator().manual_seed(augment_seed)
    start_epoch, step_loss, epoch_loss = 0, [], []
    if resume and ckpt.latest_complete(run_dir) is not None:
        start_epoch, step_loss, epoch_loss = _restore(run_dir, cfg, n_frames, encoder, head, optimizer, order_gen, augment_gen)
    elif not resume and run_dir.exists() and ckpt.has_checkpoints(run_dir):
        raise CheckpointError(
            f"{run_dir}: already holds a training run; refusing to overwrite it. "
            "Fix: pass resume=True to continue it, or choose another checkpoint directory."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / ckpt.FINAL_DIR
    if start_epoch >= cfg.epochs and (final / ckpt.SIDECAR_FILE).exists():  # resuming a finished run
        sidecar, _ = ckpt.read_verified(str(final))
        return TrainResult(str(final), sidecar["model_id"], start_epoch, step_loss, epoch_loss, float("nan"), str(device), mixed)
    meta = {"config": cfg.to_dict(), "provenance": provenance or {}, "n_frames": n_frames, "device": str(device), "mixed_precision_used": mixed}
    if preprocess is not None:
        meta["preprocess"] = preprocess
    speed = _Speed()
    encoder.train(), head.train()
    for epoch in range(start_epoch, cfg.epochs):
        batches = batches_of_epoch(n_frames, cfg.batch_size, order_gen)
        report = _Reporter(epoch, cfg, len(batches), progress, speed, warm_up=epoch == start_epoch)
        loader = prefetched(_load_batches(frames, batches, cfg, augment_gen, pin=device.type == "cuda"))
        with contextlib.closing(loader):  # stops the loading thread at once if a step raises
            for step, (batch, params) in enumerate(loader, start=1):
                loss = train_step(encoder, head, optimizer, batch, params, cfg, device, mixed)
                report.step(step, loss, batch.shape[0])
        step_loss.extend(report.losses)
        epoch_loss.append(float(np.mean(report.losses)))
        name = ckpt.epoch_dir_name(epoch + 1)
        state = _training_state(optimizer, order_gen, augment_gen, step_loss, epoch_loss)
        ckpt.save_checkpoint(run_dir / name, encoder=encoder, head=head, training_state=state, meta={**meta, "epoch": epoch + 1})
        ckpt.write_latest(run_dir, name)
        ckpt.prune_epochs(run_dir, cfg.keep_checkpoints)
        write_loss_curve(run_dir, step_loss, epoch_loss)
    epochs = max(cfg.epochs, start_epoch)
    state = _training_state(optimizer, order_gen, augment_gen, step_loss, epoch_loss)
    sidecar = ckpt.save_checkpoint(final, encoder=encoder, head=head, training_state=state, meta={**meta, "epoch": epochs})
    return TrainResult(str(final), sidecar["model_id"], epochs, step_loss, epoch_loss, speed.rate(), str(device), mixed)


def train_step(encoder, head, optimizer, batch: torch.Tensor, params: AugmentParams, cfg: PretrainConfig, device, mixed: bool) -> torch.Tensor:
    """One SimCLR step on a batch of uint8 frames (k, H, W); returns the loss (on the device, not synced)."""
    x = frames_to_input(batch.to(device, non_blocking=True), cfg.image_size)
    views = apply_params(x.repeat_interleave(2, dim=0), params.to(device, non_blocking=True), cfg.image_size)
    views = views.contiguous(memory_format=memory_format_for(device, mixed, "train"))
    with autocast(device, mixed):
        z = head(encoder(views))
    loss = nt_xent_loss(z, cfg.temperature)  # in float32 whatever the autocast
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


class _Speed:
    """Training frames per second over a call, leaving out the first (warm-up) report."""

    def __init__(self):
        self.frames, self.seconds = 0, 0.0

    def rate(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


class _Reporter:
    """Collects an epoch's losses, syncing with the device only every ``log_every`` steps."""

    def __init__(self, epoch: int, cfg: PretrainConfig, n_steps: int, progress, speed: _Speed, warm_up: bool):
        self.epoch, self.cfg, self.n_steps, self.progress, self.speed, self.warm_up = epoch, cfg, n_steps, progress, speed, warm_up
        self.losses: list[float] = []
        self.pending: list[torch.Tensor] = []
        self.mark, self.frames = time.perf_counter(), 0

    def step(self, step: int, loss: torch.Tensor, n_frames: int) -> None:
        self.pending.append(loss)
        self.frames += n_frames
        if step % self.cfg.log_every and step != self.n_steps:
            return
        recent = torch.stack(self.pending).double().cpu().tolist()  # waits for the device
        self.losses.extend(recent)
        seconds = time.perf_counter() - self.mark
        if not self.warm_up:
            self.speed.frames, self.speed.seconds = self.speed.frames + self.frames, self.speed.seconds + seconds
        last = step == self.n_steps
        report = TrainProgress(
            self.epoch + 1, self.cfg.epochs, step, self.n_steps, float(np.mean(recent)), self.frames / seconds,
            float(np.mean(self.losses)) if last else None,
        )
        log.info("epoch %d/%d step %d/%d loss %.4f %.1f frames/s", report.epoch, report.epochs, step, self.n_steps, report.loss, report.images_per_second)
        if self.progress is not None:
            self.progress(report)
        self.pending, self.warm_up = [], False
        self.mark, self.frames = time.perf_counter(), 0


def _training_state(optimizer, order_gen, augment_gen, step_loss, epoch_loss) -> dict[str, Any]:
    """What a checkpoint needs besides the weights to resume exactly (tensors only)."""
    return {
        "optimizer": optimizer.state_dict(),
        "order_rng": order_gen.get_state(),
        "augment_rng": augment_gen.get_state(),
        "step_loss": torch.tensor(step_loss, dtype=torch.float64),
        "epoch_loss": torch.tensor(epoch_loss, dtype=torch.float64),
    }


def _restore(run_dir, cfg, n_frames, encoder, head, optimizer, order_gen, augment_gen) -> tuple[int, list[float], list[float]]:
    """Load the newest complete checkpoint into the model, optimizer and generators."""
    where = ckpt.latest_complete(run_dir)
    sidecar, blobs, state = ckpt.load_training_state(where)
    saved = PretrainConfig.from_dict(sidecar["config"]).to_dict()
    changed = sorted(k for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES and saved[k] != v)
    if changed:
        raise CheckpointError(
            f"{where}: cannot resume, settings {changed} differ from the interrupted run "
            f"(was {[saved[k] for k in changed]}). Fix: resume with the run's settings, or start a new checkpoint directory."
        )
    if sidecar.get("n_frames") != n_frames:
        raise CheckpointError(
            f"{where}: cannot resume, the run trained on {sidecar.get('n_frames')} frames and {n_frames} were given. "
            "Fix: resume with the same training frames, or start a new checkpoint directory."
        )
    ckpt.load_weights(encoder, blobs[ckpt.ENCODER_FILE], f"{where}/{ckpt.ENCODER_FILE}")
    ckpt.load_weights(head, blobs[ckpt.HEAD_FILE], f"{where}/{ckpt.HEAD_FILE}")
    optimizer.load_state_dict(state["optimizer"])
    order_gen.set_state(state["order_rng"])
    augment_gen.set_state(state["augment_rng"])
    log.info("resuming %s after epoch %d", run_dir, sidecar["epoch"])
    return int(sidecar["epoch"]), state["step_loss"].tolist(), state["epoch_loss"].tolist()


def loss_figure(step_loss: list[float], epoch_loss: list[float]):
    """The loss curve (per step, and each epoch's mean) as a matplotlib Figure, 6 x 3.5 inches,
    titled with what it is and how far the training got."""
    # matplotlib: only for the loss figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(np.arange(1, len(step_loss) + 1), step_loss, lw=0.6, alpha=0.6, label="step")
    steps_per_epoch = len(step_loss) / max(len(epoch_loss), 1)
    axes.plot(steps_per_epoch * np.arange(1, len(epoch_loss) + 1), epoch_loss, "o-", ms=3, label="epoch mean")
    axes.set_xlabel("step")
    axes.set_ylabel("NT-Xent loss")
    n = len(epoch_loss)
    axes.set_title(f"SimCLR pre-training loss (NT-Xent, eq. 3): {n} epoch{'s' * (n != 1)}, {len(step_loss)} steps",
                   fontsize=10)
    axes.legend()
    figure.tight_layout()
    return figure


def write_loss_curve(run_dir: Path, step_loss: list[float], epoch_loss: list[float]) -> None:
    """``loss.json`` (per step and per epoch mean) and ``loss.png`` (``loss_figure``) in ``run_dir``."""
    text = json.dumps({"step_loss": step_loss, "epoch_loss": epoch_loss, "loss": "NT-Xent, eq. 3"}, indent=1)
    atomic_write(run_dir / "loss.json", text)
    figure = loss_figure(step_loss, epoch_loss)
    with atomic_path(run_dir / "loss.png") as tmp:
        figure.savefig(tmp, format="png")
