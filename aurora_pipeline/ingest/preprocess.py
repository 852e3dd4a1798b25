"""Preprocessing of raw all-sky-imager counts, as in the paper (section III.A).

Three steps, each recorded in the store through ``PreprocessConfig.as_attrs()``:

1. The circular field of view is shrunk by ``fov_shrink`` (15%) of its radius, pixels
   outside the smaller circle are set to 0, and the frame is cropped to that circle's
   bounding square. This removes the low-elevation pixels near the horizon.
2. Eq. 1 of the paper: ``x' = clip((x - m) / M, 0, 1)`` where ``m`` is the 1st
   percentile of the frame and ``M`` the 99th percentile of ``x - m``, both computed
   over the pixels inside the circle. A flat or fully saturated frame (``M <= 0``)
   becomes all zeros rather than NaN.
3. A resize to ``image_size`` x ``image_size`` (bilinear with antialiasing), then a
   quantisation to uint8 (0..255 meaning 0..1) for storage.

Example:
    >>> cfg = PreprocessConfig(image_size=64)
    >>> out = preprocess_frames(raw_counts, cfg)   # (n, 256, 256) uint16 -> (n, 64, 64) uint8
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from aurora_pipeline.errors import BadInputError


@dataclass(frozen=True)
class PreprocessConfig:
    fov_shrink: float = 0.15       # fraction of the field-of-view radius removed at the horizon (paper: 15%)
    fov_radius: float | None = None  # radius of the imager's circular field of view in pixels; None = half the frame
    low_percentile: float = 1.0    # m in eq. 1
    high_percentile: float = 99.0  # M in eq. 1 is this percentile of x - m
    image_size: int = 128          # output frames are image_size x image_size
    block_frames: int = 128        # frames processed at once (bounds memory, not results)

    def __post_init__(self):
        if not 0.0 <= self.fov_shrink < 1.0:
            raise BadInputError("fov_shrink", f"must be in [0, 1), got {self.fov_shrink}", "use e.g. 0.15")
        if not 0.0 <= self.low_percentile < self.high_percentile <= 100.0:
            raise BadInputError(
                "percentiles",
                f"need 0 <= low < high <= 100, got {self.low_percentile}, {self.high_percentile}",
                "use the paper's 1 and 99",
            )
        if self.image_size < 8:
            raise BadInputError("image_size", f"must be at least 8 pixels, got {self.image_size}", "use 128")

    def as_attrs(self) -> dict:
        """The parameters as flat attributes prefixed ``preprocess_`` (for the store)."""
        out = {}
        for key, value in dataclasses.asdict(self).items():
            if key == "block_frames":
                continue
            out[f"preprocess_{key}"] = "none" if value is None else value
        out["preprocess_method"] = (
            "circular FOV shrunk by fov_shrink of its radius, outside set to 0, cropped to the circle's bounding square; "
            "eq. 1 of Johnson et al.: clip((x - p_low) / p_high(x - p_low), 0, 1) over pixels inside the circle; "
            "bilinear antialiased resize to image_size; uint8 = round(255 * value)"
        )
        return out

    @classmethod
    def from_attrs(cls, attrs: dict) -> "PreprocessConfig":
        kwargs = {}
        for field in dataclasses.fields(cls):
            key = f"preprocess_{field.name}"
            if key in attrs:
                value = attrs[key]
                kwargs[field.name] = None if value == "none" else value
        return cls(**kwargs)


def fov_geometry(shape: tuple[int, int], cfg: PreprocessConfig) -> tuple[slice, slice, np.ndarray]:
    """Crop window and inside-circle mask for frames of ``shape`` (y, x).

    Returns ``(rows, cols, mask)``: the slices of the bounding square of the shrunk
    circle and a boolean mask of that square, True inside the circle.
    """
    ny, nx = shape
    cy, cx = (ny - 1) / 2.0, (nx - 1) / 2.0
    radius = cfg.fov_radius if cfg.fov_radius is not None else min(ny, nx) / 2.0
    r = radius * (1.0 - cfg.fov_shrink)
    y0, y1 = max(int(np.floor(cy - r + 0.5)), 0), min(int(np.ceil(cy + r + 0.5)), ny)
    x0, x1 = max(int(np.floor(cx - r + 0.5)), 0), min(int(np.ceil(cx + r + 0.5)), nx)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return slice(y0, y1), slice(x0, x1), mask


def stretch(images: np.ndarray, mask: np.ndarray | None = None, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Eq. 1 of the paper on each frame of ``images`` (n, y, x); returns float32 in [0, 1].

    Percentiles are taken over the pixels where ``mask`` (y, x) is True (all pixels when
    None); pixels outside the mask are set to 0. Flat frames give zeros, never NaN.
    """
    raw = np.asarray(images)
    if raw.ndim != 3:
        raise BadInputError("images", f"expected (n, y, x), got shape {raw.shape}", "pass a stack of frames")
    # order statistics on the raw counts (uint16 partitions twice as fast as float32; same values)
    inside = raw[:, mask] if mask is not None else raw.reshape(len(raw), -1).copy()
    m, p_high = _percentiles(inside, low, high)
    x = raw.astype(np.float32)
    big_m = p_high - m  # the high percentile of x - m (a shift commutes with percentiles)
    flat = ~(big_m > 0)  # flat or saturated frames: no contrast to stretch
    out = x  # in place: x is this function's own float32 copy
    out -= m[:, None, None]
    out /= np.where(flat, 1.0, big_m).astype(np.float32)[:, None, None]
    out[flat] = 0.0
    np.clip(out, 0.0, 1.0, out=out)
    if mask is not None:
        out[:, ~mask] = 0.0
    return out


