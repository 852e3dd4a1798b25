"""Preprocessing of raw all-sky-imager counts, as in the paper (section III.A).

Three steps, each recorded in the store through ``PreprocessConfig.as_attrs()``:

1. The field of view: pixels outside it are set to 0. This removes the low-elevation
   pixels near the horizon. Three kinds:

   - ``fov="oath"`` (the default for new stores, no skymap needed): framed like the
     OATH images and the published encoder's input (``preprocess_oath_frames``): the
     whole 256 x 256 frame is kept (no crop), the sky inside the centred circle
     ``sqrt((x - c)^2 + (y - c)^2) <= int((1 - fov_shrink) * c)`` (c = 128: radius 108),
     eq. 1 with the percentiles over the whole frame, then uint8 by truncation
     (``floor(255 * value)``) and the resize of those uint8 values (``oath_resize``: PIL's
     own integer bilinear for new stores, float64 for the stores made before it);
   - ``fov="circle"`` (the default before OATH framing, kept by the stores made with it):
     the frame's inscribed circle shrunk by ``fov_shrink`` (the paper's 15%) of its
     radius, cropped to the circle's bounding square;
   - ``fov="elevation"`` (with the imager's skymap, :mod:`aurora_pipeline.source.skymap`):
     the pixels whose elevation is at least ``min_elevation``. The default, 13.5
     degrees, is the paper's 15% crop expressed as an elevation: in an equidistant
     fisheye (elevation linear in the distance from the zenith) cutting 15% of the
     radius cuts 0.15 * 90 degrees above the horizon. The crop is the square around
     the mask's bounding box (the zenith is not at the frame's centre). ``field_of_view``
     builds it from a skymap, and ``grid_coordinates`` resamples the skymap's el, az,
     lat and lon onto the output grid, at the centre of each output pixel.
2. Eq. 1 of the paper: ``x' = clip((x - m) / M, 0, 1)`` where ``m`` is the 1st
   percentile of the frame and ``M`` the 99th percentile of ``x - m``, both computed
   over the pixels inside the field of view. A flat or fully saturated frame (``M <= 0``)
   becomes all zeros rather than NaN.
3. A resize to ``image_size`` x ``image_size`` (bilinear with antialiasing), then a
   quantisation to uint8 (0..255 meaning 0..1) for storage.

Example:
    >>> cfg = PreprocessConfig(image_size=64)
    >>> out = preprocess_frames(raw_counts, cfg)   # (n, 256, 256) uint16 -> (n, 64, 64) uint8
    >>> cfg = PreprocessConfig(fov="elevation")
    >>> fov = field_of_view(read_skymap("themis_skymap_gako_20110305-+_vXX.sav"), cfg)
    >>> out = preprocess_frames(raw_counts, cfg, fov)  # percentiles inside el >= 13.5 deg
    >>> coords = grid_coordinates(skymap, fov, cfg)    # {"el", "az", "lat", "lon"}: (128, 128) float32
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from threadpoolctl import ThreadpoolController

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.ingest.config import FOV_KINDS, PreprocessConfig  # noqa: F401 - the setting lives there (light); re-exported
from aurora_pipeline.ingest import oath_kernel
from aurora_pipeline.ingest.pil_bilinear import pil_resize


@functools.lru_cache(maxsize=1)
def _blas_libraries() -> ThreadpoolController:
    """The process's BLAS and OpenMP libraries, found once (a search costs ~5 ms: once per file, 4% of
    a file's preprocessing). NumPy's BLAS is loaded before the first preprocessing, the one that counts."""
    return ThreadpoolController()


def one_blas_thread():
    """A context in which NumPy's BLAS uses one thread (``threadpoolctl``'s limit on the libraries found once)."""
    return _blas_libraries().limit(limits=1, user_api="blas")


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
    return _stretch(raw, mask, low, high, None if mask is None else _upper_bound(mask))[0]


def _stretch(raw: np.ndarray, mask: np.ndarray | None, low: float, high: float,
             upper: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 1 with the percentiles over ``mask`` (all pixels when None), clipped to [0, ``upper``]
    (float32 (y, x): 1 where a pixel is kept, 0 where it is set to 0; None: 1 everywhere).
    Returns (float32 (n, y, x), bool (n,) True for the flat frames, which are all zeros)."""
    if mask is None:
        inside = raw.reshape(len(raw), -1)
    else:  # one gather by flat index from a contiguous copy: ~3x faster than a boolean mask on a crop view
        inside = np.ascontiguousarray(raw).reshape(len(raw), -1)[:, _flat_indices(mask)]
    m, p_high = frame_percentiles(inside, (low, high))
    big_m = p_high - m  # the high percentile of x - m (a shift commutes with percentiles)
    flat = ~(big_m > 0)  # flat or saturated frames: no contrast to stretch
    out = np.subtract(raw, m[:, None, None], dtype=np.float32)  # float32(x) - m: the counts are exact in float32
    out /= np.where(flat, 1.0, big_m).astype(np.float32)[:, None, None]
    out[flat] = 0.0
    np.clip(out, 0.0, 1.0, out=out)
    if upper is not None:  # 0 where a pixel is not kept (a product: ~5x faster than a clip to an array bound)
        out *= upper
    return out, flat


