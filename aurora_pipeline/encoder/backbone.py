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

For embedding (eval mode only), ``fold_batch_norms`` returns a copy with every
batch norm folded into the convolution before it: the same function up to float
rounding, with one pass fewer over each layer's activations.

Example:
    >>> encoder = resnet18_encoder()
    >>> h = encoder(torch.rand(8, 1, 128, 128))   # (8, 512)
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

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


def fold_batch_norms(encoder: nn.Module) -> nn.Module:
    """An eval-mode copy of a ResNet encoder with each BatchNorm2d folded into its convolution.

    In eval mode a batch norm is a fixed per-channel scale and shift, so
    ``bn(conv(x))`` equals one convolution with rescaled weights and a bias
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``). The folded copy computes the same
    function up to float32 rounding (relative difference about 5e-7 on ResNet18) and
    skips one read and write of every activation. It is for inference only: it has
    no batch statistics to train.

    Args:
        encoder: a torchvision ResNet (``resnet18_encoder``), in either mode; it is not changed.

    Returns:
        A new module in eval mode, on the encoder's device. A module that is not a
        torchvision ResNet is returned as an unchanged eval-mode copy.
    """
    folded = copy.deepcopy(encoder).eval()
    if not all(hasattr(folded, name) for name in ("conv1", "bn1", "layer1", "layer4")):
        return folded
    folded.conv1 = fuse_conv_bn_eval(folded.conv1, folded.bn1)
    folded.bn1 = nn.Identity()
    for layer in (folded.layer1, folded.layer2, folded.layer3, folded.layer4):
        for block in layer:
            for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
                if isinstance(getattr(block, bn_name, None), nn.BatchNorm2d):
                    setattr(block, conv_name, fuse_conv_bn_eval(getattr(block, conv_name), getattr(block, bn_name)))
                    setattr(block, bn_name, nn.Identity())
            down = getattr(block, "downsample", None)
            if isinstance(down, nn.Sequential) and len(down) == 2 and isinstance(down[1], nn.BatchNorm2d):
                block.downsample = nn.Sequential(fuse_conv_bn_eval(down[0], down[1]))
    return folded


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
