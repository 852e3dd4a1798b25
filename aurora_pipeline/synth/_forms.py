"""What each sky kind adds to an all-sky frame (private helpers of :mod:`.scenes`).

Each ``make_<kind>`` draws the fixed parameters of one scene from ``rng`` and returns a
function ``layer(t) -> (signal, transmission)``:

- ``signal``: float32 (size, size) counts added above the dark offset and the airglow
  background, already multiplied by the camera's field-of-view mask and vignetting;
- ``transmission``: float32 (size, size) fraction of starlight that gets through
  (clouds), or ``None`` for a clear line of sight.

Everything that depends on ``t`` (seconds) is a continuous function of it (drifting
phases, moving windows on fixed random fields), never a fresh random draw, so
consecutive frames differ a little and the same (kind, seed, t) gives the same frame.

Auroral forms live on a plane at 110 km altitude: ``north_km``/``east_km`` are the
coordinates where each pixel's line of sight meets that plane, so an east-west arc
comes out as a band bent by the fisheye projection and squeezed towards the horizon,
as in real all-sky images.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Layer = Callable[[float], "tuple[np.ndarray, np.ndarray | None]"]
TWO_PI = 2.0 * np.pi


def _loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _rotated_plane(geom, rng, max_tilt_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """The 110-km plane coordinates turned by a random tilt (arcs are not exactly east-west)."""
    a = np.deg2rad(rng.uniform(-max_tilt_deg, max_tilt_deg))
    north = (np.cos(a) * geom.north_km + np.sin(a) * geom.east_km).astype(np.float32)
    east = (np.cos(a) * geom.east_km - np.sin(a) * geom.north_km).astype(np.float32)
    return north, east


def periodic_field(rng: np.random.Generator, n: int, slope: float, cutoff: float) -> np.ndarray:
    """A smooth random field, periodic over n pixels, tiled 2 x 2, zero mean, unit std.

    Returns float32 (2n, 2n) so that any (n, n) window, at any shift, is one slice.
    """
    k2 = np.fft.fftfreq(n)[:, None] ** 2 + np.fft.fftfreq(n)[None, :] ** 2
    k2[0, 0] = np.inf
    amplitude = k2 ** (-slope / 4.0) * np.exp(-k2 / cutoff**2)
    noise = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    field = np.fft.ifft2(noise * amplitude).real
    field = (field - field.mean()) / field.std()
    return np.tile(field.astype(np.float32), (2, 2))


def window(tiled: np.ndarray, size: int, dx: float, dy: float) -> np.ndarray:
    """The (size, size) window of a tiled periodic field shifted by (dx, dy) pixels.

    Bilinear in the fractional part, so the window moves smoothly with the shift.
    """
    n = tiled.shape[0] // 2
    fx, fy = dx % 1.0, dy % 1.0
    ix, iy = int(np.floor(dx)) % n, int(np.floor(dy)) % n
    a = tiled[iy : iy + size + 1, ix : ix + size + 1]
    top = a[:-1, :-1] * (1.0 - fx) + a[:-1, 1:] * fx
    bottom = a[1:, :-1] * (1.0 - fx) + a[1:, 1:] * fx
    return top * (1.0 - fy) + bottom * fy


def _band(offset: np.ndarray, half_width: float, edge: float) -> np.ndarray:
    """1 inside |offset| < half_width, 0 outside, with a linear edge `edge` km wide."""
    band = np.abs(offset)
    band -= half_width
    band *= -1.0 / edge
    band += 0.5
    return np.clip(band, 0.0, 1.0, out=band)


class _Wave:
    """``amplitude * sin(x / length + phase)`` over a fixed map x, for any amplitude and phase, cheaply."""

    def __init__(self, x: np.ndarray, length: float):
        self.sin = np.sin(x / length).astype(np.float32)
        self.cos = np.cos(x / length).astype(np.float32)

    def __call__(self, amplitude: float, phase: float) -> np.ndarray:
        a, b = np.float32(amplitude * np.cos(phase)), np.float32(amplitude * np.sin(phase))
        return self.sin * a + self.cos * b


def _phase(t: float, period: float, phase: float) -> float:
    return TWO_PI * t / period + phase


def make_clear(geom, rng, gain, background) -> Layer:
    """No aurora: airglow that breathes by a few per cent, a town's glow, often the Milky Way.

    The Milky Way is a great circle turning with the stars (about the zenith, at the
    sidereal rate); ``gain`` here already includes the van Rhijn factor, which is close
    enough for a band of unresolved stars seen through the same air.
    """
    depth, period, phase = rng.uniform(0.02, 0.08), rng.uniform(600.0, 2400.0), rng.uniform(0, TWO_PI)
    town_az = rng.uniform(0, TWO_PI)
    town = background * rng.uniform(0.0, 1.5) * geom.rho**2 * (1 + np.cos(geom.phi - town_az)) / 2
    static = (gain * town).astype(np.float32)
    glow = (gain * background).astype(np.float32)
    zenith = np.minimum(geom.rho, 1.0) * (np.pi / 2)
    sin_cos = (np.sin(zenith) * np.cos(geom.phi)).astype(np.float32)
    sin_sin = (np.sin(zenith) * np.sin(geom.phi)).astype(np.float32)
    cos_z = np.cos(zenith).astype(np.float32)
    tilt, pole_az = rng.uniform(0.1, 1.4), rng.uniform(0, TWO_PI)  # the band's pole
    milky = rng.uniform(60.0, 400.0) * (rng.random() < 0.7)
    width = rng.uniform(0.12, 0.25)  # radians
    band_gain = (gain * milky).astype(np.float32)

    def layer(t: float):
        signal = static + glow * np.float32(depth * np.sin(_phase(t, period, phase)))
        if milky > 0:
            az = pole_az + 7.292e-5 * t
            s = np.sin(tilt)
            across = cos_z * np.float32(np.cos(tilt) / width)
            across += sin_cos * np.float32(s * np.cos(az) / width) + sin_sin * np.float32(s * np.sin(az) / width)
            signal += band_gain / (1.0 + across * across)
        return signal, None

    return layer


def make_arc(geom, rng, gain, background) -> Layer:
    """One to three thin east-west bands with sharp edges, drifting north-south."""
    north, east = _rotated_plane(geom, rng, 20.0)
    peak = _loguniform(rng, 1500.0, 25000.0)
    arcs = []
    for _ in range(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15])):
        arcs.append(
            dict(
                static=(north - np.float32(rng.uniform(-6e-5, 6e-5)) * east**2).astype(np.float32),
                waves=_Wave(east, rng.uniform(80, 300)), brightness=_Wave(east, rng.uniform(60, 400)),
                n0=rng.uniform(-280, 280), drift=rng.uniform(15, 100), drift_period=rng.uniform(900, 3600),
                wave=rng.uniform(0, 12), wave_period=rng.uniform(200, 900),
                half_width=rng.uniform(4, 18), edge=rng.uniform(0.8, 3.0),
                modulation=rng.uniform(0, 0.35), mod_period=rng.uniform(120, 600),
                amplitude=peak * rng.uniform(0.4, 1.0), glow=rng.uniform(0.05, 0.25) * (rng.random() < 0.7),
                glow_width=rng.uniform(40, 150), phases=rng.uniform(0, TWO_PI, 3),
            )
        )
    gain = gain.astype(np.float32)

    def layer(t: float):
        total = np.zeros_like(gain)
        for a in arcs:
            p = a["phases"]
            centre = a["n0"] + a["drift"] * np.sin(_phase(t, a["drift_period"], p[0]))
            offset = a["static"] - np.float32(centre)
            offset -= a["waves"](a["wave"], _phase(t, a["wave_period"], p[1]))
            shape = _band(offset, a["half_width"], a["edge"])
            if a["glow"] > 0:
                shape += np.float32(a["glow"]) / (1.0 + (offset * np.float32(1.0 / a["glow_width"])) ** 2)
            shape *= 1.0 + a["brightness"](a["modulation"], _phase(t, a["mod_period"], p[2]))
            total += shape * np.float32(a["amplitude"])
        return total * gain, None

    return layer


def make_discrete(geom, rng, gain, background) -> Layer:
    """Sharp-edged forms that do not cross the sky: folded, rayed bands and bright patches."""
    north, east = _rotated_plane(geom, rng, 60.0)
    peak = _loguniform(rng, 2000.0, 40000.0)
    forms = []
    for _ in range(rng.choice([1, 2], p=[0.6, 0.4])):
        fold_len, ray_len = rng.uniform(40, 120), rng.uniform(2.0, 6.0)  # km
        forms.append(
            dict(
                folds=_Wave(east, fold_len), folds2=_Wave(east, fold_len / 2), rays=_Wave(east, ray_len),
                n0=rng.uniform(-200, 200), e0=rng.uniform(-150, 150), sway=rng.uniform(20, 80),
                sway_period=rng.uniform(600, 2400), fold=rng.uniform(30, 110), fold2=rng.uniform(0, 40),
                fold_period=rng.uniform(300, 1200), length=rng.uniform(80, 250),
                half_width=rng.uniform(5, 25), edge=rng.uniform(0.8, 2.0), ray_period=rng.uniform(60, 300),
                amplitude=peak * rng.uniform(0.4, 1.0), phases=rng.uniform(0, TWO_PI, 4),
            )
        )
    patches = [
        dict(n=rng.uniform(-250, 250), e=rng.uniform(-250, 250), a=rng.uniform(20, 60), b=rng.uniform(30, 90),
             drift=rng.uniform(10, 50), period=rng.uniform(600, 1800), phase=rng.uniform(0, TWO_PI),
             amplitude=peak * rng.uniform(0.2, 0.7))
        for _ in range(rng.choice([0, 1, 2], p=[0.4, 0.4, 0.2]))
    ]
    texture = periodic_field(rng, geom.size, slope=3.0, cutoff=0.15)
    gain = gain.astype(np.float32)

    def layer(t: float):
        total = np.zeros_like(gain)
        ragged = window(texture, geom.size, 0.02 * t, -0.015 * t)
        for f in forms:
            p = f["phases"]
            fold_phase, sway_phase = _phase(t, f["fold_period"], p[0]), _phase(t, f["sway_period"], p[1])
            offset = north - np.float32(f["n0"] + f["sway"] * np.sin(sway_phase))
            offset -= f["folds"](f["fold"], fold_phase)
            offset -= f["folds2"](f["fold2"], fold_phase + p[2])
            offset += ragged * np.float32(0.3 * f["half_width"])
            shape = _band(offset, f["half_width"], f["edge"])
            along = east - np.float32(f["e0"] + f["sway"] * np.cos(sway_phase))
            along *= np.float32(1.0 / f["length"])
            along *= along
            shape /= 1.0 + along * along  # the form fades out along its length instead of crossing the sky
            rays = 0.5 + 0.5 * f["rays"](1.0, _phase(t, f["ray_period"], p[3]))
            shape *= 0.35 + 0.65 * rays * rays
            total += shape * np.float32(f["amplitude"])
        for q in patches:
            s = q["drift"] * np.sin(_phase(t, q["period"], q["phase"]))
            d2 = ((north - np.float32(q["n"] + s)) * np.float32(1 / q["a"])) ** 2
            d2 += ((east - np.float32(q["e"] - s)) * np.float32(1 / q["b"])) ** 2
            d2 += np.float32(0.35) * ragged  # ragged, curling edges rather than ellipses
            total += np.clip((1.0 - d2) * 5.0, 0.0, 1.0) * np.float32(q["amplitude"])
        return total * gain, None

    return layer


def make_diffuse(geom, rng, gain, background) -> Layer:
    """Large fuzzy patches, slowly drifting and gently pulsating, with a patchy texture."""
    north, east = geom.north_km, geom.east_km
    peak = _loguniform(rng, 600.0, 8000.0)
    blobs = [
        dict(n=rng.uniform(-350, 350), e=rng.uniform(-400, 400), a=rng.uniform(80, 300), b=rng.uniform(150, 500),
             drift=rng.uniform(30, 100), period=rng.uniform(1200, 3600), pulse=rng.uniform(0.03, 0.12),
             pulse_period=rng.uniform(30, 120), phases=rng.uniform(0, TWO_PI, 2),
             amplitude=peak * rng.uniform(0.3, 1.0))
        for _ in range(rng.integers(3, 6))
    ]
    texture = periodic_field(rng, geom.size, slope=3.0, cutoff=0.08)
    speed = rng.uniform(0.01, 0.04, 2) * rng.choice([-1, 1], 2)
    depth = np.float32(rng.uniform(0.15, 0.35))
    gain = gain.astype(np.float32)

    def layer(t: float):
        total = np.zeros_like(gain)
        for b in blobs:
            s = b["drift"] * np.sin(_phase(t, b["period"], b["phases"][0]))
            q = ((north - np.float32(b["n"] + s)) * np.float32(1 / b["a"])) ** 2
            q += ((east - np.float32(b["e"] + 0.5 * s)) * np.float32(1 / b["b"])) ** 2
            q += 1.0
            amp = b["amplitude"] * (1.0 + b["pulse"] * np.sin(_phase(t, b["pulse_period"], b["phases"][1])))
            total += np.float32(amp) / (q * q)
        patchy = window(texture, geom.size, speed[0] * t, speed[1] * t)
        total *= 1.0 + depth * patchy
        return np.maximum(total, 0.0) * gain, None

    return layer


def make_cloudy(geom, rng, gain, background) -> Layer:
    """Smooth cloud decks drifting over the camera, lit from below, hiding the stars."""
    size = geom.size
    coarse = periodic_field(rng, size, slope=4.0, cutoff=0.06)
    fine = periodic_field(rng, size, slope=3.0, cutoff=0.2)
    angle = rng.uniform(0, TWO_PI)
    speed = rng.uniform(0.03, 0.12)
    velocity = speed * np.array([np.cos(angle), np.sin(angle)])
    threshold = np.float32(rng.uniform(-2.0, -0.6))  # mostly overcast, with some gaps
    sharpness = np.float32(rng.uniform(0.5, 1.5))
    city = rng.uniform(0, TWO_PI)
    from_below = 1.0 + rng.uniform(0.5, 2.0) * geom.rho**2 * (1 + np.cos(geom.phi - city)) / 2  # a town's lights
    lit = (gain * _loguniform(rng, 500.0, 9000.0) * from_below).astype(np.float32)

    def layer(t: float):
        dx, dy = velocity * t
        deck = window(coarse, size, dx, dy)
        deck += np.float32(0.45) * window(fine, size, 1.3 * dx + 0.2 * dy, 1.3 * dy - 0.2 * dx)
        cover = np.clip((deck - threshold) * sharpness, 0.0, 1.0)
        signal = lit * cover * (0.55 + 0.45 * cover)
        return signal, 1.0 - np.float32(0.97) * cover

    return layer


def make_moon(geom, rng, gain, background) -> Layer:
    """A saturated lunar disc with a halo, a wide scattered glow, a blooming column and a ghost."""
    size, radius, c = geom.size, geom.radius, geom.centre
    elevation = rng.uniform(8.0, 50.0)
    rho_moon = (90.0 - elevation) / 90.0 * radius
    azimuth = rng.uniform(0, TWO_PI)
    rate = 7.0e-5  # rad/s, a little under the sidereal rate
    disc_r = rng.uniform(2.5, 4.5)
    halo, halo_r = _loguniform(rng, 20000.0, 200000.0), rng.uniform(4.0, 10.0)
    wide, wide_r = _loguniform(rng, 2500.0, 20000.0), rng.uniform(50.0, 130.0)
    bloom, bloom_len = _loguniform(rng, 3000.0, 60000.0), rng.uniform(5.0, 40.0)
    ghost = rng.uniform(0.003, 0.02) * halo
    x = np.arange(size, dtype=np.float32) - np.float32(c)
    gain = gain.astype(np.float32)

    def layer(t: float):
        az = azimuth + rate * t
        mx, my = rho_moon * np.cos(az), rho_moon * np.sin(az)
        d2 = ((x - np.float32(mx)) ** 2)[None, :] + ((x - np.float32(my)) ** 2)[:, None]
        light = np.float32(halo) / (1.0 + d2 * np.float32(1 / halo_r**2))
        light += np.float32(wide) / (1.0 + d2 * np.float32(1 / wide_r**2))
        light += np.clip((disc_r**2 - d2) * np.float32(1 / (2 * disc_r)) + 0.5, 0.0, 1.0) * np.float32(1e6)
        g2 = ((x + np.float32(mx)) ** 2)[None, :] + ((x + np.float32(my)) ** 2)[:, None]
        light += np.float32(ghost) / (1.0 + g2 * np.float32(1 / 16.0)) ** 2
        signal = light * gain
        column = np.exp(-((x - np.float32(mx)) ** 2) / 2.0)[None, :]
        signal += np.float32(bloom) * column * np.exp(-np.abs(x - np.float32(my)) / bloom_len)[:, None]
        return signal, None

    return layer


MAKERS = {
    "arc": make_arc,
    "diffuse": make_diffuse,
    "discrete": make_discrete,
    "cloudy": make_cloudy,
    "moon": make_moon,
    "clear": make_clear,
}
