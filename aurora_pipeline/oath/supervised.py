"""A supervised ResNet18 classifier, the comparison model of the paper's Table I.

Johnson et al. (2021) compare SimCLR with "fine-tuning an ImageNet-pretrained
ResNet18" (84.7% on OATH) but give no recipe. Ours, chosen to differ from the SimCLR
run in the labels only:

* the same 1-channel ResNet18 as the SimCLR encoder (``simclr.backbone``), followed by
  one linear layer to the classes; every weight is trained (no frozen layers);
* from random initialisation by default, or from a user-supplied torchvision ResNet18
  ImageNet weights file (``imagenet_weights``; nothing is ever downloaded). Its 3-channel
  ``conv1`` is made 1-channel by summing the RGB kernels, so a grey frame x gives what
  the RGB network gives for (x, x, x); the ImageNet mean/std input normalisation is not
  applied (batch norm, trained here, absorbs the offset and scale);
* cross-entropy, Adam, no weight decay, one augmented view per frame per step with
  SimCLR's augmentations (random resized crop + top-bottom flip, ``simclr.augment``);
* bf16 autocast and channels_last where the device does bf16 natively (``device``).

Defaults: 30 epochs at batch 128 (about 960 Adam steps on OATH's 4,077 training
frames; the training loss is close to zero by then on OATH-sized data), learning rate
1e-3 from random init. For ImageNet weights use a smaller rate (the OATH protocol
uses 1e-4) so the pretrained features are not washed out in the first steps.

Reproducibility: initial weights, batch order and augmentations come from seeds
derived from ``seed`` (CPU generators), as in ``aurora_pipeline.encoder.train``.

Example:
    >>> result = train_supervised(frames, labels, 6, SupervisedConfig(epochs=30))
    >>> pred = predict_supervised(result.model, test_frames, SupervisedConfig())  # (m,) int64
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aurora_pipeline.device import autocast, check_device_name, memory_format, resolve_device, use_mixed_precision
from aurora_pipeline.embed.model import EmbedConfig, embed_frames
from aurora_pipeline.config import config_from_dict
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.encoder.augment import AugmentConfig, apply_params, sample_params
from aurora_pipeline.encoder.backbone import REPRESENTATION_DIM, frames_to_input, resnet18_encoder
from aurora_pipeline.encoder.train import batches_of_epoch

__all__ = [
    "SupervisedConfig",
    "SupervisedProgress",
    "SupervisedResult",
    "imagenet_resnet18_encoder",
    "predict_supervised",
    "supervised_resnet18",
    "train_supervised",
]


@dataclass(frozen=True)
class SupervisedConfig:
    epochs: int = 30                     # passes over the training frames (paper: unstated)
    batch_size: int = 128                # frames per Adam step (as the SimCLR run)
    lr: float = 1e-3                     # Adam, fixed; use ~1e-4 when starting from ImageNet weights
    weight_decay: float = 0.0            # as the SimCLR run
    image_size: int = 128                # frames are resized to this side (pixels) on the device
    seed: int = 0                        # initial weights, batch order and augmentations
    device: str = "auto"                 # "auto" (GPU if any), "cpu" or "cuda"
    mixed_precision: bool = True         # bf16 autocast + channels_last where the hardware does bf16
    augment: AugmentConfig = AugmentConfig()  # SimCLR's crop + top-bottom flip, one view per frame
    imagenet_weights: str | None = None  # torchvision resnet18 state-dict file; None: random init
    num_threads: int | None = None       # torch CPU threads (None: leave torch's setting)

    def __post_init__(self):
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", AugmentConfig(**self.augment))
        for name in ("epochs", "batch_size", "image_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise BadInputError(name, f"must be a positive integer, got {value!r}.", f"use e.g. {getattr(SupervisedConfig, name)}.")
        if self.batch_size < 2:
            raise BadInputError("batch_size", "must be >= 2 (batch norm needs two frames per step).", "use 128.")
        if self.image_size < 32:
            raise BadInputError("image_size", f"must be >= 32 pixels for ResNet18, got {self.image_size}.", "use 128.")
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise BadInputError("lr/weight_decay", f"need lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}.", "use 1e-3 and 0.")
        if self.num_threads is not None and self.num_threads < 1:
            raise BadInputError("num_threads", f"must be None or >= 1, got {self.num_threads}.", "use None.")
        check_device_name(self.device)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SupervisedConfig":
        """Build from a plain dict (e.g. results.json's config); unknown keys are an error."""
        return config_from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SupervisedProgress:
    """Reported after every epoch."""

    epoch: int                # 1-based
    epochs: int
    loss: float               # mean cross-entropy of the epoch's steps
    images_per_second: float  # training frames per second during the epoch


@dataclass(frozen=True)
class SupervisedResult:
    model: nn.Module = field(repr=False)  # (n, 1, S, S) float in [0, 1] -> (n, k) logits, in eval mode
    epoch_loss: list[float]
    seconds: float                        # wall time of the training loop
    images_per_second: float              # training frames per second, all epochs
    device: str
    mixed_precision: bool
    n_parameters: int


def imagenet_resnet18_encoder(path: str | os.PathLike) -> nn.Module:
    """The 1-channel ResNet18 encoder (``simclr.backbone``) with ImageNet weights.

    Args:
        path: a torchvision ``resnet18`` state-dict file (e.g. ``resnet18-f37072fd.pth``
            as torchvision saves it), read with ``torch.load(weights_only=True)``.

    Returns:
        The encoder, (n, 1, H, W) -> (n, 512); ``conv1`` holds the sum of the RGB kernels,
        the ImageNet ``fc`` layer is dropped.

    Raises:
        BadInputError: the file is missing, not a safe-loadable state dict, or not a
            torchvision ResNet18's weights.
    """
    path = Path(path)
    fix = "pass the torchvision ResNet18 ImageNet weights file (resnet18-f37072fd.pth, a plain state dict)."
    if not path.is_file():
        raise BadInputError(path, "the ImageNet weights file does not exist.", fix)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling fails in many ways; the cause is kept in the message
        raise BadInputError(path, f"cannot be read as a weights-only torch file ({err}).", fix) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInputError(path, "does not hold a plain state dict of tensors.", fix)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    conv1 = state.get("conv1.weight")
    if conv1 is not None and conv1.ndim == 4 and conv1.shape[1] == 3:
        state["conv1.weight"] = conv1.sum(dim=1, keepdim=True)
    encoder = resnet18_encoder()
    expected = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(expected.keys() - found.keys())
    extra = sorted(found.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
    if missing or extra or wrong:
        raise BadInputError(
            path,
            f"is not a torchvision ResNet18 state dict: {len(missing)} tensors missing (e.g. {missing[:3]}), "
            f"{len(extra)} unexpected (e.g. {extra[:3]}), wrong shapes for {wrong[:3]}.",
            fix,
        )
    encoder.load_state_dict(state, strict=True)
    return encoder


def supervised_resnet18(n_classes: int, imagenet_weights: str | os.PathLike | None = None) -> nn.Sequential:
    """ResNet18 encoder + linear head: (n, 1, H, W) float in [0, 1] -> (n, n_classes) logits.

    Random initialisation draws from torch's global generator (seed it for a
    reproducible model); with ``imagenet_weights`` only the head is random.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise BadInputError("n_classes", f"must be an integer >= 2, got {n_classes!r}.", "count the classes.")
    encoder = resnet18_encoder() if imagenet_weights is None else imagenet_resnet18_encoder(imagenet_weights)
    return nn.Sequential(encoder, nn.Linear(REPRESENTATION_DIM, int(n_classes)))


def _seeds(seed: int) -> tuple[int, int, int]:
    model_seed, order_seed, augment_seed = np.random.SeedSequence([seed, 7]).generate_state(3, dtype=np.uint32)
    return int(model_seed), int(order_seed), int(augment_seed)


def _check_training_data(frames: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    frames, labels = np.asarray(frames), np.asarray(labels)
    if frames.dtype != np.uint8 or frames.ndim != 3 or len(frames) < 2:
        raise BadInputError("frames", f"expected >= 2 uint8 frames (n, H, W), got {frames.dtype} {frames.shape}.",
                            "pass preprocessed frames (uint8, 0..255 meaning 0..1).")
    if labels.shape != (len(frames),) or labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= n_classes:
        raise BadInputError("labels", f"need {len(frames)} integer class indices in 0..{n_classes - 1}, "
                            f"got {labels.dtype} {labels.shape}.", "pass one class index per frame.")
    return frames, labels.astype(np.int64)


def train_supervised(
    frames: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    cfg: SupervisedConfig = SupervisedConfig(),
    progress: Callable[[SupervisedProgress], None] | None = None,
) -> SupervisedResult:
    """Train the ResNet18 classifier on labelled frames.

    Each epoch draws a seeded permutation and cuts it into full batches of
    ``cfg.batch_size`` (the remainder is left for another epoch; a training set smaller
    than one batch is one batch). Each frame gets one random view per step.

    Args:
        frames: (n, H, W) uint8 training frames (0..255 meaning 0..1).
        labels: (n,) int class indices in 0..n_classes-1.
        n_classes: k, the number of outputs.
        cfg: the settings.
        progress: called with a ``SupervisedProgress`` after every epoch.

    Returns:
        ``SupervisedResult`` whose ``model`` (in eval mode, on the training device)
        maps (n, 1, S, S) to (n, k) logits.

    Raises:
        BadInputError: frames not uint8 (n, H, W), labels out of range, bad settings or
            an unusable ImageNet weights file.
    """
    frames, labels = _check_training_data(frames, labels, n_classes)
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    mixed = use_mixed_precision(device, cfg.mixed_precision)
    model_seed, order_seed, augment_seed = _seeds(cfg.seed)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(model_seed)
        model = supervised_resnet18(n_classes, cfg.imagenet_weights)
    model = model.to(device, memory_format=memory_format(mixed)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    order_gen = torch.Generator().manual_seed(order_seed)
    augment_gen = torch.Generator().manual_seed(augment_seed)
    size = cfg.image_size
    epoch_loss, seen, start = [], 0, time.perf_counter()
    for epoch in range(cfg.epochs):
        epoch_start, losses = time.perf_counter(), []
        batches = batches_of_epoch(len(frames), cfg.batch_size, order_gen)
        for index in batches:
            x = frames_to_input(torch.from_numpy(frames[index]).to(device), size)
            params = sample_params(len(index), cfg.augment, augment_gen, (size, size))
            x = apply_params(x, params.to(device), size).contiguous(memory_format=memory_format(mixed))
            target = torch.from_numpy(labels[index]).to(device)
            with autocast(device, mixed):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        epoch_frames = sum(len(b) for b in batches)
        seen += epoch_frames
        epoch_loss.append(float(torch.stack(losses).double().mean().cpu()))  # one device sync per epoch
        if progress is not None:
            rate = epoch_frames / (time.perf_counter() - epoch_start)
            progress(SupervisedProgress(epoch + 1, cfg.epochs, epoch_loss[-1], rate))
    seconds = time.perf_counter() - start
    return SupervisedResult(
        model=model.eval(),
        epoch_loss=epoch_loss,
        seconds=seconds,
        images_per_second=seen / seconds if seconds > 0 else float("nan"),
        device=str(device),
        mixed_precision=mixed,
        n_parameters=sum(p.numel() for p in model.parameters()),
    )


def predict_supervised(model: nn.Module, frames: np.ndarray, cfg: SupervisedConfig = SupervisedConfig()) -> np.ndarray:
    """Most probable class of each frame, (n,) int64 (frames resized to ``cfg.image_size``, no augmentation).

    Raises:
        BadInputError: frames not uint8 (n, H, W).
    """
    # embed_frames runs any (n, 1, S, S) -> (n, d) model over uint8 frames in eval mode;
    # here d is the number of classes and the outputs are logits.
    logits = embed_frames(model, frames, EmbedConfig(batch_size=256, device=cfg.device, mixed_precision=cfg.mixed_precision),
                          image_size=cfg.image_size)
    return np.argmax(logits, axis=1).astype(np.int64)