def _flat_indices(mask: np.ndarray) -> np.ndarray:
    """Flat indices of the True pixels of ``mask`` (y, x), in row-major order (that of ``raw[:, mask]``)."""
    return np.flatnonzero(mask)


def _upper_bound(mask: np.ndarray) -> np.ndarray:
    """float32 1 where ``mask`` is True, 0 elsewhere (the stretch's clip bound)."""
    return np.asarray(mask, dtype=np.float32)


def frame_percentiles(values: np.ndarray, qs=(1.0, 99.0)) -> list[np.ndarray]:
    """Per-row ``np.percentile(values, q, axis=1)`` (linear interpolation) for each ``q`` in ``qs``, as float32.

    ``values`` (n, k): one row per frame (e.g. the pixels inside the field of view).
    Unsigned integer counts (THEMIS uint16, uint8) take one histogram per row
    (``np.bincount``, one pass; exact, as the order statistics of integers are read off
    their cumulative counts); other dtypes one ``np.partition`` of a copy. Either way the
    two order statistics around each percentile's position are interpolated in float32,
    so both paths give the same values. ``values`` is not modified.
    """
    values = np.asarray(values)
    n, k = values.shape
    around = [percentile_ranks(k, q) for q in qs]
    ranks = sorted({r for lo, hi, _ in around for r in (lo, hi)})
    if values.dtype.kind == "u" and values.dtype.itemsize <= 2:
        order = _ranked_counts(values, np.array(ranks))
    else:
        part = np.partition(values, ranks, axis=1)
        order = part[:, ranks]
    at = {r: order[:, i].astype(np.float32) for i, r in enumerate(ranks)}
    return [at[lo] + (at[hi] - at[lo]) * frac for lo, hi, frac in around]


def percentile_ranks(k: int, q: float) -> tuple[int, int, np.float32]:
    """Where the ``q``-th percentile (linear interpolation) of ``k`` values lies: the ranks (0-based) of
    the order statistics below and above it and the float32 fraction between them. The one definition
    of :func:`frame_percentiles` and of the compiled OATH framing kernel."""
    p = q / 100.0 * (k - 1)
    lo = int(np.floor(p))
    return lo, min(lo + 1, k - 1), np.float32(p - lo)


