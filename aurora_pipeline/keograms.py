"""Keograms: the sky's north-south (or east-west) line through the zenith, frame after frame.

A keogram is the picture people look at first: time along x, the slice through the
zenith along y, so an arc drifting north is a slanted bright line. Here it is an
``xarray.DataArray`` (time, elevation | latitude | longitude) cut from the store's
preprocessed frames, with the frame labels and their probabilities along ``time``.

Where the slice runs. With skymap coordinates beside the frames (``el``, ``az`` and
``lat``/``lon`` on (y, x), stored by an ingest with ``--skymaps``), the line goes
through the pixel of highest elevation along the true geographic meridian (or the
east-west line), whose direction in the image is fitted from ``az`` (a THEMIS camera is
turned by some 20 degrees, so the meridian is not a pixel column). Without them, it is
the frames' centre column (row) and elevations come from the inscribed circle's pixel
geometry, an equidistant fisheye assumed (``circle_grid_elevation``); the frames are
stored north along rows and east along columns (see ``source/skymap.py``), so that is
still north-south. Each point of the line is the nearest pixel, one pixel apart.

The ``elevation`` coordinate runs along the line from one horizon to the other:
0 at the south (west) horizon, 90 at the zenith, 180 at the north (east) horizon, so it
is monotonic; the true elevation of each point is the ``el`` coordinate beside it.

The module is ``keograms`` so that ``aurora_pipeline.keogram`` stays the function.

    >>> keo = aurora_pipeline.keogram("store.zarr", "gako", "2011-01-06T04", "2011-01-06T06")
    >>> keo.dims, keo.coords["label"].attrs["flag_meanings"]
    (('time', 'elevation'), 'arc diffuse discrete cloudy moon clear')
    >>> keogram_png(keo, "keogram.png")
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.hours import time_range
from aurora_pipeline.source.sites import check_site
from aurora_pipeline.store.core import StoreLike
from aurora_pipeline.ingest.preprocess import PreprocessConfig, circle_grid_elevation
from aurora_pipeline.plots import keogram_png as draw
from aurora_pipeline.store import open_site

AXES = ("ns", "ew")
COORDINATES = ("elevation", "latitude", "longitude")
_ENDS = {"ns": ("south", "north"), "ew": ("west", "east")}


def keogram(store: StoreLike, site: str, start=None, end=None, *, axis: str = "ns", coordinate: str = "elevation",
            storage_options: dict | None = None) -> xr.DataArray:
    """The keogram of ``site`` over ``[start, end)`` from the store's frames (see the module docstring).

    Args:
        store: a store path / URL or an open ``Store``.
        axis: "ns" (north-south, the keogram) or "ew" (east-west, an "ewogram").
        coordinate: "elevation" (always available), "latitude" (ns) or "longitude" (ew),
            the latter two at the stored mapping altitude, from skymap coordinates.

    Returns:
        uint8 DataArray (time, <coordinate>) of frame values (0..255), with coords ``el``,
        ``y``, ``x`` (and ``az``, ``lat``, ``lon`` with a skymap) along the slice and
        ``label`` (int8, -1 = none, CF flags) and ``label_probability`` along time when
        the frames are labelled.

    Raises:
        StoreError: nothing stored for the site and range.
        BadInputError: bad axis / coordinate, or latitude asked without skymap coordinates.
    """
    start, end = time_range(start, end)  # a reversed range or a site that is no site code, named as such
    site = check_site(site, "site")
    ds = open_site(store, site, start, end, variables=["frames", "label", "label_probability"],
                   storage_options=storage_options)
    return keogram_from_dataset(ds, axis=axis, coordinate=coordinate)


def keogram_from_dataset(ds: xr.Dataset, *, axis: str = "ns", coordinate: str = "elevation") -> xr.DataArray:
    """``keogram`` on a Dataset shaped like ``open_site``'s: ``frames`` (time, y, x), optional
    ``el``/``az``/``lat``/``lon`` (y, x) coordinates, ``label``, ``label_probability`` and the
    ``preprocess_*`` attributes."""
    if axis not in AXES:
        raise BadInputError(f"axis={axis!r}", "is not a keogram axis.", f"Use one of {AXES}.")
    if coordinate not in COORDINATES:
        raise BadInputError(f"coordinate={coordinate!r}", "is not a keogram coordinate.", f"Use one of {COORDINATES}.")
    if (axis, coordinate) in (("ns", "longitude"), ("ew", "latitude")):
        other = "latitude" if axis == "ns" else "longitude"
        raise BadInputError(f"coordinate={coordinate!r}", f"does not change along the {axis} line.",
                            f"Use coordinate='{other}' or 'elevation' with axis='{axis}'.")
    if "frames" not in ds:
        raise BadInputError("dataset", "has no `frames` variable.", "Open the site with its frames.")
    used = str(ds.attrs.get("skymap_files", "")).split()
    if "skymap" in ds.coords:
        used = sorted(set(used) | {str(n) for n in np.unique(ds["skymap"].values) if str(n)})
    if len(used) > 1:
        raise BadInputError("time range", f"spans {len(used)} skymaps ({', '.join(used)}): a keogram has one geometry.",
                            "Ask for a range inside one skymap's validity (each skymap is valid from the date in its "
                            "name to the next one's).")
    size = ds["frames"].shape[1:]
    geometry = _geometry(ds, size)
    if coordinate != "elevation" and geometry["lat"] is None:
        raise BadInputError(f"coordinate={coordinate!r}", "needs the skymap's lat/lon beside the frames, and this "
                            "store has none (ingested with the inscribed circle).",
                            "Use coordinate='elevation', or ingest with --skymaps.")
    iy, ix, side = slice_pixels(geometry["el"], geometry["az"], axis, geometry["inside"])
    el = geometry["el"][iy, ix]
    along = {"elevation": np.where(side > 0, 180.0 - el, el),
             "latitude": None if geometry["lat"] is None else geometry["lat"][iy, ix],
             "longitude": None if geometry["lon"] is None else geometry["lon"][iy, ix]}[coordinate]
    values = ds["frames"].isel(y=xr.DataArray(iy, dims="k"), x=xr.DataArray(ix, dims="k")).values
    coords = {"time": ds["time"].values, coordinate: ("k", along.astype(np.float32), _along_attrs(coordinate, axis)),
              "el": ("k", el.astype(np.float32), {"units": "degree", "long_name": "elevation of the slice's pixel"}),
              "y": ("k", iy.astype(np.int32), {"long_name": "row of the slice's pixel in the frames"}),
              "x": ("k", ix.astype(np.int32), {"long_name": "column of the slice's pixel in the frames"})}
    for name in ("az", "lat", "lon"):
        if geometry[name] is not None:
            coords[name] = ("k", geometry[name][iy, ix].astype(np.float32), dict(ds[name].attrs))
    coords.update(_label_coords(ds))
    keo = xr.DataArray(values, dims=("time", "k"), coords=coords, name="keogram")
    keo = keo.swap_dims(k=coordinate)
    keo.attrs = {"long_name": f"{'north-south' if axis == 'ns' else 'east-west'} keogram through the zenith",
                 "units": "1", "comment": "preprocessed frame values (uint8, 0..255 meaning 0..1 of eq. 1)",
                 "site": ds.attrs.get("site", ""), "keogram_axis": axis, "keogram_geometry": geometry["what"],
                 **{k: v for k, v in ds.attrs.items() if k.startswith("preprocess_") or k.startswith("skymap_")}}
    return keo


def slice_pixels(el: np.ndarray, az: np.ndarray | None, axis: str, inside: np.ndarray) -> tuple[np.ndarray, ...]:
    """Pixels of the line through the zenith (highest ``el``) along ``axis``, one pixel apart.

    The line's direction: from ``az`` (degrees, (y, x)) when given, else the frames'
    convention (north = +row, east = +column).

    Returns:
        (rows, columns, side): int arrays along the line from the south (west) end to the
        north (east) end; ``side`` is -1 before the zenith, 0 at it, +1 after it. Only
        pixels where ``inside`` (bool (y, x)) is True are kept.
    """
    ny, nx = el.shape
    y0, x0 = np.unravel_index(np.nanargmax(np.where(inside, el, np.nan)), el.shape)
    psi_north, handed = _north_direction(az, (y0, x0), inside) if az is not None else (np.pi / 2, -1.0)
    psi = psi_north if axis == "ns" else psi_north + handed * np.pi / 2
    t = np.arange(-max(ny, nx), max(ny, nx) + 1, dtype=np.float64)
    rows = np.rint(y0 + t * np.sin(psi)).astype(np.int64)
    cols = np.rint(x0 + t * np.cos(psi)).astype(np.int64)
    keep = (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
    rows, cols, t = rows[keep], cols[keep], t[keep]
    keep = inside[rows, cols]
    rows, cols, t = rows[keep], cols[keep], t[keep]
    new = np.r_[True, (np.diff(rows) != 0) | (np.diff(cols) != 0)]  # the same pixel twice in a row: once
    rows, cols, t = rows[new], cols[new], t[new]
    return rows, cols, np.sign(t).astype(np.int8)


def _north_direction(az: np.ndarray, zenith: tuple[int, int], inside: np.ndarray) -> tuple[float, float]:
    """(image angle of north, handedness) fitted to ``az`` around the zenith.

    With psi = atan2(row offset, column offset), a fisheye image has az = s (psi - psi_N)
    for s = +1 or -1 (seen from below or mirrored); both are tried and the one that fits
    (longest mean resultant) wins. Returns (psi_N, s), psi in radians.
    """
    ny, nx = az.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    dy, dx = yy - zenith[0], xx - zenith[1]
    r = np.hypot(dy, dx)
    use = inside & np.isfinite(az) & (r >= 3) & (r <= 0.4 * min(ny, nx))
    if use.sum() < 8:
        return np.pi / 2, -1.0
    psi, a = np.arctan2(dy[use], dx[use]), np.deg2rad(az[use])
    best = max((abs(np.mean(np.exp(1j * (psi - s * a)))), s) for s in (1.0, -1.0))
    s = best[1]
    return float(np.angle(np.mean(np.exp(1j * (psi - s * a))))), s


def _geometry(ds: xr.Dataset, size: tuple[int, int]) -> dict:
    """el (and az, lat, lon) on the frames' grid, the pixels inside the field of view, and a description."""
    cfg = PreprocessConfig.from_attrs({k: v for k, v in ds.attrs.items() if k.startswith("preprocess_")
                                       and k != "preprocess_method"})
    if "el" in ds.coords or "el" in ds:
        el = np.asarray(ds["el"].values, np.float64)
        if el.shape != tuple(size):
            raise BadInputError("el", f"is {el.shape} but the frames are {tuple(size)}.",
                                "Store the skymap coordinates on the frames' grid.")
        get = lambda n: np.asarray(ds[n].values, np.float64) if n in ds.coords or n in ds else None  # noqa: E731
        with np.errstate(invalid="ignore"):
            inside = np.isfinite(el) & (el >= cfg.min_elevation)
        what = f"skymap {ds.attrs.get('skymap_file', '')}".strip()
        return {"el": el, "az": get("az"), "lat": get("lat"), "lon": get("lon"), "inside": inside, "what": what}
    if cfg.image_size != size[0] or size[0] != size[1]:
        cfg = PreprocessConfig(**{**cfg.setting(), "image_size": int(size[0]),
                                  "fov": "circle" if cfg.fov == "elevation" else cfg.fov})
    el = circle_grid_elevation(cfg).astype(np.float64)
    return {"el": el, "az": None, "lat": None, "lon": None, "inside": np.isfinite(el),
            "what": "pixel geometry of the inscribed circle (equidistant fisheye assumed; no skymap)"}