def _percentiles(values: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``np.percentile`` (linear interpolation) at ``low`` and ``high``, in one partition.

    ``values`` (n, k) is partitioned in place; results equal ``np.percentile(values, q, axis=1)``.
    """
    k = values.shape[1]
    positions = [q / 100.0 * (k - 1) for q in (low, high)]
    kth = sorted({min(int(np.floor(p)) + d, k - 1) for p in positions for d in (0, 1)})
    values.partition(kth, axis=1)
    out = []
    for p in positions:
        lo = int(np.floor(p))
        hi = min(lo + 1, k - 1)
        frac = np.float32(p - lo)
        below, above = values[:, lo].astype(np.float32), values[:, hi].astype(np.float32)
        out.append(below + (above - below) * frac)
    return out[0], out[1]


@functools.lru_cache(maxsize=16)
def resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64 weights of a bilinear resize with antialiasing, as PIL and
    ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)`` compute it:
    a triangle filter centred on each output pixel, widened by the scale when
    shrinking, normalised to sum to 1.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)
    weights = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(np.floor(center - support + 0.5)), 0)
        hi = min(int(np.floor(center + support + 0.5)), n_in)
        taps = np.clip(1.0 - np.abs((np.arange(lo, hi) - center + 0.5) / support), 0.0, None)
        weights[i, lo:hi] = taps / taps.sum()
    weights.setflags(write=False)
    return weights


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear antialiased resize of float32 (n, y, x) to (n, size, size).

    Two matrix products with ``resample_matrix`` (separable filter): the same result as
    torch's antialiased bilinear interpolation (to 1e-6) without importing torch, which
    would cost every Dask worker about 200 MB.
    """
    if images.shape[1:] == (size, size):
        return images
    # float64: BLAS may sum in a different order from run to run (alignment, threads); in
    # float32 that moved a few pixels across a uint8 rounding boundary, in float64 it cannot
    # in practice, so re-ingesting a file gives the same bytes
    rows = resample_matrix(images.shape[1], size)
    cols = resample_matrix(images.shape[2], size)
    return np.matmul(np.matmul(rows, images.astype(np.float64)), cols.T).astype(np.float32)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Quantise float values in [0, 1] to uint8 0..255 (round to nearest)."""
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)


def preprocess_frames(images: np.ndarray, cfg: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """Crop, stretch (eq. 1) and resize raw frames (n, y, x) to uint8 (n, s, s)."""
    if images.ndim != 3:
        raise BadInputError("images", f"expected (n, y, x) frames, got shape {images.shape}", "pass a stack of frames")
    rows, cols, mask = fov_geometry(images.shape[1:], cfg)
    out = np.empty((len(images), cfg.image_size, cfg.image_size), dtype=np.uint8)
    for i in range(0, len(images), cfg.block_frames):
        block = images[i : i + cfg.block_frames, rows, cols]
        stretched = stretch(block, mask, cfg.low_percentile, cfg.high_percentile)
        out[i : i + cfg.block_frames] = to_uint8(resize(stretched, cfg.image_size))
    return out
