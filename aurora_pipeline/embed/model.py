"""Embedding frames with a trained encoder: uint8 frames in, 512-d representations h out.

This is the in-memory core; ``aurora_pipeline.embed.driver`` reads frames from and
writes embeddings to the Zarr store with these functions.

The encoder runs as an eval-mode copy with its batch norms folded into the
convolutions (``backbone.fold_batch_norms``), under ``torch.inference_mode``, in the
memory format ``aurora_pipeline.device.memory_format_for`` picks for embedding
(channels_last on CPUs, also in float32), with bf16 autocast where the device does
bf16 natively; the output is cast back to float32 (or float16 if asked). In float32
the result equals the plain contiguous forward pass of the unfolded model up to
rounding (cosine >= 0.99999 per frame, tested); bf16 embeddings differ from float32
ones by about 1% relative: set ``mixed_precision=False`` for float32 throughout.

Example:
    >>> encoder, meta = load_encoder("runs/simclr/final")
    >>> h = embed_frames(encoder, frames, EmbedConfig(), image_size=meta["config"]["image_size"])
    >>> h.shape, h.dtype                          # (n, 512), float32
"""

from __future__ import annotations

import weakref
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from aurora_pipeline.device import autocast, memory_format_for, prefetched, resolve_device, use_mixed_precision
from aurora_pipeline.embed.config import EmbedConfig
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.encoder.backbone import REPRESENTATION_DIM, fold_batch_norms, frames_to_input

def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 3:
        raise BadInputError(
            "frames",
            f"expected uint8 frames of shape (n, H, W), got {frames.dtype} {frames.shape}.",
            "pass preprocessed frames as stored (uint8, 0..255 meaning 0..1).",
        )
    return frames


def embed_batches(
    model: nn.Module,
    batches: Iterable[np.ndarray],
    cfg: EmbedConfig = EmbedConfig(),
    image_size: int | None = None,
) -> Iterator[np.ndarray]:
    """Embed a stream of frame batches, one output array per input batch, in order.

    A background thread pulls the next batch from ``batches`` (so reading it from disk
    or object storage overlaps compute) and stages it for the device. Batches larger
    than ``cfg.batch_size`` are split for the forward passes.

    Args:
        model: the encoder, (n, 1, S, S) -> (n, 512). It is left as it is: an
            eval-mode copy with folded batch norms runs on the device.
        batches: iterable of (k, H, W) uint8 arrays.
        cfg: device, precision, chunk size, output dtype.
        image_size: S, the side the model was trained at; frames of another size are
            resized (bilinear, antialiased). None: use the frames as they are.

    Yields:
        (k, 512) arrays of ``cfg.dtype``.

    Raises:
        BadInputError: a batch that is not uint8 (k, H, W).
    """
    device = resolve_device(cfg.device)
    mixed = use_mixed_precision(device, cfg.mixed_precision)
    fmt = memory_format_for(device, mixed, "embed")
    runner = inference_model(model, device, fmt)
    pin = device.type == "cuda"

    def staged() -> Iterator[torch.Tensor]:
        for batch in batches:
            tensor = torch.from_numpy(np.ascontiguousarray(_check_frames(batch)))
            yield tensor.pin_memory() if pin else tensor

    loader = prefetched(staged())
    try:
        for batch in loader:
            with torch.inference_mode():  # not held across the yield, which runs the caller's code
                parts = [_forward(runner, part, device, mixed, fmt, image_size) for part in torch.split(batch, cfg.batch_size)]
                out = torch.cat(parts).cpu().numpy() if parts else np.empty((0, REPRESENTATION_DIM), np.float32)
            yield out.astype(cfg.dtype, copy=False)
    finally:
        loader.close()  # stops the loading thread now, not when the generator is garbage-collected


# model -> (state key, folded copy): the store driver embeds hour by hour with one model,
# and folding it again for every hour would cost as much as embedding the hour on a GPU.
_RUNNERS: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]]" = weakref.WeakKeyDictionary()


def inference_model(model: nn.Module, device: torch.device, fmt: torch.memory_format) -> nn.Module:
    """The copy of ``model`` that embedding runs: eval mode, batch norms folded, on
    ``device`` in memory format ``fmt``, no gradients. ``model`` itself is not changed.

    The copy is reused while ``model``'s weights and buffers are unchanged (same
    storage, same in-place version counters), so training the model between two
    calls gives a fresh copy.
    """
    tensors = [*model.parameters(), *model.buffers()]
    key = (str(device), fmt, tuple((t.data_ptr(), t._version) for t in tensors))
    cached = _RUNNERS.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    with torch.no_grad():
        runner = fold_batch_norms(model).to(device, memory_format=fmt).requires_grad_(False)
    _RUNNERS[model] = (key, runner)
    return runner


def _forward(model: nn.Module, frames: torch.Tensor, device: torch.device, mixed: bool, fmt: torch.memory_format,
             image_size: int | None) -> torch.Tensor:
    x = frames_to_input(frames.to(device, non_blocking=True), image_size)
    x = x.contiguous(memory_format=fmt)
    with autocast(device, mixed):
        h = model(x)
    return h.float()


def embed_frames(model: nn.Module, frames_uint8: np.ndarray, cfg: EmbedConfig = EmbedConfig(), image_size: int | None = None) -> np.ndarray:
    """Embed an in-memory array of frames.

    Args:
        model: the encoder (see ``embed_batches``).
        frames_uint8: (n, H, W) uint8, 0..255 meaning 0..1.
        cfg: device, precision, chunk size, output dtype.
        image_size: the side the model was trained at (frames are resized to it), or None.

    Returns:
        (n, 512) array of ``cfg.dtype`` (float32 by default).

    Raises:
        BadInputError: frames not uint8 (n, H, W).
    """
    frames = _check_frames(frames_uint8)
    chunks = (frames[i : i + cfg.batch_size] for i in range(0, len(frames), cfg.batch_size))
    parts = list(embed_batches(model, chunks, cfg, image_size))
    return np.concatenate(parts) if parts else np.empty((0, REPRESENTATION_DIM), dtype=cfg.dtype)