def _along_attrs(coordinate: str, axis: str) -> dict:
    low, high = _ENDS[axis]
    if coordinate == "elevation":
        return {"units": "degree", "long_name": f"angle along the {axis} line: 0 = {low} horizon, 90 = zenith, "
                                                f"180 = {high} horizon"}
    if coordinate == "latitude":
        return {"units": "degrees_north", "standard_name": "latitude",
                "long_name": "latitude of the slice's pixel at the mapping altitude"}
    return {"units": "degrees_east", "standard_name": "longitude",
            "long_name": "longitude of the slice's pixel at the mapping altitude"}


def _label_coords(ds: xr.Dataset) -> dict:
    """``label`` (int8, -1 none, CF flags) and ``label_probability`` (probability of the label) along time."""
    if "label" not in ds:
        return {}
    raw = np.asarray(ds["label"].values, np.float64)
    label = np.where(np.isfinite(raw), raw, -1).astype(np.int8)
    attrs = {k: ds["label"].attrs[k] for k in ("flag_values", "flag_meanings", "long_name") if k in ds["label"].attrs}
    out = {"label": ("time", label, attrs)}
    if "label_probability" in ds:
        prob = np.asarray(ds["label_probability"].values, np.float32)
        picked = np.take_along_axis(prob, np.clip(label, 0, None)[:, None].astype(np.int64), axis=1)[:, 0]
        out["label_probability"] = ("time", np.where(label >= 0, picked, np.nan).astype(np.float32),
                                    {"units": "1", "long_name": "classifier probability of the frame's label"})
    return out


