"""PIL's bilinear resize of 8-bit frames, to the byte, in NumPy: ``pil_resize``.

OATH's images reach the published encoder as 8-bit PIL images resized with
``Image.resize(size, Image.BILINEAR)`` (torchvision's ``Resize`` on a PIL image). PIL
does that in fixed-point integers (``libImaging/Resample.c``): per output pixel a
triangle filter widened by the scale when shrinking, normalised to sum to 1, each weight
rounded to an integer of 2^-22; a horizontal pass first, its result rounded and clipped
to uint8, then a vertical pass on those uint8 values. This module does the same
arithmetic, so for square frames (every all-sky imager's) its bytes are PIL's for every
output size (the tests compare them), and being integer arithmetic they are the same on
every CPU and BLAS. (For some oblong frames Pillow 13 takes the vertical pass first; the
result is then within one level of PIL's.)

Two paths, the same integers:

- the THEMIS case, a 2x reduction (256 -> 128): PIL's inner weights are exactly
  (1, 3, 3, 1) / 8, so an inner output is ``(a + 3 (b + c) + d + 4) >> 3`` of the four
  pixels under it, a few uint16 operations on strided views (~3x faster than the float
  products it replaces); the first and last outputs (three weights of 1/7 and 3/7) take
  PIL's integer weights as they are;
- any other size: the integer weights, divided by 2^22, as a banded matrix product in
  float64. Every product and every partial sum is a multiple of 2^-22 below 2^9 (31
  significant bits, of float64's 53), so the product is exact whatever order a BLAS sums in.

Example:
    >>> small = pil_resize(frames_uint8, 128)   # (n, 256, 256) uint8 -> (n, 128, 128) uint8
"""

from __future__ import annotations

import functools

import numpy as np

PRECISION_BITS = 32 - 8 - 2      # PIL's fixed point for 8-bit images
_HALF = 1 << (PRECISION_BITS - 1)
_BAND = 8                        # outputs per small matrix product of the general path
_INNER_2X = (1 << 19, 3 << 19, 3 << 19, 1 << 19)   # PIL's inner weights of a 2x reduction: (1, 3, 3, 1) / 8


@functools.lru_cache(maxsize=32)
def pil_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """PIL's bilinear weights along one axis: (first input (n_out,), integer weights (n_out, taps)).

    ``precompute_coeffs`` and ``normalize_coeffs_8bpc`` of PIL's ``Resample.c``: output ``i``
    is centred at ``(i + 0.5) * scale`` and reads inputs ``first[i]`` onwards; weights
    beyond an output's last input are 0.
    """
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = filterscale                        # the bilinear filter's support is 1, widened by the scale
    taps = int(np.ceil(support)) * 2 + 1
    first = np.zeros(n_out, np.int64)
    weights = np.zeros((n_out, taps), np.int64)
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        count = min(int(centre + support + 0.5), n_in) - lo
        w = [max(0.0, 1.0 - abs((x + lo - centre + 0.5) / filterscale)) for x in range(count)]
        total = 0.0
        for v in w:                              # summed left to right, as PIL sums
            total += v
        weights[i, :count] = [int(0.5 + (v / total if total else v) * (1 << PRECISION_BITS)) for v in w]
        first[i] = lo
    first.setflags(write=False)
    weights.setflags(write=False)
    return first, weights


def pil_resize(frames: np.ndarray, size: int) -> np.ndarray:
    """PIL's ``Image.resize((size, size), Image.BILINEAR)`` of each uint8 frame of (n, y, x): uint8 (n, size, size)."""
    frames = np.asarray(frames, np.uint8)
    values = frames.astype(np.uint16)           # 0..255 as uint16: room for the 2x path's sums
    if frames.shape[2] != size:
        values = _pass(values, 2, size)         # horizontal first, as PIL
    if frames.shape[1] != size:
        values = _pass(values, 1, size)
    return values.astype(np.uint8)


