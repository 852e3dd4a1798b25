"""The stochastic data-augmentation module: two random views of every frame.

Paper (section III.B): "we ... use only two [transformations]: a random resized
cropping of the input image and a random flip over a horizontal axis." The flip swaps
top and bottom (the image is mirrored across its horizontal mid-line); it never swaps
left and right, so a form's east-west position in the sky is preserved. Colour
distortion, rotation and blur were left out on purpose and are off by default here;
each can be switched on in ``AugmentConfig`` for experiments.

Random resized crop: the paper gives no scale range, so we use SimCLR's and
torchvision's ``RandomResizedCrop`` defaults: crop area a uniform fraction of the
frame in (0.08, 1.0), aspect ratio log-uniform in (3/4, 4/3), ten tries to fit inside
the frame, falling back to the whole frame (torchvision's fallback). The crop corners
are continuous (sub-pixel), and the crop is resampled bilinearly to the output size
without antialiasing (crops are usually smaller than the output, i.e. upsampled).

Every view gets its own independent draw. The random numbers are drawn on the CPU
from a ``torch.Generator`` (so a run is reproducible on any device and its state can
be checkpointed) into an ``AugmentParams``; the pixels are then transformed on the
model's device as one batched ``affine_grid`` + ``grid_sample`` call (crop, flip and
rotation are one affine map per view), so augmenting never leaves the GPU.

Shapes: ``two_views`` maps (N, 1, H, W) float in [0, 1] to (2N, 1, S, S) with the two
views of frame k on rows 2k and 2k+1 (the layout ``nt_xent_loss`` expects).

Example:
    >>> gen = torch.Generator().manual_seed(0)
    >>> views = two_views(frames, AugmentConfig(), gen, out_size=128)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aurora_pipeline.encoder.config import AugmentConfig
from aurora_pipeline.errors import BadInputError

CROP_TRIES = 10  # as torchvision's RandomResizedCrop


@dataclass(frozen=True)
class AugmentParams:
    """The random draws for V views, on the CPU.

    Attributes:
        theta: (V, 2, 3) float32 affine maps from output to input coordinates
            (``F.affine_grid`` convention, align_corners=False); crop, flip and rotation.
        flipped: (V,) bool, True where top and bottom were swapped.
        brightness: (V,) float32 factors, or None when off.
        contrast: (V,) float32 factors, or None when off.
        blur_sigma: (V,) float32 sigmas in output pixels (0 = not blurred), or None when off.
    """

    theta: torch.Tensor
    flipped: torch.Tensor
    brightness: torch.Tensor | None = None
    contrast: torch.Tensor | None = None
    blur_sigma: torch.Tensor | None = None

    def to(self, device: torch.device, non_blocking: bool = False) -> "AugmentParams":
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return AugmentParams(move(self.theta), move(self.flipped), move(self.brightness), move(self.contrast), move(self.blur_sigma))

    def pin_memory(self) -> "AugmentParams":
        pin = lambda t: None if t is None else t.pin_memory()  # noqa: E731
        return AugmentParams(pin(self.theta), pin(self.flipped), pin(self.brightness), pin(self.contrast), pin(self.blur_sigma))


def _uniform(n: int, low: float, high: float, generator: torch.Generator, shape: tuple = ()) -> torch.Tensor:
    return low + (high - low) * torch.rand((n, *shape), generator=generator, dtype=torch.float64)


def sample_params(n_views: int, cfg: AugmentConfig, generator: torch.Generator, frame_shape: tuple[int, int] = (1, 1)) -> AugmentParams:
    """Draw independent augmentation parameters for ``n_views`` views.

    The same number of random values is drawn whatever the outcome, so the generator
    advances identically on every run with the same seed.

    Args:
        n_views: V, the number of views (2N for N frames).
        cfg: which augmentations and their ranges.
        generator: a CPU ``torch.Generator``; it is advanced.
        frame_shape: (H, W) of the input frames, for the crop's aspect ratio.

    Returns:
        ``AugmentParams`` on the CPU.
    """
    height, width = frame_shape
    # random resized crop, torchvision's algorithm on continuous sizes, all tries drawn at once
    area = _uniform(n_views, *cfg.crop_scale, generator, (CROP_TRIES,))
    log_ratio = _uniform(n_views, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), generator, (CROP_TRIES,))
    ratio = torch.exp(log_ratio)
    crop_w = torch.sqrt(area * ratio * height / width)  # as a fraction of the frame's width
    crop_h = torch.sqrt(area / ratio * width / height)  # as a fraction of the frame's height
    fits = (crop_w <= 1.0) & (crop_h <= 1.0)
    first = torch.argmax(fits.to(torch.uint8), dim=1, keepdim=True)
    any_fit = fits.any(dim=1)
    fallback_w, fallback_h = _fallback_crop(cfg.crop_ratio, height, width)
    crop_w = torch.where(any_fit, crop_w.gather(1, first)[:, 0], fallback_w)
    crop_h = torch.where(any_fit, crop_h.gather(1, first)[:, 0], fallback_h)
    # centre of the crop, uniform over the positions that keep it inside the frame (in [-1, 1] units)
    centre_x = (1.0 - crop_w) * (2.0 * torch.rand(n_views, generator=generator, dtype=torch.float64) - 1.0)
    centre_y = (1.0 - crop_h) * (2.0 * torch.rand(n_views, generator=generator, dtype=torch.float64) - 1.0)
    flipped = torch.rand(n_views, generator=generator, dtype=torch.float64) < cfg.flip_top_bottom
    angle = torch.deg2rad(_uniform(n_views, -cfg.rotation_degrees, cfg.rotation_degrees, generator))
    cos, sin = torch.cos(angle), torch.sin(angle)
    flip_sign = 1.0 - 2.0 * flipped.to(torch.float64)
    # input = diag(crop_w, crop_h) @ diag(1, flip_sign) @ rotation @ output + centre
    theta = torch.stack(
        [
            torch.stack([crop_w * cos, -crop_w * sin, centre_x], dim=1),
            torch.stack([crop_h * flip_sign * sin, crop_h * flip_sign * cos, centre_y], dim=1),
        ],
        dim=1,
    ).float()
    brightness = _uniform(n_views, 1 - cfg.brightness, 1 + cfg.brightness, generator).float() if cfg.brightness > 0 else None
    contrast = _uniform(n_views, 1 - cfg.contrast, 1 + cfg.contrast, generator).float() if cfg.contrast > 0 else None
    blur_sigma = None
    if cfg.blur_sigma > 0:
        sigma = _uniform(n_views, 0.1, cfg.blur_sigma, generator)
        blurred = torch.rand(n_views, generator=generator, dtype=torch.float64) < cfg.blur_probability
        blur_sigma = torch.where(blurred, sigma, 0.0).float()
    return AugmentParams(theta, flipped, brightness, contrast, blur_sigma)


def _fallback_crop(crop_ratio: tuple[float, float], height: int, width: int) -> tuple[float, float]:
    """torchvision's fallback: the largest centred crop with the ratio clamped into range."""
    frame_ratio = width / height
    if frame_ratio < crop_ratio[0]:
        return 1.0, (width / crop_ratio[0]) / height
    if frame_ratio > crop_ratio[1]:
        return (height * crop_ratio[1]) / width, 1.0
    return 1.0, 1.0