def keogram_png(keo: xr.DataArray, path, *, title: str | None = None):
    """Draw a keogram with its label strip and label probability beneath (see ``plots.keogram_png``)."""
    return draw(keo, path, title=title)


# --- along the magnetic meridian (issue 21) ---------------------------------------------------------------
def magnetic_keogram(store: StoreLike, site: str, start=None, end=None, *, storage_options: dict | None = None) -> xr.DataArray:
    """The keogram along the site's magnetic meridian, its axis AACGM-v2 magnetic latitude (as asilib offers).

    Needs the skymap's coordinates in the store (ingest with ``--skymaps``): the line is
    the pixels nearest to points of the zenith's magnetic longitude, one step of the
    pixels' own magnetic-latitude spacing apart, south to north (``magnetic_keogram_from_dataset``).

    Returns:
        uint8 DataArray (time, mlat) with coords ``mlon``, ``el``, ``y``, ``x`` along the
        line and ``label`` / ``label_probability`` along time, like ``keogram``.

    Raises:
        StoreError: nothing stored. BadInputError: no skymap coordinates in the store.
    """
    ds = open_site(store, site, start, end, variables=["frames", "label", "label_probability"],
                   storage_options=storage_options)
    return magnetic_keogram_from_dataset(ds)


def magnetic_keogram_from_dataset(ds: xr.Dataset) -> xr.DataArray:
    """``magnetic_keogram`` on a Dataset shaped like ``open_site``'s (``frames``, ``pixel_mlat``/``pixel_mlon``)."""
    if "frames" not in ds:
        raise BadInputError("dataset", "has no `frames` variable.", "Open the site with its frames.")
    if "pixel_mlat" not in ds.coords:
        raise BadInputError("--magnetic", "needs the skymap's lat/lon beside the frames (magnetic latitude per "
                            "pixel), and this store has none (ingested with the inscribed circle, or several "
                            "skymaps in range).",
                            "Ingest with --skymaps, and ask for a range inside one skymap's validity.")
    geometry = _geometry(ds, ds["frames"].shape[1:])
    mlat = np.asarray(ds["pixel_mlat"].values, np.float64)
    mlon = np.asarray(ds["pixel_mlon"].values, np.float64)
    inside = geometry["inside"] & np.isfinite(mlat) & np.isfinite(mlon)
    if inside.sum() < 3:
        raise BadInputError("pixel_mlat", "has no magnetic coordinates inside the field of view (outside AACGM-v2's "
                            "years 1990-2030?).", "Ask for a time range inside 1990-2030.")
    iy, ix = meridian_pixels(mlat, mlon, geometry["el"], inside)
    coords = {"time": ds["time"].values,
              "mlat": ("k", mlat[iy, ix].astype(np.float32), dict(ds["pixel_mlat"].attrs)),
              "mlon": ("k", mlon[iy, ix].astype(np.float32), dict(ds["pixel_mlon"].attrs)),
              "el": ("k", geometry["el"][iy, ix].astype(np.float32), {"units": "degree",
                                                                      "long_name": "elevation of the slice's pixel"}),
              "y": ("k", iy.astype(np.int32), {"long_name": "row of the slice's pixel in the frames"}),
              "x": ("k", ix.astype(np.int32), {"long_name": "column of the slice's pixel in the frames"})}
    coords.update(_label_coords(ds))
    values = ds["frames"].isel(y=xr.DataArray(iy, dims="k"), x=xr.DataArray(ix, dims="k")).values
    keo = xr.DataArray(values, dims=("time", "k"), coords=coords, name="keogram").swap_dims(k="mlat")
    keo.attrs = {"long_name": "keogram along the magnetic meridian through the zenith", "units": "1",
                 "comment": "preprocessed frame values (uint8, 0..255 meaning 0..1 of eq. 1)",
                 "site": ds.attrs.get("site", ""), "keogram_axis": "magnetic meridian",
                 "keogram_geometry": f"{geometry['what']}, AACGM-v2 at {ds['pixel_mlat'].attrs.get('aacgm_epoch', '')}",
                 **{k: v for k, v in ds.attrs.items() if k.startswith("preprocess_") or k.startswith("skymap_")}}
    return keo


