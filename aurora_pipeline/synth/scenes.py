"""Synthetic all-sky scenes: raw THEMIS-like imager frames of six sky kinds.

A :class:`SkyScene` is one stretch of sky of one kind (the OATH classes: ``arc``,
``diffuse``, ``discrete``, ``cloudy``, ``moon``, ``clear``) seen by one camera. Its
``render(t)`` gives the raw frame at ``t`` seconds as uint16 counts, the way a THEMIS
ASI Level-1 file stores it:

- a circular fisheye field of view (equidistant projection, radius 0.47 * size pixels)
  with a jagged horizon (trees, buildings); outside it only the dark offset
  (about 2,250 to 2,400 counts, like the real Gakona file) and read noise;
- an airglow background that brightens towards the horizon (van Rhijn) while the
  optics darken it (vignetting);
- a few hundred stars turning about the zenith at about the sidereal rate;
- shot noise and read noise, and saturation at 65535 (the moon always saturates).

Frames are deterministic for (kind, seed, t) and evolve smoothly with t; every random
choice is made once, in ``__init__``. Brightness varies a lot within each kind, so mean
brightness alone does not tell the kinds apart. A 256 x 256 frame takes about a few
milliseconds.

    >>> scene = SkyScene("arc", seed=3)
    >>> frame = scene.render(120.0)          # uint16 (256, 256)
    >>> img = render_oath_image("moon", 7)   # float32 (256, 256) in [0, 1]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import map_coordinates

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.ingest.preprocess import stretch
from aurora_pipeline.synth._forms import MAKERS

CLASSES = ("arc", "diffuse", "discrete", "cloudy", "moon", "clear")

FOV_RADIUS = 0.47  # field-of-view radius as a fraction of the frame size
EMISSION_KM = 110.0  # altitude of the auroral (557.7 nm) emission layer
EARTH_KM = 6371.0
SIDEREAL_RATE = 7.292e-5  # rad/s
SHOT_GAIN = 2.0  # counts per detected photon: shot-noise variance = 2 * signal
# Share of OATH's 5,824 labels per class: how often each kind is scheduled.
KIND_WEIGHTS = np.array([774, 1102, 1400, 852, 614, 1082], dtype=float) / 5824.0


@dataclass(frozen=True)
class _Geometry:
    """Per-pixel viewing geometry of a size x size fisheye frame (float32 (size, size) maps)."""

    size: int
    radius: float  # field-of-view radius, pixels
    centre: float  # pixel coordinate of the zenith (both axes)
    rho: np.ndarray  # distance from the zenith / radius (0 zenith, 1 horizon)
    phi: np.ndarray  # azimuth, radians, from the +x axis
    north_km: np.ndarray  # where the line of sight meets the 110-km layer
    east_km: np.ndarray
    van_rhijn: np.ndarray  # path-length brightening of a thin emitting layer (capped at 2.5)


@functools.lru_cache(maxsize=4)
def _geometry(size: int) -> _Geometry:
    c = (size - 1) / 2.0
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) - c
    radius = FOV_RADIUS * size
    rho = np.hypot(x, y) / radius
    phi = np.arctan2(y, x)
    zenith = np.minimum(rho, 1.0) * (np.pi / 2)
    ratio = EARTH_KM / (EARTH_KM + EMISSION_KM)
    elevation = np.pi / 2 - zenith
    central = np.pi / 2 - elevation - np.arcsin(ratio * np.cos(elevation))
    ground_km = EARTH_KM * central
    van_rhijn = np.minimum(1.0 / np.sqrt(1.0 - (ratio * np.sin(zenith)) ** 2), 2.5)
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return _Geometry(size, radius, c, f32(rho), f32(phi), f32(ground_km * np.sin(phi)),
                     f32(ground_km * np.cos(phi)), f32(van_rhijn))


@dataclass(frozen=True)
class _Instrument:
    """What stays the same for one camera: dark offset, read noise, horizon and vignetting."""

    offset: float  # dark level, counts
    read_noise: float  # counts rms
    gain: np.ndarray  # float32 (size, size): open-sky mask (0 outside the lens or behind trees) * vignetting


@functools.lru_cache(maxsize=16)
def _instrument(size: int, instrument_seed: int) -> _Instrument:
    geom = _geometry(size)
    rng = np.random.default_rng(np.random.SeedSequence([instrument_seed, 0x1A57]))
    k = np.arange(1, 9)
    amps = rng.normal(0, 1, 8) / k
    phases = rng.uniform(0, 2 * np.pi, 8)
    ridge = sum(a * np.cos(i * geom.phi + p) for a, i, p in zip(amps, k, phases))  # hills and tree lines
    skyline = 0.5 + 0.5 * np.tanh(ridge)
    for centre in rng.uniform(-np.pi, np.pi, rng.integers(3, 9)):  # single trees or masts
        away = np.angle(np.exp(1j * (geom.phi - centre)))  # azimuth difference, wrapped to [-pi, pi]
        skyline += rng.uniform(1, 3) * np.exp(-((away / rng.uniform(0.01, 0.04)) ** 2))
    horizon = geom.radius * (1.0 - rng.uniform(0.01, 0.04) * skyline)
    mask = np.clip(horizon - geom.rho * geom.radius + 0.5, 0.0, 1.0)
    rho = np.minimum(geom.rho, 1.0)
    vignetting = (1.0 - rng.uniform(0.3, 0.45) * rho**2) * (1.0 - 0.85 * rho**12)  # lens fall-off at the rim
    offset, read_noise = float(rng.uniform(2250, 2400)), float(rng.uniform(15, 22))
    return _Instrument(offset, read_noise, (mask * vignetting).astype(np.float32))


@functools.lru_cache(maxsize=4)
def _noise_bank(size: int) -> np.ndarray:
    """Standard-normal float32 (2 size, 2 size); each frame reads windows of it at offsets hashed from t."""
    return np.random.default_rng(0x5EED).standard_normal((2 * size, 2 * size), dtype=np.float32)


class SkyScene:
    """One scene of one sky kind, rendered as raw imager counts at any time.

    Args:
        kind: one of :data:`CLASSES`.
        seed: any non-negative int; picks the scene (forms, brightness, stars, motion).
        size: frame side in pixels (THEMIS full resolution is 256).
        instrument_seed: picks the camera (dark offset, horizon, vignetting); keep it
            fixed per site so that every scene of a site shares the same horizon.

    Raises:
        BadInputError: unknown kind, negative seed, or size below 32.
    """

    def __init__(self, kind: str, seed: int, size: int = 256, *, instrument_seed: int = 0):
        if kind not in CLASSES:
            raise BadInputError(f"SkyScene(kind={kind!r})", f"unknown sky kind {kind!r}.", f"Use one of {CLASSES}.")
        if int(seed) < 0 or int(instrument_seed) < 0:
            raise BadInputError(f"SkyScene(seed={seed})", "seeds must be non-negative integers.", "Pass a seed >= 0.")
        if int(size) < 32:
            raise BadInputError(f"SkyScene(size={size})", "frames smaller than 32 pixels are not supported.",
                                "Use size >= 32.")
        self.kind, self.seed, self.size = kind, int(seed), int(size)
        self._kind_index = CLASSES.index(kind)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self._kind_index, self.size]))
        geom = _geometry(self.size)
        inst = _instrument(self.size, int(instrument_seed))
        self._read_noise = inst.read_noise
        top = 2500.0 if kind == "clear" else 1200.0  # twilight / light-polluted clear skies
        background = float(np.exp(rng.uniform(np.log(250.0), np.log(top))))
        self._offset = np.float32(inst.offset + rng.uniform(-25, 25))
        self._base = (self._offset + inst.gain * background * geom.van_rhijn).astype(np.float32)
        self._layer = MAKERS[kind](geom, rng, inst.gain * geom.van_rhijn, background)
        self._init_stars(rng, geom, inst, star_scale=rng.uniform(0.25, 0.6) if kind == "moon" else 1.0)

    def _init_stars(self, rng, geom: _Geometry, inst: _Instrument, star_scale: float) -> None:
        n = int(rng.integers(250, 450))
        cos_zenith = rng.uniform(0.0, 1.0, n)  # uniform on the visible hemisphere
        zenith = np.arccos(cos_zenith)
        self._star_r = zenith / (np.pi / 2) * geom.radius
        self._star_phi = rng.uniform(0, 2 * np.pi, n)
        flux = np.minimum(300.0 * rng.uniform(0.0, 1.0, n) ** (-1 / 1.3), 60000.0)
        airmass = np.minimum(1.0 / np.maximum(cos_zenith, 0.1), 10.0)
        self._star_flux = flux * np.exp(-0.25 * (airmass - 1.0)) * star_scale
        self._star_gain = inst.gain.ravel()
        self._centre = geom.centre

    def _stars(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Where the stars' light falls at t: flat pixel indices and counts, split bilinearly over
        four pixels so that the stars move smoothly by fractions of a pixel."""
        s = self.size
        phi = self._star_phi + SIDEREAL_RATE * t
        x = self._centre + self._star_r * np.cos(phi)
        y = self._centre + self._star_r * np.sin(phi)
        ix, iy = np.floor(x).astype(np.intp), np.floor(y).astype(np.intp)
        fx, fy = x - ix, y - iy
        keep = (ix >= 0) & (ix < s - 1) & (iy >= 0) & (iy < s - 1)
        ix, iy, fx, fy, f = ix[keep], iy[keep], fx[keep], fy[keep], self._star_flux[keep]
        idx = iy * s + ix
        f = f * self._star_gain[idx]
        where = np.concatenate([idx, idx + 1, idx + s, idx + s + 1])
        weights = np.concatenate([f * (1 - fx) * (1 - fy), f * fx * (1 - fy), f * (1 - fx) * fy, f * fx * fy])
        return where, weights

    def _noise_windows(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        s = self.size
        ms = int(round(t * 1000.0)) % (1 << 62)
        ox, oy, px, py = np.random.SeedSequence([self.seed, self._kind_index, ms]).generate_state(4) % s
        bank = _noise_bank(s)
        return bank[oy : oy + s, ox : ox + s], bank[py : py + s, px : px + s]

    def render(self, t: float) -> np.ndarray:
        """The raw frame at t seconds.

        Returns:
            uint16 (size, size): imager counts (dark offset + sky + noise), saturated at 65535.
        """
        t = float(t)
        signal, transmission = self._layer(t)
        where, weights = self._stars(t)
        if transmission is not None:
            weights = weights * transmission.ravel()[where]
        stars = np.bincount(where, weights=weights, minlength=self.size * self.size)
        counts = self._base + signal
        counts += stars.reshape(self.size, self.size).astype(np.float32)
        read, shot = self._noise_windows(t)
        shot_sigma = np.sqrt(np.maximum(counts - self._offset, 0.0) * np.float32(SHOT_GAIN))
        counts += shot * shot_sigma
        counts += np.float32(self._read_noise) * read
        np.clip(counts, 0.0, 65535.0, out=counts)
        return counts.astype(np.uint16)


def render_oath_image(kind: str, seed: int, size: int = 256) -> np.ndarray:
    """A synthetic frame prepared like OATH's ``cropped_scaled`` images.

    The raw frame (at a seed-dependent time) is cropped by 15 % of the field-of-view
    radius to drop the lowest elevations, resampled so that the remaining disc fills the
    frame as in OATH, and stretched by eq. 1 of the paper
    (``clip((x - p1) / p99(x - p1), 0, 1)``, percentiles over the disc); outside the
    disc is 0.

    Returns:
        float32 (size, size) in [0, 1].
    """
    raw = SkyScene(kind, seed, size).render(float(seed % 1800) * 3.0).astype(np.float32)
    geom = _geometry(size)
    keep = 0.85 * geom.radius  # radius kept after the 15 % crop
    half = keep / 0.93  # OATH's disc spans about 93 % of the frame
    grid = np.linspace(geom.centre - half, geom.centre + half, size)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    image = map_coordinates(raw, [yy, xx], order=1, mode="nearest")
    inside = np.hypot(yy - geom.centre, xx - geom.centre) <= keep
    return stretch(image[None], mask=inside)[0]


@dataclass(frozen=True)
class SceneRun:
    """One scene shown for a run of consecutive frames ``start <= i < stop``."""

    kind: str
    seed: int
    start: int
    stop: int


def scene_schedule(hours: float, frames_per_hour: int, rng: np.random.Generator,
                   *, min_minutes: float = 3.0, max_minutes: float = 40.0) -> list[SceneRun]:
    """Which scene is on the sky when: runs of several minutes to tens of minutes.

    Run lengths are log-uniform in [min_minutes, max_minutes]; each run's kind differs
    from the one before and is drawn with OATH's class frequencies.

    Returns:
        SceneRun list covering frames 0 .. round(hours * frames_per_hour) - 1 in order.
    """
    n = int(round(hours * frames_per_hour))
    per_minute = frames_per_hour / 60.0
    runs: list[SceneRun] = []
    start, previous = 0, -1
    while start < n:
        minutes = np.exp(rng.uniform(np.log(min_minutes), np.log(max_minutes)))
        stop = min(n, start + max(1, int(round(minutes * per_minute))))
        weights = KIND_WEIGHTS.copy()
        if previous >= 0:
            weights[previous] = 0.0
        kind = int(rng.choice(len(CLASSES), p=weights / weights.sum()))
        runs.append(SceneRun(CLASSES[kind], int(rng.integers(0, 2**31 - 1)), start, stop))
        start, previous = stop, kind
    return runs