def _ranked_counts(values: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """(n, len(ranks)) the ``ranks``-th smallest values of each row of unsigned ``values`` (n, k), by histogram."""
    out = np.empty((len(values), len(ranks)), np.int64)
    for i, row in enumerate(values):
        cumulative = np.cumsum(np.bincount(row))  # cumulative[v]: how many pixels are <= v
        out[i] = np.searchsorted(cumulative, ranks, side="right")
    return out


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


RESIZE_BAND_ROWS = 8  # output rows (columns) per small matrix product of the banded resize


@functools.lru_cache(maxsize=16)
def _bands(n_in: int, n_out: int) -> tuple[tuple[slice, slice, np.ndarray], ...]:
    """``resample_matrix(n_in, n_out)`` cut into bands: (output slice, input slice, weights) per
    ``RESIZE_BAND_ROWS`` outputs, the input slice spanning every non-zero weight of those outputs."""
    weights = resample_matrix(n_in, n_out)
    nonzero = weights != 0
    first = nonzero.argmax(axis=1)
    last = n_in - nonzero[:, ::-1].argmax(axis=1)
    bands = []
    for i0 in range(0, n_out, RESIZE_BAND_ROWS):
        i1 = min(i0 + RESIZE_BAND_ROWS, n_out)
        j0, j1 = int(first[i0:i1].min()), int(last[i0:i1].max())
        bands.append((slice(i0, i1), slice(j0, j1), np.ascontiguousarray(weights[i0:i1, j0:j1])))
    return tuple(bands)


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear antialiased resize of float32 (n, y, x) to (n, size, size).

    The two matrix products with ``resample_matrix`` (separable filter: rows, then
    columns): the same result as torch's antialiased bilinear interpolation (to 1e-6)
    without importing torch, which would cost every Dask worker about 200 MB. Each
    product is done band by band (:func:`_bands`): a weight matrix has about 4 non-zero
    taps per output, so the full product spent ~95% of its work on zeros. A dot product
    that skips zero terms sums the same non-zero terms in the same order, so the result
    is the full product's (the tests pin its bytes).
    """
    if images.shape[1:] == (size, size):
        return images
    # float64: BLAS may sum in a different order from run to run (alignment, threads); in
    # float32 that moved a few pixels across a uint8 rounding boundary, in float64 it cannot
    # in practice, so re-ingesting a file gives the same bytes
    return _resize_float64(np.asarray(images, dtype=np.float64), size)


def _resize_float64(x: np.ndarray, size: int) -> np.ndarray:
    """:func:`resize`'s two banded products on float64 (n, y, x); float32 (n, size, size) out."""
    n = len(x)
    rows = np.empty((n, size, x.shape[2]))
    for out_rows, in_rows, weights in _bands(x.shape[1], size):
        np.matmul(weights, x[:, in_rows, :], out=rows[:, out_rows, :])
    flat = rows.reshape(n * size, x.shape[2])
    out = np.empty((n * size, size), np.float32)
    for out_cols, in_cols, weights in _bands(x.shape[2], size):
        out[:, out_cols] = flat[:, in_cols] @ weights.T
    return out.reshape(n, size, size)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Quantise float values in [0, 1] to uint8 0..255 (round to nearest)."""
    scaled = images * 255.0  # the one temporary; rounding and clipping happen in place
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


@dataclass(frozen=True, eq=False)
class FieldOfView:
    """Where a frame's sky is: the crop window and, inside it, the mask of pixels kept.

    Attributes:
        rows, cols: the crop window in the raw frame (a square).
        mask: bool (crop rows, crop cols), True for pixels inside the field of view.
        kind: "circle" or "elevation" (the ``PreprocessConfig.fov`` it was built for).
        frame_shape: the raw frame shape (y, x) it applies to.
        skymap: the skymap file name it came from ("" for the circle).
    """

    rows: slice
    cols: slice
    mask: np.ndarray
    kind: str
    frame_shape: tuple[int, int]
    skymap: str = ""


def field_of_view(skymap, cfg: PreprocessConfig) -> FieldOfView:
    """The elevation field of view of ``skymap`` (a :class:`~aurora_pipeline.source.skymap.Skymap`):
    pixels with ``el >= cfg.min_elevation``, cropped to the square around their bounding box.

    Raises:
        BadInputError: ``cfg.fov`` is not "elevation", or no pixel reaches ``min_elevation``.
    """
    if cfg.fov != "elevation":
        raise BadInputError("fov", f"a skymap field of view needs fov='elevation', the setting says {cfg.fov!r}",
                            "use PreprocessConfig(fov='elevation') with skymaps, or no skymap")
    el = np.asarray(skymap.el)
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(el) & (el >= np.float32(cfg.min_elevation))
    if not keep.any():
        raise BadInputError(getattr(skymap, "file", "skymap"), f"has no pixel at or above {cfg.min_elevation} degrees",
                            "check the skymap, or lower min_elevation")
    rows, cols = _square_around(keep)
    return FieldOfView(rows, cols, keep[rows, cols], "elevation", el.shape, getattr(skymap, "file", ""))


def _square_around(keep: np.ndarray) -> tuple[slice, slice]:
    """The square window around the True pixels' bounding box, centred on it and kept inside the frame."""
    ny, nx = keep.shape
    ys, xs = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
    y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
    side = min(max(y1 - y0, x1 - x0), ny, nx)

    def place(lo: int, hi: int, n: int) -> slice:
        start = lo - (side - (hi - lo)) // 2
        start = min(max(start, 0), n - side)
        return slice(int(start), int(start + side))

    return place(y0, y1, ny), place(x0, x1, nx)


def grid_coordinates(skymap, fov: FieldOfView, cfg: PreprocessConfig) -> dict[str, np.ndarray]:
    """The skymap's ``el``, ``az``, ``lat``, ``lon`` on the preprocessed (image_size, image_size) grid.

    Each output pixel gets the skymap's value at its centre: output pixel ``i`` of a
    crop of ``n`` pixels resized to ``s`` is centred at crop pixel ``(i + 0.5) n / s - 0.5``,
    the centre of the resize filter that made it (:func:`resample_matrix`). Values are
    bilinear between the four nearest skymap pixels (NaN where one of them is NaN);
    azimuth through its sine and cosine, longitude as an offset from the imager (no
    jump at 0/360 or at the date line). lat/lon are at ``cfg.map_altitude_km``.

    Returns:
        {"el", "az", "lat", "lon"}: float32 (image_size, image_size), degrees
        (az in [0, 360), lon in [-180, 180)).
    """
    # scipy: only with skymaps (the preprocessing of frames does without)
    from scipy.ndimage import map_coordinates

    if tuple(np.asarray(skymap.el).shape) != tuple(fov.frame_shape):
        raise BadInputError(getattr(skymap, "file", "skymap"), f"is {np.asarray(skymap.el).shape} pixels, the field "
                            f"of view was built for {fov.frame_shape}", "build the field of view from this skymap")
    size = cfg.image_size
    n_rows, n_cols = fov.rows.stop - fov.rows.start, fov.cols.stop - fov.cols.start
    centres = np.arange(size, dtype=np.float64) + 0.5
    yy, xx = np.meshgrid(fov.rows.start + centres * n_rows / size - 0.5,
                         fov.cols.start + centres * n_cols / size - 0.5, indexing="ij")

    def sample(values: np.ndarray) -> np.ndarray:
        return map_coordinates(np.asarray(values, np.float64), [yy, xx], order=1, mode="nearest", prefilter=False)

    az = np.deg2rad(np.asarray(skymap.az, np.float64))
    site_lon = float(skymap.site_lon)
    out = {
        "el": sample(skymap.el),
        "az": np.rad2deg(np.arctan2(sample(np.sin(az)), sample(np.cos(az)))) % 360.0,
        "lat": sample(skymap.lat_at(cfg.map_altitude_km)),
        "lon": (sample((np.asarray(skymap.lon_at(cfg.map_altitude_km), np.float64) - site_lon + 180.0) % 360.0 - 180.0)
                + site_lon + 180.0) % 360.0 - 180.0,
    }
    return {k: v.astype(np.float32) for k, v in out.items()}


def circle_grid_elevation(cfg: PreprocessConfig, frame_size: int = 256) -> np.ndarray:
    """Elevation (degrees, float32 (image_size, image_size)) of each output pixel with the circle
    field of view and no skymap, assuming an equidistant fisheye whose horizon is the
    (unshrunk) field-of-view circle of a ``frame_size`` frame (THEMIS: 256). NaN outside
    the kept circle. An approximation for figures; a skymap gives the real values.
    """
    radius = cfg.fov_radius if cfg.fov_radius is not None else frame_size / 2.0
    if cfg.fov == "oath":  # the whole frame, the circle about pixel frame_size // 2
        rows, cols, c = slice(0, frame_size), slice(0, frame_size), float(frame_size // 2)
    else:
        rows, cols, _ = fov_geometry((frame_size, frame_size), cfg)
        c = (frame_size - 1) / 2.0
    size = cfg.image_size
    centres = np.arange(size, dtype=np.float64) + 0.5
    yy = rows.start + centres * (rows.stop - rows.start) / size - 0.5
    xx = cols.start + centres * (cols.stop - cols.start) / size - 0.5
    r = np.hypot(yy[:, None] - c, xx[None, :] - c)
    el = 90.0 * (1.0 - r / radius)
    kept = int((1.0 - cfg.fov_shrink) * radius) if cfg.fov == "oath" else radius * (1.0 - cfg.fov_shrink)
    el[r > kept] = np.nan
    return el.astype(np.float32)


def preprocess_frames(images: np.ndarray, cfg: PreprocessConfig = PreprocessConfig(),
                      fov: FieldOfView | None = None) -> np.ndarray:
    """Crop, stretch (eq. 1) and resize raw frames (n, y, x) to uint8 (n, s, s).

    Args:
        fov: the field of view from :func:`field_of_view` (a skymap's); None for the
            inscribed circle (``cfg.fov == "circle"``).

    Raises:
        BadInputError: not (n, y, x); ``cfg.fov`` and ``fov`` disagree (an elevation
            setting without a skymap, or a skymap with the circle setting); a field of
            view built for frames of another shape.
    """
    if images.ndim != 3:
        raise BadInputError("images", f"expected (n, y, x) frames, got shape {images.shape}", "pass a stack of frames")
    if cfg.fov == "oath":
        if fov is not None:
            raise BadInputError("fov", f"a {fov.kind!r} field of view was given but the setting says fov='oath'",
                                "use PreprocessConfig(fov='elevation') with skymaps")
        return preprocess_oath_frames(images, cfg)
    if fov is None:
        if cfg.fov != "circle":
            raise BadInputError("fov", f"the setting asks for fov={cfg.fov!r} but no skymap field of view was given",
                                "pass field_of_view(skymap, cfg) (ingest with --skymaps), or use fov='circle'")
        rows, cols, mask = fov_geometry(images.shape[1:], cfg)
    else:
        if fov.kind != cfg.fov:
            raise BadInputError("fov", f"a {fov.kind!r} field of view was given but the setting says fov={cfg.fov!r}",
                                "use PreprocessConfig(fov='elevation') with skymaps")
        if tuple(images.shape[1:]) != tuple(fov.frame_shape):
            raise BadInputError("images", f"frames are {images.shape[1:]} pixels but the field of view "
                                f"({fov.skymap or fov.kind}) is for {fov.frame_shape}",
                                "use the skymap of this imager")
        rows, cols, mask = fov.rows, fov.cols, fov.mask
    out = np.empty((len(images), cfg.image_size, cfg.image_size), dtype=np.uint8)
    # one BLAS thread: the banded products are small, and threads that spin on a shared
    # machine made this step 5-10x slower (two Dask workers already use both cores)
    with one_blas_thread():
        for i in range(0, len(images), cfg.block_frames):
            block = images[i : i + cfg.block_frames, rows, cols]  # a view: the crop is not copied
            stretched = stretch(block, mask, cfg.low_percentile, cfg.high_percentile)
            out[i : i + cfg.block_frames] = to_uint8(resize(stretched, cfg.image_size))
    return out


# ---- OATH's framing (fov="oath"): the whole frame, as the OATH images and the published encoder see it ----


def oath_circle(shape: tuple[int, int], cfg: PreprocessConfig) -> np.ndarray:
    """bool (y, x): True inside OATH's sky circle, ``sqrt((x - cx)^2 + (y - cy)^2) <= int((1 - fov_shrink) * r)``,
    centred at (ny // 2, nx // 2) with r half the frame (``fov_radius`` when set): for a 256 x 256
    THEMIS frame the circle of radius int(0.85 * 128) = 108 about pixel (128, 128), as in OATH's
    images (row 128 is non-zero from column 20 to 236)."""
    ny, nx = shape
    radius = cfg.fov_radius if cfg.fov_radius is not None else min(ny, nx) / 2.0
    r = int((1.0 - cfg.fov_shrink) * radius)
    yy, xx = np.mgrid[0:ny, 0:nx]
    return (yy - ny // 2) ** 2 + (xx - nx // 2) ** 2 <= r * r


def stretch_whole_frame(images: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Eq. 1 with both percentiles over the whole frame, float32 (n, y, x) in [0, 1].

    ``a = x - p_low(x)``, ``a = a / p_high(a)``, clipped to [0, 1]. Where ``p_high(a)`` is 0
    (at least 99% of the pixels at the low percentile) the frame is stretched by its maximum,
    ``a / max(a)``, as the published encoder's recipe does; a truly flat frame gives zeros.
    """
    raw = np.asarray(images)
    if raw.ndim != 3:
        raise BadInputError("images", f"expected (n, y, x), got shape {raw.shape}", "pass a stack of frames")
    out, flat = _stretch(raw, None, low, high, None)  # whole-frame percentiles; flat frames come back as zeros
    for i in np.flatnonzero(flat):
        frame = raw[i].astype(np.float64)
        a = frame - np.percentile(frame, low)
        top = a.max()
        if top > 0:
            out[i] = np.clip(a / top, 0.0, 1.0)
    return out


def to_uint8_truncated(images: np.ndarray) -> np.ndarray:
    """float values in [0, 1] to uint8 0..255 by truncation, ``floor(255 * value)`` (OATH's quantisation)."""
    return np.clip(np.floor(np.asarray(images, np.float32) * np.float32(255.0)), 0, 255).astype(np.uint8)


def resize_uint8(frames: np.ndarray, size: int, method: str = "pil") -> np.ndarray:
    """Bilinear antialiased resize of uint8 (n, y, x) frames to uint8 (n, size, size).

    The resize of an 8-bit image, what PIL's ``Image.resize(..., BILINEAR)`` does to OATH's
    frames before the published encoder sees them. ``method`` (the setting's ``oath_resize``):
    "pil", PIL's bytes (:func:`~aurora_pipeline.ingest.pil_bilinear.pil_resize`); "float64",
    the float64 products of the first OATH-framed stores, rounded, within 1 level of PIL's.
    """
    if frames.shape[1:] == (size, size):
        return np.asarray(frames, np.uint8)
    if method == "pil":
        return pil_resize(frames, size)
    unit = np.asarray(frames, np.float32)
    unit /= np.float32(255.0)  # in place: the [0, 1] value of each level, float32 as before
    return to_uint8(_resize_float64(unit.astype(np.float64), size))


def preprocess_oath_frames(images: np.ndarray, cfg: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """Raw frames (n, y, x) to uint8 (n, s, s) framed like OATH: whole-frame eq. 1, 0 outside
    :func:`oath_circle`, no crop, uint8 by truncation, then the resize of the uint8 frame.

    With PIL's resize (``oath_resize="pil"``, new stores) the compiled kernel does it in one pass
    per frame (:mod:`~aurora_pipeline.ingest.oath_kernel`); :func:`oath_frames_numpy` is the
    same bytes in NumPy (the reference, and the path of ``oath_resize="float64"``).

    Raises:
        BadInputError: not (n, y, x), or ``cfg.fov`` is not "oath".
    """
    if images.ndim != 3:
        raise BadInputError("images", f"expected (n, y, x) frames, got shape {images.shape}", "pass a stack of frames")
    if cfg.fov != "oath":
        raise BadInputError("fov", f"OATH framing needs fov='oath', the setting says {cfg.fov!r}",
                            "use preprocess_frames for the other settings")
    if cfg.oath_resize != "pil" or images.dtype.kind != "u" or images.dtype.itemsize > 2:
        return oath_frames_numpy(images, cfg)  # the kernel takes unsigned counts of 16 bits at most (THEMIS's)
    if not oath_kernel.available():
        oath_kernel.warn_missing()
        return oath_frames_numpy(images, cfg)
    k = images.shape[1] * images.shape[2]
    around = (percentile_ranks(k, cfg.low_percentile), percentile_ranks(k, cfg.high_percentile))
    out, flat = oath_kernel.oath_frames(images, _sky(images.shape[1:], cfg), around, cfg.image_size)
    if flat.any():  # no contrast: stretched by their maximum, as the recipe does (rare)
        out[flat] = oath_frames_numpy(images[flat], cfg)
    return out


def oath_frames_numpy(images: np.ndarray, cfg: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """:func:`preprocess_oath_frames` in NumPy, block by block: the reference of the compiled kernel."""
    sky = _sky(images.shape[1:], cfg)
    out = np.empty((len(images), cfg.image_size, cfg.image_size), dtype=np.uint8)
    with one_blas_thread():  # as in preprocess_frames: small products, busy cores
        for i in range(0, len(images), cfg.block_frames):
            stretched = stretch_whole_frame(images[i : i + cfg.block_frames], cfg.low_percentile, cfg.high_percentile)
            levels = _truncate_unit(stretched)
            levels *= sky  # 0 outside the circle: on the uint8 levels, the cheapest place to do it
            out[i : i + cfg.block_frames] = resize_uint8(levels, cfg.image_size, cfg.oath_resize)
    return out


def _sky(shape: tuple[int, int], cfg: PreprocessConfig) -> np.ndarray:
    """uint8 (y, x): 1 inside :func:`oath_circle`, 0 outside (made once per shape and setting: a block's
    frames are framed in ~5 ms, the mask took ~0.5 ms of it)."""
    return _sky_mask(tuple(int(n) for n in shape), cfg.fov_radius, cfg.fov_shrink)


@functools.lru_cache(maxsize=16)
def _sky_mask(shape: tuple[int, int], fov_radius: float | None, fov_shrink: float) -> np.ndarray:
    mask = oath_circle(shape, PreprocessConfig(fov_radius=fov_radius, fov_shrink=fov_shrink)).astype(np.uint8)
    mask.setflags(write=False)
    return mask


def _truncate_unit(values: np.ndarray) -> np.ndarray:
    """:func:`to_uint8_truncated` of float32 values already in [0, 1], in two passes (scaled in
    place): the cast of a value in [0, 255] truncates, which is the floor of a non-negative value."""
    np.multiply(values, np.float32(255.0), out=values)
    return values.astype(np.uint8)


def oath_images_to_frames(green: np.ndarray, image_size: int, oath_resize: str = "pil") -> np.ndarray:
    """OATH release images (their 16-bit green channel, (n, y, x) uint16, already framed and
    stretched by the release) to frames as a ``fov="oath"`` store holds them: uint8 by
    truncation of ``green / 65535``, then :func:`resize_uint8` to ``image_size`` by ``oath_resize``."""
    unit = np.asarray(green, np.float64) / 65535.0
    return resize_uint8(to_uint8_truncated(unit), image_size, oath_resize)
