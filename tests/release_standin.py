"""A stand-in for the published encoder file (aurora-fm-no-finetune.tar), which these machines
cannot fetch: a state dict of its exact layout (3-channel torchvision ResNet18 without fc as
``encoder.*``, the bias-free 512 -> 512 -> 64 projector), random weights and non-trivial
batch-norm statistics, saved with ``torch.save`` like the release."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn


def release_like_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of the release's layout; every batch norm has its own running mean and variance
    (and affine weights), so a conversion that dropped or mixed them would show."""
    from aurora_pipeline._torchvision_compat import import_torchvision

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = import_torchvision().models.resnet18(weights=None)
        model.fc = nn.Identity()
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(0.2 * torch.randn(c))
                module.running_var.copy_(0.5 + torch.rand(c))
                module.weight.data.copy_(1.0 + 0.2 * torch.randn(c))
                module.bias.data.copy_(0.1 * torch.randn(c))
                module.num_batches_tracked.fill_(1234)
        state = {f"encoder.{k}": v.clone() for k, v in model.state_dict().items()}
        state["projector.0.weight"] = torch.randn(512, 512) / 512 ** 0.5
        state["projector.2.weight"] = torch.randn(64, 512) / 512 ** 0.5
    return state


def save_state(state, path: Path) -> str:
    """``torch.save`` ``state`` to ``path``; returns the file's SHA-256."""
    torch.save(state, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def three_channel_model(state: dict[str, torch.Tensor]) -> nn.Module:
    """The publisher's model: torchvision ResNet18 (3 channels, fc identity) with ``state``'s encoder weights."""
    from aurora_pipeline._torchvision_compat import import_torchvision

    model = import_torchvision().models.resnet18(weights=None)
    model.fc = nn.Identity()
    model.load_state_dict({k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")},
                          strict=True)
    return model.eval()


def green_input(frames01: torch.Tensor) -> torch.Tensor:
    """(n, H, W) float in [0, 1] -> (n, 3, H, W) with the frame in green, red and blue zero (the release's input)."""
    rgb = torch.zeros(frames01.shape[0], 3, *frames01.shape[1:])
    rgb[:, 1] = frames01
    return rgb


def relative_error(a, b) -> float:
    """|a - b| / |b| over the whole array (Frobenius norms)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).norm() / b.norm())