def _pass(values: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """One of PIL's passes along ``axis`` (1: rows, 2: columns) of uint16 values 0..255; uint16 0..255 out."""
    n_in = values.shape[axis]
    if _is_halving(n_in, n_out):
        return _halve(values, axis, *pil_weights(n_in, n_out))
    return _banded(values, axis, _bands(n_in, n_out))


@functools.lru_cache(maxsize=32)
def _is_halving(n_in: int, n_out: int) -> bool:
    """True when PIL's inner weights are exactly (1, 3, 3, 1) / 8 (a 2x reduction)."""
    weights = pil_weights(n_in, n_out)[1]
    return n_in == 2 * n_out and n_out >= 3 and all(
        tuple(w[:4]) == _INNER_2X and not w[4:].any() for w in weights[1:-1])


def _along(a: np.ndarray, axis: int, index) -> np.ndarray:
    return a[:, index, :] if axis == 1 else a[:, :, index]


def _halve(values: np.ndarray, axis: int, first: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A 2x reduction: inner outputs ``(a + 3 (b + c) + d + 4) >> 3`` (PIL's integers divided by 2^19)."""
    even, odd = _along(values, axis, slice(0, None, 2)), _along(values, axis, slice(1, None, 2))
    shape = list(values.shape)
    shape[axis] //= 2
    out = np.empty(shape, np.uint16)
    inner = _along(out, axis, slice(1, -1))     # output i reads inputs 2i - 1 .. 2i + 2
    np.add(_along(even, axis, slice(1, -1)), _along(odd, axis, slice(1, -1)), out=inner)
    inner *= 3
    inner += _along(odd, axis, slice(0, -2))
    inner += _along(even, axis, slice(2, None))
    inner += 4
    inner >>= 3                                 # at most (8 * 255 + 4) >> 3 = 255: no clip needed
    for i in (0, shape[axis] - 1):              # the edges: PIL's three weights, as integers
        acc = np.full(_along(out, axis, slice(i, i + 1)).shape, _HALF, np.int64)
        for t in range(weights.shape[1]):
            if weights[i, t]:
                acc += _along(values, axis, slice(first[i] + t, first[i] + t + 1)) * weights[i, t]  # int64
        _along(out, axis, slice(i, i + 1))[...] = np.clip(acc >> PRECISION_BITS, 0, 255)
    return out


@functools.lru_cache(maxsize=32)
def _bands(n_in: int, n_out: int) -> tuple[tuple[slice, slice, np.ndarray], ...]:
    """PIL's integer weights as float64 bands: (output slice, input slice, weights) per ``_BAND`` outputs."""
    first, weights = pil_weights(n_in, n_out)
    bands = []
    for i0 in range(0, n_out, _BAND):
        i1 = min(i0 + _BAND, n_out)
        lo, hi = int(first[i0:i1].min()), min(int(first[i0:i1].max()) + weights.shape[1], n_in)
        band = np.zeros((i1 - i0, hi - lo))
        for row, i in enumerate(range(i0, i1)):
            count = min(weights.shape[1], hi - int(first[i]))
            band[row, first[i] - lo : first[i] - lo + count] = weights[i, :count]
        band *= 2.0 ** -PRECISION_BITS          # exact (a power of 2): the product is then PIL's sum / 2^22
        band.setflags(write=False)
        bands.append((slice(i0, i1), slice(lo, hi), band))
    return tuple(bands)


def _banded(values: np.ndarray, axis: int, bands) -> np.ndarray:
    """Any size: PIL's weights / 2^22 as banded float64 products (exact), then PIL's rounding and clip."""
    x = values.astype(np.float64)
    shape = list(values.shape)
    shape[axis] = bands[-1][0].stop
    acc = np.empty(shape)
    if axis == 2:  # one 2-d product per band over every row of every frame
        x, flat = x.reshape(-1, x.shape[2]), acc.reshape(-1, shape[2])
        for out, inputs, band in bands:
            flat[:, out] = x[:, inputs] @ band.T
    else:
        for out, inputs, band in bands:
            np.matmul(band, x[:, inputs, :], out=acc[:, out, :])
    acc += 0.5                                  # PIL's 2^21 in units of 2^22
    out = acc.astype(np.uint16)                 # truncation: the floor of a sum that is never negative
    return np.minimum(out, 255, out=out)        # PIL's clip8 (weights may sum a little above 1)
