"""OATH framing (``fov="oath"``, ``oath_resize="pil"``) in compiled code, one pass per frame.

The NumPy path of :func:`~aurora_pipeline.ingest.preprocess.preprocess_oath_frames` makes
about ten passes over each block of frames (a histogram per frame for the percentiles, eq. 1
in float32, the truncation, the sky mask, PIL's two integer passes). The C kernel
``_oath_framing`` (built by ``pip install``, see ``setup.py``) does the same arithmetic on one
frame at a time while it sits in the cache, without the GIL, so the read-ahead thread keeps
inflating the next block meanwhile:

- the percentiles' order statistics from a histogram of the counts, interpolated in float32
  exactly as :func:`~aurora_pipeline.ingest.preprocess.frame_percentiles`;
- eq. 1 and the uint8 truncation in IEEE float32 (no FMA, no fast-math), as NumPy;
- PIL's fixed-point bilinear passes with PIL's integer weights
  (:func:`~aurora_pipeline.ingest.pil_bilinear.pil_weights`).

Its bytes are the NumPy path's (``tests/ingest/test_oath_kernel.py`` compares them, and the
pinned hashes of the stored frames hold). A frame with no contrast (``p_high - p_low <= 0``)
is left to the NumPy path, which stretches it by its maximum. The NumPy path stays the
reference, and is what runs where the kernel was not built (with a warning, once).

Example:
    >>> around = (percentile_ranks(256 * 256, 1.0), percentile_ranks(256 * 256, 99.0))
    >>> out, flat = oath_frames(raw_counts, sky, around, 128)   # (n, 256, 256) uint16 -> (n, 128, 128) uint8
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from aurora_pipeline.ingest.pil_bilinear import pil_weights

try:
    from aurora_pipeline.ingest import _oath_framing
except ImportError as err:  # a checkout used without `pip install -e .` (or `make install`)
    _oath_framing = None
    _MISSING = f"{type(err).__name__}: {err}"
else:
    _MISSING = ""

log = logging.getLogger(__name__)


def available() -> bool:
    """True when the compiled kernel was built for this interpreter."""
    return _oath_framing is not None


@functools.lru_cache(maxsize=1)
def warn_missing() -> None:
    """Say once per process that OATH framing runs on the (slower) NumPy path, and how to build the kernel."""
    log.warning("aurora_pipeline.ingest._oath_framing is not built (%s): OATH framing runs on the NumPy path, "
                "the same bytes, about 5x slower. Fix: reinstall the project (`make install`, or "
                "`pip install -e .` in the checkout) with a C compiler present.", _MISSING)


def oath_frames(images: np.ndarray, sky: np.ndarray, around: tuple, size: int) -> tuple[np.ndarray, np.ndarray]:
    """OATH framing of uint16 (n, y, x) ``images`` with the 0/1 uint8 ``sky`` mask (y, x) into uint8
    (n, size, size). ``around``: the low and the high percentile's ``(rank below, rank above, float32
    fraction)`` (``preprocess.percentile_ranks``). Returns (frames, flat): ``flat`` (n,) bool marks the
    frames with no contrast, left as zeros for the caller (the NumPy path stretches them by their maximum)."""
    images = np.ascontiguousarray(images, dtype=np.uint16)
    n, h, w = images.shape
    ranks = np.array([r for lo, hi, _ in around for r in (lo, hi)], np.int64)
    fracs = np.array([frac for _, _, frac in around], np.float32)
    xfirst, xweights = _filter(w, size)
    yfirst, yweights = _filter(h, size)
    out = np.empty((n, size, size), np.uint8)
    flat = np.zeros(n, np.uint8)
    _oath_framing.frames(images, n, h, w, np.ascontiguousarray(sky, np.uint8), ranks, fracs, size,
                         xfirst, xweights, xweights.shape[1], yfirst, yweights, yweights.shape[1], out, flat)
    return out, flat.astype(bool)


@functools.lru_cache(maxsize=16)
def _filter(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """PIL's integer weights for ``n_in`` -> ``n_out`` as int32 (first input (n_out,), weights (n_out, taps)),
    ``taps`` cut to the widest filter and every filter inside the input (an output near the end
    starts earlier, with zero weights in front: the same sum)."""
    first, weights = pil_weights(n_in, n_out)
    used = np.nonzero(weights.any(axis=0))[0]
    taps = int(used[-1]) + 1 if len(used) else 1
    starts = np.minimum(first, n_in - taps)
    shifted = np.zeros((n_out, taps), np.int32)
    for i in range(n_out):
        d = int(first[i] - starts[i])
        shifted[i, d:] = weights[i, : taps - d]
    starts = starts.astype(np.int32)
    starts.setflags(write=False)
    shifted.setflags(write=False)
    return starts, shifted
