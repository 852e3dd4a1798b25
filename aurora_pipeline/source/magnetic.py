"""Magnetic coordinates of the imagers: AACGM-v2 latitude, longitude and magnetic local time.

Auroral statistics are binned by magnetic local time (MLT) and magnetic latitude, not by
UT and geographic latitude. This module gives them with ``aacgmv2`` (Shepherd 2014,
doi:10.1002/2014JA020264; the package's coefficients are valid from 1990 to 2030):

- :func:`site_position`: an imager's geodetic position, from its skymap when there is
  one, else from ``THEMIS_POSITIONS``.
- :func:`zenith_coordinates`: per frame, the magnetic latitude and MLT of the point
  above the imager at ``altitude_km`` (110 km, the 557.7 nm emission height).
- :func:`pixel_coordinates`: per pixel, magnetic latitude and longitude of the
  geographic ``lat``/``lon`` a skymap gives at its mapping altitude.

Why it is cheap. One ``aacgmv2`` call costs ~9 us (and ~26 us per MLT), so 10^9
per-frame calls would take hours. Two facts make per-frame values nearly free:

1. A site's magnetic latitude and longitude change only with the slow secular drift
   of the field (AACGM-v2 interpolates its coefficients linearly in time), so they are
   computed twice per site-year (1 January of the year and of the next) and
   interpolated linearly in time.
2. AACGM-v2 MLT is linear in magnetic longitude: ``MLT(mlon, t) = MLT(0, t) + mlon / 15``
   (mod 24; checked against ``aacgmv2.convert_mlt``). ``MLT(0, t)`` depends on time
   only (the magnetic longitude of the subsolar point), so it is computed once per UT
   hour of a year, for every site at once, and a cubic spline of it (minus UT) gives each
   frame's MLT within ~3 s of ``aacgmv2`` itself (``tests/source/test_magnetic.py``).

Outside AACGM's valid years (1990-2030) the values are missing (NaN); callers warn
once (:func:`outside_valid_years`). aacgmv2 writes a note to stderr at import when its
coefficient environment variables were set to other files; that start-up output is
silenced here (:func:`_aacgmv2`).

Site positions, ``THEMIS_POSITIONS``: the THEMIS rows of asilib's
``asilib/data/asi_locations.csv`` (github.com/mshumko/asilib, file version
cbe55c6043ba9da6fed4534222b1ac9b06e01811; Shumko et al. 2023, asilib), geodetic
latitude and east longitude in degrees. ``pina`` (Pinawa) is missing there and comes from
the same project's older ``asilib/data/asi_stations.csv`` (version
61b418cd1cd38fad11c530758bd4fc748d7dd26f). The table gives no altitudes (0 m is used;
the zenith point is at ``altitude_km`` above the ellipsoid whatever the site's height).
Against the real UCalgary skymaps' own positions: Gakona agrees to 0.003 deg; Athabasca's
row (54.71, -113.28) is 0.11 deg of latitude and 0.36 deg of longitude (~26 km) from its
2023 skymap (54.603, -113.644), which is why a skymap's position is preferred. ``loyw`` and
``lyrs`` have no published position here: without a skymap their magnetic coordinates
are missing.

    >>> lat, lon, alt_m = site_position("gako")
    >>> mlat, mlt = zenith_coordinates(np.array(["2012-01-10T08"], "datetime64[ms]"), lat, lon)
    >>> round(float(mlat[0]), 1), round(float(mlt[0]), 1)
    (63.2, 21.3)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import io
import logging
import warnings

import numpy as np

ALTITUDE_KM = 110.0          # the zenith point's height: the 557.7 nm emission, asilib's default
VALID_YEARS = (1990, 2030)   # aacgmv2 2.7.1 coefficients (IGRF14): [1990, 2030)
SOURCE = "aacgmv2 2.7.1 (AACGM-v2, Shepherd 2014)"

THEMIS_POSITIONS: dict[str, tuple[float, float]] = {  # code -> (geodetic lat, east lon), degrees; see docstring
    "atha": (54.71, -113.28), "chbg": (49.814, -74.419), "ekat": (64.73, -110.6699),
    "fsim": (61.756, -121.23), "fsmi": (60.017, -111.95), "fykn": (66.56, -145.214),
    "gako": (62.407, -145.158), "gbay": (53.316, -60.46), "gill": (56.376, -94.64),
    "inuv": (68.413, -133.77), "kapu": (49.392, -82.32), "kian": (66.971, -160.438),
    "kuuj": (58.1, -68.4), "mcgr": (62.953, -155.596), "nrsq": (61.16, -45.44),
    "pgeo": (53.815, -122.828), "rank": (62.82, -92.11), "snap": (63.58, -110.87),
    "snkq": (56.536, -79.23), "talo": (69.53, -93.53), "tpas": (53.994, -100.941),
    "whit": (61.01, -135.223), "yknf": (62.52, -114.31),
    "pina": (50.163, -96.066),  # asi_stations.csv (older file of the same project)
}


class MagneticCoordinatesWarning(UserWarning):
    """Magnetic coordinates are missing for some frames (outside AACGM's years, or no site position)."""


def site_position(site: str, skymap_position: tuple[float, float, float] | None = None
                  ) -> tuple[float, float, float] | None:
    """(geodetic latitude deg, east longitude deg in -180..180, altitude m) of an imager.

    ``skymap_position`` (the skymap's own site latitude, longitude, altitude) wins when
    given and finite; else ``THEMIS_POSITIONS``; None when neither knows the site.
    """
    if skymap_position is not None and np.all(np.isfinite(skymap_position)):
        lat, lon, alt = (float(v) for v in skymap_position)
        return lat, (lon + 180.0) % 360.0 - 180.0, alt
    if site.lower() in THEMIS_POSITIONS:
        lat, lon = THEMIS_POSITIONS[site.lower()]
        return lat, lon, 0.0
    return None


def outside_valid_years(times: np.ndarray) -> int:
    """How many of ``times`` (datetime64) fall outside AACGM-v2's valid years [1990, 2030)."""
    t = np.asarray(times).astype("datetime64[ms]")
    lo, hi = (np.datetime64(f"{y}-01-01", "ms") for y in VALID_YEARS)
    return int(np.count_nonzero((t < lo) | (t >= hi)))


def range_warning(what: str, n: int) -> None:
    """Say once (one warning per call) that ``n`` frames of ``what`` are outside AACGM's years."""
    warnings.warn(MagneticCoordinatesWarning(
        f"{what}: {n} frame(s) are outside AACGM-v2's valid years {VALID_YEARS[0]}-{VALID_YEARS[1]}; "
        "their magnetic latitude and MLT are missing (NaN)."), stacklevel=3)


def zenith_coordinates(times: np.ndarray, lat: float, lon: float, altitude_km: float = ALTITUDE_KM, *,
                       want: tuple[str, ...] = ("mlat", "mlt")) -> tuple[np.ndarray, ...]:
    """(mlat deg, MLT hours) float32 per frame of the point ``altitude_km`` above (lat, lon).

    ``times``: datetime64 (any unit), UT. NaN outside 1990-2030 (no warning here).
    ``want`` picks the outputs (in that order): MLT costs a spline evaluation, mlat does not.
    """
    t = np.asarray(times).astype("datetime64[ms]").astype(np.int64)
    out = {name: np.full(t.shape, np.nan, np.float64) for name in want}
    for year, keep in _years_of(t):
        if not VALID_YEARS[0] <= year < VALID_YEARS[1]:
            continue
        tk = t if keep is None else t[keep]
        (lat0, lon0), (lat1, lon1) = _site_aacgm(float(lat), float(lon), float(altitude_km), int(year))
        y0, y1 = _year_start_ms(year), _year_start_ms(year + 1)
        f = (tk - y0) / float(y1 - y0)
        values = {}
        if "mlat" in want:
            values["mlat"] = lat0 + f * (lat1 - lat0)
        if "mlt" in want:
            mlon = lon0 + f * ((lon1 - lon0 + 180.0) % 360.0 - 180.0)
            values["mlt"] = (_mlt0(tk, year) + mlon / 15.0) % 24.0
        for name, v in values.items():
            if keep is None:
                out[name][:] = v
            else:
                out[name][keep] = v
    return tuple(out[name].astype(np.float32) for name in want)


def mlt_of_zero_longitude(times: np.ndarray) -> np.ndarray:
    """float64 MLT (hours) of AACGM longitude 0 at ``times`` (datetime64), from the hourly spline."""
    t = np.asarray(times).astype("datetime64[ms]").astype(np.int64)
    out = np.full(t.shape, np.nan)
    for year, keep in _years_of(t):
        if keep is None:
            out[:] = _mlt0(t, year)
        else:
            out[keep] = _mlt0(t[keep], year)
    return out


def _mlt0(t_ms: np.ndarray, year: int) -> np.ndarray:
    spline = _mlt0_spline(int(year))
    if spline is None:
        return np.full(t_ms.shape, np.nan)
    hours = (t_ms - _year_start_ms(year)) / 3.6e6
    return (spline(hours) + hours) % 24.0


def _year_start_ms(year: int) -> int:
    return int(np.datetime64(f"{int(year):04d}-01-01", "ms").astype(np.int64))


def _years_of(t_ms: np.ndarray):
    """(year, mask or None for all) for each UT year spanned by int64 ms times; cheap on long arrays
    (a datetime64 -> year conversion per element costs far more than two comparisons)."""
    if not len(t_ms):
        return []
    first = int(np.datetime64(int(t_ms.min()), "ms").astype("datetime64[Y]").astype(np.int64)) + 1970
    last = int(np.datetime64(int(t_ms.max()), "ms").astype("datetime64[Y]").astype(np.int64)) + 1970
    if first == last:
        return [(first, None)]
    return [(y, (t_ms >= _year_start_ms(y)) & (t_ms < _year_start_ms(y + 1))) for y in range(first, last + 1)]


def pixel_coordinates(lat: np.ndarray, lon: np.ndarray, altitude_km: float, when) -> tuple[np.ndarray, np.ndarray]:
    """float32 (mlat, mlon) of geodetic ``lat``/``lon`` (any shape, NaN kept) at ``altitude_km``
    and time ``when`` (datetime64). All NaN outside 1990-2030."""
    lat = np.asarray(lat, np.float64)
    lon = np.asarray(lon, np.float64)
    mlat = np.full(lat.shape, np.nan, np.float32)
    mlon = np.full(lat.shape, np.nan, np.float32)
    t = np.datetime64(when, "s")
    if outside_valid_years(np.array([t])) or not lat.size:
        return mlat, mlon
    ok = np.isfinite(lat) & np.isfinite(lon)
    if ok.any():
        a = _aacgmv2()
        out_lat, out_lon, _ = a.convert_latlon_arr(lat[ok], lon[ok], float(altitude_km), t.astype(object), "G2A")
        mlat[ok], mlon[ok] = out_lat, out_lon
    return mlat, mlon


@functools.lru_cache(maxsize=None)
def _aacgmv2():
    """aacgmv2, imported with its start-up output to stderr silenced."""
    with contextlib.redirect_stderr(io.StringIO()):
        # aacgmv2: imported on first use, with its start-up output silenced
        import aacgmv2

    logging.getLogger("aacgmv2_logger").setLevel(logging.ERROR)
    return aacgmv2


@functools.lru_cache(maxsize=4096)
def _site_aacgm(lat: float, lon: float, altitude_km: float, year: int) -> tuple[tuple[float, float], ...]:
    """((mlat, mlon) on 1 January of ``year``, (mlat, mlon) on 1 January of the next year)."""
    a = _aacgmv2()
    ends = [dt.datetime(year, 1, 1), dt.datetime(year + 1, 1, 1)]
    if year + 1 >= VALID_YEARS[1]:
        ends[1] = dt.datetime(year, 12, 31, 23, 59, 59)
    out = []
    for when in ends:
        mlat, mlon, _ = a.convert_latlon(lat, lon, altitude_km, when, "G2A")
        out.append((float(mlat), float(mlon)))
    return tuple(out)


@functools.lru_cache(maxsize=64)
def _mlt0_spline(year: int):
    """Cubic spline of MLT(mlon=0) - UT over the hours of ``year`` (hours since 1 January), or None
    outside the valid years. Built from one ``aacgmv2.convert_mlt`` per hour (0.2 s a year)."""
    if not VALID_YEARS[0] <= year < VALID_YEARS[1]:
        return None
    # scipy: only when MLT is computed (open_site without magnetic coordinates does without)
    from scipy.interpolate import CubicSpline

    start = dt.datetime(year, 1, 1)
    first = -2 if year > VALID_YEARS[0] else 0
    n_hours = int((dt.datetime(year + 1, 1, 1) - start).total_seconds() // 3600)
    last = n_hours + 2 if year + 1 < VALID_YEARS[1] else n_hours - 1
    hours = np.arange(first, last + 1)
    when = np.array([start + dt.timedelta(hours=int(h)) for h in hours])
    mlt = _aacgmv2().convert_mlt(np.zeros(len(hours)), when)
    unwrapped = np.unwrap(mlt * (np.pi / 12.0)) * (12.0 / np.pi)
    return CubicSpline(hours.astype(np.float64), unwrapped - hours)


# --- lazy coordinates for an opened store (aurora_pipeline.store.read) ----------------------------------
_ATTRS = {
    "mlat": {"units": "degrees_north", "long_name": "AACGM-v2 magnetic latitude of the imager's zenith"},
    "mlt": {"units": "hour", "long_name": "AACGM-v2 magnetic local time of the imager's zenith"},
    "pixel_mlat": {"units": "degrees_north", "long_name": "AACGM-v2 magnetic latitude of the pixel's lat/lon"},
    "pixel_mlon": {"units": "degrees_east", "long_name": "AACGM-v2 magnetic longitude of the pixel's lat/lon"},
}
FRAME_BLOCK = 1 << 20  # frames per dask block of mlat / mlt


def lazy_frame_coords(times: np.ndarray, position: tuple[float, float, float] | None, position_source: str,
                      altitude_km: float = ALTITUDE_KM) -> dict:
    """``{"mlat": (...), "mlt": (...)}`` xarray coordinate tuples along ``time``, computed only when
    read (dask): nothing of aacgmv2 is imported or called by opening. All NaN without a position."""
    # dask.array: off `import aurora_pipeline.store` (store.read imports this module)
    import dask.array as da

    t = da.from_array(np.asarray(times).astype("datetime64[ms]").astype(np.int64), chunks=FRAME_BLOCK, name=False)
    lat, lon = (np.nan, np.nan) if position is None else position[:2]
    out = {}
    for name in ("mlat", "mlt"):
        data = t.map_blocks(_frame_block, lat, lon, altitude_km, name, dtype=np.float32,
                            meta=np.empty((0,), np.float32))  # a meta given: dask need not call it to learn one
        attrs = dict(_ATTRS[name], aacgm_altitude_km=float(altitude_km), aacgm_source=SOURCE,
                     site_position_source=position_source,
                     comment="missing (NaN) outside AACGM-v2's years 1990-2030 or without a site position")
        out[name] = ("time", data, attrs)
    return out


def _frame_block(t_ms: np.ndarray, lat: float, lon: float, altitude_km: float, which: str) -> np.ndarray:
    if not np.isfinite(lat) or not len(t_ms):
        return np.full(t_ms.shape, np.nan, np.float32)
    return zenith_coordinates(t_ms.astype("datetime64[ms]"), lat, lon, altitude_km, want=(which,))[0]


def lazy_pixel_coords(lat: np.ndarray, lon: np.ndarray, altitude_km: float, epoch: np.datetime64) -> dict:
    """``{"pixel_mlat": ..., "pixel_mlon": ...}`` (y, x) coordinate tuples of the skymap's ``lat``/``lon``
    at ``altitude_km``, for the field at ``epoch`` (computed only when read)."""
    # dask: off `import aurora_pipeline.store`, as above
    import dask
    import dask.array as da

    epoch = np.datetime64(epoch, "h")
    out = {}
    for i, name in enumerate(("pixel_mlat", "pixel_mlon")):
        block = dask.delayed(_pixel_block, pure=True)(np.asarray(lat), np.asarray(lon), float(altitude_km), epoch, i)
        attrs = dict(_ATTRS[name], mapping_altitude_km=float(altitude_km), aacgm_epoch=str(epoch), aacgm_source=SOURCE,
                     comment="computed for the field at aacgm_epoch (the middle of the opened frames); "
                             "missing (NaN) outside the field of view or AACGM-v2's years 1990-2030")
        out[name] = (("y", "x"), da.from_delayed(block, np.shape(lat), dtype=np.float32), attrs)
    return out


def _pixel_block(lat, lon, altitude_km, epoch, which: int) -> np.ndarray:
    return pixel_coordinates(lat, lon, altitude_km, epoch)[which]
