"""The base encoder f(x): a randomly initialised ResNet18 adapted to one-channel frames.

Paper (section III.B): "As an encoder, we use a lightweight ResNet18 model that is
randomly initialized." ResNet18 is He et al., "Deep Residual Learning for Image
Recognition" (2016), taken from torchvision.

Adaptation to all-sky-imager frames, and nothing more:

* ``conv1`` takes 1 input channel instead of 3 (THEMIS ASI frames are panchromatic).
  It keeps torchvision's 7x7 kernel, stride 2, padding 3 and no bias, so the rest of
  the network sees exactly the tensors it would see for an RGB image.
* ``fc`` (the 1000-class ImageNet layer) is replaced by ``nn.Identity``, so the output
  is the 512-d globally average-pooled feature: the representation h of the paper,
  used for classification and clustering.

The stem's max-pool is kept (some CIFAR SimCLR ports remove it for 32x32 images; our
frames are 128x128). Because of the global average pool the encoder accepts any frame
size >= 32 pixels; it should be used at the size it was trained at.

Shapes: input (n, 1, H, W) float32 in [0, 1] -> output (n, 512) float32.

Example:
    >>> encoder = resnet18_encoder()
    >>> h = encoder(torch.rand(8, 1, 128, 128))   # (8, 512)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aurora_pipeline._torchvision_compat import import_torchvision
from aurora_pipeline.errors import BadInputError

REPRESENTATION_DIM = 512  # length of h, ResNet18's pooled feature
IN_CHANNELS = 1           # one-channel (panchromatic) frames


def resnet18_encoder() -> nn.Module:
    """A randomly initialised torchvision ResNet18 with a 1-channel stem and no classifier.

    The random initialisation draws from torch's global generator; seed it (or use
    ``torch.random.fork_rng``) for a reproducible model.

    Returns:
        ``torchvision.models.ResNet`` whose ``forward`` maps (n, 1, H, W) to (n, 512).
    """
    torchvision = import_torchvision()
    model = torchvision.models.resnet18(weights=None)
    old = model.conv1
    model.conv1 = nn.Conv2d(
        IN_CHANNELS,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        bias=False,
    )
    # torchvision initialises conv weights with kaiming_normal_(fan_out, relu); do the same for the new stem
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.fc = nn.Identity()
    return model


def frames_to_input(frames: torch.Tensor, image_size: int | None = None) -> torch.Tensor:
    """uint8 frames (0..255 meaning 0..1) to the encoder's float input.

    Args:
        frames: (n, H, W) uint8 tensor, on the device the model runs on.
        image_size: output side in pixels; frames of another size are resized
            (bilinear, antialiased). ``None`` keeps the size as given.

    Returns:
        (n, 1, S, S) float32 in [0, 1] (S = image_size, or H x W when None).

    Raises:
        BadInputError: not a uint8 (n, H, W) tensor.
    """
    if frames.dtype != torch.uint8 or frames.ndim != 3:
        raise BadInputError(
            "frames",
            f"expected uint8 frames of shape (n, H, W), got {frames.dtype} {tuple(frames.shape)}.",
            "pass preprocessed frames as stored (uint8, 0..255 meaning 0..1).",
        )
    x = frames.unsqueeze(1).float().div_(255.0)
    if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        x = x.clamp_(0.0, 1.0)
    return x
