"""The occurrence figure: an MLT-magnetic-latitude dial and an MLT histogram per aurora class.

Dials are drawn as the field draws them (looking down on the northern polar cap): magnetic
midnight at the bottom, noon at the top, dawn (06 MLT) on the right, dusk (18 MLT) on
the left; the radius is magnetic colatitude, the pole at the centre. Histograms: the
occurrence probability per 1-hour MLT bin over every magnetic latitude, with the binomial
standard error as bars. Empty bins stay blank. The title says the sites, years, frames
counted and the denominator.

    >>> occurrence_png(aurora_pipeline.occurrence("store.zarr", by=("mlt", "mlat")), "occ.png")
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.plots import _figure, _save

AURORA_CLASSES = ("arc", "diffuse", "discrete")  # drawn when present; other sky classes (clear) are not aurora


def mlt_probability(occ: xr.Dataset) -> xr.Dataset:
    """``probability`` and ``probability_error`` per MLT bin (sky_class, mlt), every other bin dimension summed."""
    if "mlt" not in occ.dims:
        raise BadInputError("occurrence", "has no `mlt` dimension.", "Compute it with by=('mlt', ...).")
    others = [d for d in occ["clear_sky_frames"].dims if d != "mlt"]
    counts = occ["label_frames"].sel({"class": occ["sky_class"].values}).rename({"class": "sky_class"}).sum(others)
    clear = occ["clear_sky_frames"].sum(others)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = (counts / clear).where(clear > 0)
        err = np.sqrt(p * (1 - p) / clear).where(clear > 0)
    return xr.Dataset({"probability": p, "probability_error": err, "clear_sky_frames": clear})


def occurrence_png(occ: xr.Dataset, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Draw the dial (when binned by mlt and mlat) and the MLT histogram of each aurora class.

    Size: 4 inches per class wide, 8 tall (4.2 without the dials). Raises BadInputError
    without an ``mlt`` dimension.
    """
    return _save(occurrence_figure(occ, title=title), path)


def occurrence_figure(occ: xr.Dataset, *, title: str | None = None):
    """The matplotlib Figure of ``occurrence_png`` (dial axes first, polar, one per class)."""
    classes = [c for c in AURORA_CLASSES if c in occ["sky_class"].values] or list(occ["sky_class"].values)
    hist = mlt_probability(occ)
    dial = "mlat" in occ.dims and occ.sizes["mlat"] > 0
    n = len(classes)
    fig = _figure(4.0 * n, 8.0 if dial else 4.2)
    rows = 2 if dial else 1
    if dial:
        p = _mlt_mlat_probability(occ)
        drawn = p.sel(sky_class=classes).values
        top = float(np.nanmax(drawn)) if np.isfinite(drawn).any() else 1.0
        for i, name in enumerate(classes):
            ax = fig.add_subplot(rows, n, i + 1, projection="polar")
            mesh = _dial(ax, p.sel(sky_class=name), vmax=max(top, 1e-6))
            ax.set_title(f"{name} (radius: magnetic latitude)", fontsize=10, pad=14)
        fig.colorbar(mesh, ax=fig.axes[:n], shrink=0.6, label="occurrence probability (clear-sky frames)")
    ymax = float(np.nanmax((hist.probability + hist.probability_error).sel(sky_class=classes).values)) \
        if np.isfinite(hist.probability.sel(sky_class=classes).values).any() else 1.0
    for i, name in enumerate(classes):
        ax = fig.add_subplot(rows, n, (rows - 1) * n + i + 1)
        h = hist.sel(sky_class=name)
        ax.bar(occ["mlt"].values, h.probability.values, width=0.9, color=f"C{i}", alpha=0.8,
               yerr=h.probability_error.values, capsize=2, ecolor="k")
        ax.set_xlim(0, 24)
        ax.set_xticks(range(0, 25, 6))
        ax.set_ylim(0, min(1.0, max(ymax * 1.1, 1e-3)))
        ax.set_xlabel("MLT (h)")
        if i == 0:
            ax.set_ylabel("occurrence probability")
        ax.set_title(f"{name} by MLT (bars: binomial s.e.)", fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title or describe(occ), fontsize=9)
    return fig


def describe(occ: xr.Dataset) -> str:
    """Title text: the sites, years, frames counted, thresholds and the denominator."""
    a = occ.attrs
    years = a.get("aurora_years", "").split()
    span = f"{years[0]}-{years[-1]}" if len(years) > 1 else (years[0] if years else "no years")
    extra = []
    if a.get("aurora_min_probability", "none") != "none":
        extra.append(f"label probability >= {a['aurora_min_probability']}")
    if not str(a.get("aurora_smooth", "none")).startswith("none"):
        extra.append(f"labels smoothed over {a['aurora_smooth']}")
    counted = int(a.get("aurora_frames_counted", 0))
    clear = int(occ["clear_sky_frames"].sum())
    return (f"Auroral occurrence, sites {a.get('aurora_sites', '')}, {span}: {counted:,} labelled frames, "
            f"{clear:,} clear-sky\n" + "denominator: clear-sky frames (every label except cloudy and moon)"
            + (f"; {', '.join(extra)}" if extra else "")
            + "; AACGM-v2 MLT and magnetic latitude of the zenith at 110 km")


def _mlt_mlat_probability(occ: xr.Dataset) -> xr.DataArray:
    others = [d for d in occ["clear_sky_frames"].dims if d not in ("mlt", "mlat")]
    counts = occ["label_frames"].sel({"class": occ["sky_class"].values}).rename({"class": "sky_class"}).sum(others)
    clear = occ["clear_sky_frames"].sum(others)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts / clear).where(clear > 0).transpose("sky_class", "mlt", "mlat")


def _dial(ax, p: xr.DataArray, vmax: float):
    """One polar dial: theta from MLT (0 h at the bottom, 6 h on the right), radius = 90 - mlat."""
    mlt_edges = np.arange(25) * 1.0
    mlat = p["mlat"].values
    mlat_edges = np.r_[mlat - 0.5, mlat[-1] + 0.5]
    theta = mlt_edges / 24.0 * 2 * np.pi
    r = 90.0 - mlat_edges
    ax.set_theta_zero_location("S")   # magnetic midnight at the bottom
    ax.set_theta_direction(1)         # counter-clockwise: dawn (06) on the right, noon top, dusk (18) left
    mesh = ax.pcolormesh(theta, r[::-1], np.ma.masked_invalid(p.values.T[::-1]), cmap="viridis", vmin=0.0, vmax=vmax,
                         shading="flat")
    ax.set_rlim(0, max(40.0, float(r.max()) + 2))
    ticks = [t for t in (10, 20, 30, 40) if t <= float(r.max()) + 2]
    ax.set_rticks(ticks)
    ax.set_yticklabels([f"{90 - t:g}" for t in ticks], fontsize=7)
    ax.set_xticks(np.arange(0, 24, 6) / 24 * 2 * np.pi)
    ax.set_xticklabels(["00", "06", "12", "18"])
    ax.grid(alpha=0.4)
    return mesh
