"""Bare loops of the SimCLR encoder: the ceiling the real pipelines are measured against.

"Bare" means the model alone on float tensors already on the device, with no data
loading, uint8 conversion, resizing or augmentation: the same ResNet18 encoder and
projection head as ``aurora_pipeline.encoder.train``, the same NT-Xent loss and Adam optimizer,
and by default the same precision and memory format as the pipeline (bf16 autocast where
the hardware does bf16, ``memory_format_for``; for the forward pass, the folded-batch-norm
copy that embedding runs). ``fmt`` and ``fold`` select other variants, such as the old
contiguous float32 path. ``benchmarks/train.py`` compares ``pretrain`` with
``bare_train_rate`` and ``benchmarks/embed.py`` compares embedding with ``bare_forward_rate``.

Rates are input frames per second; a training step on N frames runs 2N views.
"""

from __future__ import annotations

import time

import torch

from aurora_pipeline.device import autocast, memory_format_for
from aurora_pipeline.encoder import ProjectionHead, nt_xent_loss, resnet18_encoder
from aurora_pipeline.encoder.backbone import fold_batch_norms


def make_model(device: torch.device, mixed: bool, seed: int = 0, fmt: torch.memory_format | None = None):
    """Encoder, head and Adam (lr 3e-4) as ``pretrain`` builds them (``fmt`` None: the training rule)."""
    fmt = memory_format_for(device, mixed, "train") if fmt is None else fmt
    torch.manual_seed(seed)
    encoder = resnet18_encoder().to(device, memory_format=fmt)
    head = ProjectionHead().to(device)
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=3e-4)
    return encoder, head, optimizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_train_step_seconds(device: torch.device, mixed: bool, batch_size: int = 128, image_size: int = 128, steps: int = 4, warmup: int = 1,
                            fmt: torch.memory_format | None = None) -> list[float]:
    """Wall-clock seconds of each SimCLR step on fixed random views already on ``device``
    (``fmt`` None: the memory format ``pretrain`` uses)."""
    fmt = memory_format_for(device, mixed, "train") if fmt is None else fmt
    encoder, head, optimizer = make_model(device, mixed, fmt=fmt)
    views = torch.rand(2 * batch_size, 1, image_size, image_size, device=device).contiguous(memory_format=fmt)

    def step():
        with autocast(device, mixed):
            z = head(encoder(views))
        loss = nt_xent_loss(z, 0.5)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # waits for the device, as pretrain's progress report does

    for _ in range(warmup):
        step()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return seconds


def bare_train_rate(device: torch.device, mixed: bool, batch_size: int = 128, image_size: int = 128, steps: int = 4, warmup: int = 1,
                    fmt: torch.memory_format | None = None) -> float:
    """Frames per second of SimCLR steps on fixed random views already on ``device``."""
    seconds = bare_train_step_seconds(device, mixed, batch_size, image_size, steps, warmup, fmt)
    return len(seconds) * batch_size / sum(seconds)


def bare_forward_rate(device: torch.device, mixed: bool, batch_size: int = 512, image_size: int = 128, batches: int = 4, warmup: int = 1,
                      fmt: torch.memory_format | None = None, fold: bool = True) -> float:
    """Frames per second of the encoder's eval-mode forward pass on a batch already on ``device``.

    Defaults: the model embedding runs (batch norms folded, ``memory_format_for(..., "embed")``).
    ``fmt=torch.contiguous_format, fold=False`` with ``mixed=False`` is the old float32 path.
    """
    fmt = memory_format_for(device, mixed, "embed") if fmt is None else fmt
    torch.manual_seed(0)
    encoder = resnet18_encoder().eval()
    encoder = (fold_batch_norms(encoder) if fold else encoder).to(device, memory_format=fmt)
    x = torch.rand(batch_size, 1, image_size, image_size, device=device).contiguous(memory_format=fmt)
    with torch.inference_mode():
        for _ in range(warmup):
            with autocast(device, mixed):
                encoder(x)
        _sync(device)
        start = time.perf_counter()
        for _ in range(batches):
            with autocast(device, mixed):
                encoder(x).float()
        _sync(device)
    return batches * batch_size / (time.perf_counter() - start)