def apply_params(images: torch.Tensor, params: AugmentParams, out_size: int) -> torch.Tensor:
    """Transform each view by its own parameters, batched on ``images``' device.

    Args:
        images: (V, 1, H, W) float in [0, 1], one input per view.
        params: from ``sample_params`` for the same V (moved to the device or not).
        out_size: S, the side of the output views in pixels.

    Returns:
        (V, 1, S, S) float in [0, 1], same dtype and device as ``images``.
    """
    if images.ndim != 4 or images.shape[0] != params.theta.shape[0]:
        raise BadInputError(
            "apply_params images",
            f"expected ({params.theta.shape[0]}, C, H, W) images, got {tuple(images.shape)}.",
            "draw one set of parameters per view.",
        )
    device, dtype = images.device, images.dtype
    theta = params.theta.to(device=device, dtype=dtype)
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], out_size, out_size], align_corners=False)
    views = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if params.brightness is not None:
        views = views * params.brightness.to(device=device, dtype=dtype).view(-1, 1, 1, 1)
    if params.contrast is not None:
        mean = views.mean(dim=(1, 2, 3), keepdim=True)
        views = (views - mean) * params.contrast.to(device=device, dtype=dtype).view(-1, 1, 1, 1) + mean
    if params.blur_sigma is not None:
        views = _gaussian_blur(views, params.blur_sigma.to(device=device, dtype=dtype))
    return views.clamp_(0.0, 1.0)


def _gaussian_blur(views: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per view (sigma 0 leaves the view as is)."""
    n, channels, height, width = views.shape
    radius = max(1, int(math.ceil(3.0 * float(sigma.max()))))
    radius = min(radius, (min(height, width) - 1) // 2)  # reflect padding needs radius < side
    if radius < 1:
        return views
    offsets = torch.arange(-radius, radius + 1, device=views.device, dtype=views.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma.clamp(min=1e-6).view(-1, 1)) ** 2)  # sigma ~ 0 -> a delta
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
    flat = views.reshape(1, n * channels, height, width)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel.view(-1, 1, 1, 2 * radius + 1), groups=n * channels)
    flat = F.conv2d(flat, kernel.view(-1, 1, 2 * radius + 1, 1), groups=n * channels)
    return flat.reshape(n, channels, height, width)


def two_views(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator, out_size: int) -> torch.Tensor:
    """Two independently augmented views of every frame, pairs on adjacent rows.

    Args:
        images: (N, 1, H, W) float in [0, 1], on the device to augment on.
        cfg: the augmentations.
        generator: CPU generator for the random draws; advanced.
        out_size: S, side of the views.

    Returns:
        (2N, 1, S, S); rows 2k and 2k+1 are views of frame k.
    """
    params = sample_params(2 * images.shape[0], cfg, generator, tuple(images.shape[-2:]))
    return apply_params(images.repeat_interleave(2, dim=0), params, out_size)