def meridian_pixels(mlat: np.ndarray, mlon: np.ndarray, el: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, ...]:
    """(rows, columns) of the pixels along the magnetic meridian of the zenith (highest ``el``), south to north.

    Points of the zenith's magnetic longitude are laid one pixel spacing of magnetic
    latitude apart; each takes the nearest pixel inside the field of view (distance on
    the sphere, locally), kept only when it is within one spacing; repeats are dropped.
    """
    y0, x0 = np.unravel_index(np.nanargmax(np.where(inside, el, np.nan)), el.shape)
    lon0 = mlon[y0, x0]
    rows, cols = np.nonzero(inside)
    plat, plon = mlat[rows, cols], mlon[rows, cols]
    step = float(np.nanmedian(np.abs(np.diff(mlat, axis=0))[inside[1:] & inside[:-1]]))
    step = step if np.isfinite(step) and step > 0 else 0.1
    targets = np.arange(plat.min(), plat.max() + step, step)
    out = []
    for target in targets:
        d2 = (plat - target) ** 2 + (((plon - lon0 + 180.0) % 360.0 - 180.0) * np.cos(np.deg2rad(target))) ** 2
        i = int(np.argmin(d2))
        if d2[i] <= (1.5 * step) ** 2 and (not out or out[-1] != i):
            out.append(i)
    picked = np.array(out, np.int64)
    order = np.argsort(plat[picked], kind="stable")
    picked = picked[order]
    picked = picked[np.r_[True, np.diff(plat[picked]) > 0]]  # strictly increasing axis
    return rows[picked], cols[picked]
