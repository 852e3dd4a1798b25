"""Occurrence statistics: how often each class of aurora is seen, by MLT, magnetic latitude, season, year.

``occurrence(store, sites, start, end, by=("mlt",))`` counts the labelled frames of the
store in bins and returns an ``xarray.Dataset``:

- ``label_frames`` (by..., class): frames of each label in each bin;
- ``frames`` (by...): labelled frames counted in the bin (every class);
- ``clear_sky_frames`` (by...): the denominator, ``frames`` minus those labelled ``cloudy``
  or ``moon``: those frames are not observations of the sky's aurora (a cloud deck or the
  Moon's glare hides it), so they are left out of it, as auroral occurrence studies do;
- ``probability`` (by..., sky_class): ``label_frames / clear_sky_frames`` for each class that is
  a sky observation (arc, diffuse, discrete and clear, the last being "no aurora");
- ``probability_error``: the binomial standard error sqrt(p (1 - p) / n) of each.

Bins: ``mlt`` 1-hour bins (centres 0.5 ... 23.5 h, AACGM-v2 MLT of the imager's zenith at
110 km, from ``open_site``'s ``mlt``), ``mlat`` 1-degree bins of the zenith's magnetic
latitude (centres k + 0.5, only the range observed), ``month`` (1-12), ``year``, ``site``;
any combination. A bin where nothing was observed has probability NaN (missing, not 0).
Frames without magnetic coordinates (outside AACGM's years 1990-2030, or a site of
unknown position) are left out when binning by ``mlt`` or ``mlat``, and counted in the
``aurora_frames_without_magnetic_coordinates`` attribute.

Thresholds: ``min_probability`` keeps only frames whose label has at least that classifier
probability (the others count nowhere, neither in a numerator nor in a denominator);
``smooth`` (e.g. "30s") counts the events' smoothed labels instead of per-frame ones
(``aurora_pipeline.events.smooth_labels``: the most probable class of the moving average
of the probabilities over the window, never across a data gap of more than 3 median steps);
with both, the threshold applies to the window's mean probability of the counted class.

Cost: one ``open_site`` per site-year asked for (O(site-years) opens), then the ``label``
(and ``label_probability`` when thresholded or smoothed) of its frames in blocks of about
a million frames; memory is the bins plus one block, not the frames
(benchmarks/occurrence.py).

A caveat the attributes repeat: frames 3 s apart are not independent samples, so the
binomial error is a lower bound; an hour of one arc is one event, not 1,200.

    >>> occ = occurrence("store.zarr", by=("mlt", "mlat"))
    >>> occ.probability.sel(sky_class="discrete")   # (mlt, mlat)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import xarray as xr

from aurora_pipeline.atomic import atomic_path
from aurora_pipeline.errors import BadInputError, StoreError
from aurora_pipeline.events import parse_duration, smooth_labels
from aurora_pipeline.hours import to_time
from aurora_pipeline.source.magnetic import MagneticCoordinatesWarning
from aurora_pipeline.store import Store, open_store
from aurora_pipeline.store.core import StoreLike
from aurora_pipeline.store.read import open_site, years_in

BY = ("mlt", "mlat", "month", "year", "site")
NOT_SKY = ("cloudy", "moon")  # labels that are not observations of the sky's aurora
DENOMINATOR = ("frames labelled with any class except cloudy and moon (clear-sky frames: a cloud deck or the "
               "Moon's glare hides the aurora, so those frames are not sky observations)")
MLAT_RANGE = (-90, 90)


def occurrence(store: StoreLike, sites: list[str] | None = None, start=None, end=None, by=("mlt",), *,
               min_probability: float | None = None, smooth=None, storage_options: dict | None = None) -> xr.Dataset:
    """Frames per label per bin, the clear-sky denominator and occurrence probabilities (module docstring).

    Args:
        store: a store path / URL or an open ``Store``.
        sites: site codes (default: every site of the store with hours in the range).
        start, end: UT times, ``[start, end)``.
        by: bin dimensions, a tuple of ``"mlt"``, ``"mlat"``, ``"month"``, ``"year"``, ``"site"``
            (or a comma-separated string).
        min_probability: count only frames whose label probability is at least this (0..1).
        smooth: a window such as "30s": count the smoothed labels (``events.smooth_labels``).

    Returns:
        Dataset with ``label_frames`` (by..., class), ``frames``, ``clear_sky_frames`` (by...),
        ``probability`` and ``probability_error`` (by..., sky_class), CF attributes.

    Raises:
        BadInputError: an unknown ``by`` name, a bad threshold or window, an unknown site.
        StoreError: nothing labelled in the range.
    """
    by = _check_by(by)
    if min_probability is not None and not 0.0 <= float(min_probability) <= 1.0:
        raise BadInputError(f"min_probability={min_probability!r}", "must be in [0, 1].", "Use e.g. 0.5.")
    smooth_ms = parse_duration(smooth, "smooth") if smooth is not None else 0
    st = open_store(store, storage_options)
    sites = _sites(st, sites)
    acc = _Accumulator(by, sites)
    need_prob = min_probability is not None or smooth_ms > 0
    variables = ["label"] + (["label_probability"] if need_prob else [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for site in sites:
            for year in years_in(st, site, start, end):
                lo, hi = _clip(year, start, end)
                try:
                    ds = _open(st, site, lo, hi, variables)
                except StoreError:
                    continue  # nothing of the year in range
                acc.add_site_year(ds, site, min_probability, smooth_ms)
    others = [w for w in caught if not issubclass(w.category, MagneticCoordinatesWarning)]
    for w in others:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if acc.classes is None:
        raise StoreError(f"{st.url}: no labelled frames of {', '.join(sites)} in [{start}, {end}). "
                         "Fix: run `aurora-pipeline classify` on that range first.")
    if acc.without_magnetic and ("mlt" in by or "mlat" in by):
        warnings.warn(MagneticCoordinatesWarning(
            f"{acc.without_magnetic} labelled frame(s) have no magnetic coordinates (outside AACGM-v2's years "
            "1990-2030, or a site of unknown position) and are not counted."), stacklevel=2)
    return acc.result(st, start, end, min_probability, smooth)


def _check_by(by) -> tuple[str, ...]:
    names = tuple(s.strip() for s in by.split(",")) if isinstance(by, str) else tuple(by)
    bad = [n for n in names if n not in BY]
    if bad or not names or len(set(names)) != len(names):
        raise BadInputError(f"by={','.join(names)}", "must be distinct names among " + ", ".join(BY) + ".",
                            "Use e.g. by=('mlt', 'mlat') or --by mlt,mlat.")
    return names


def _sites(st: Store, sites) -> list[str]:
    known = st.sites()
    if not sites:
        return list(known)
    sites = [s.lower() for s in sites]
    unknown = [s for s in sites if s not in known]
    if unknown:
        raise BadInputError(", ".join(unknown), f"no such site in {st.url} (it holds {', '.join(known) or 'none'})",
                            "pick sites the store holds, or ingest them first")
    return sites


def _clip(year: int, start, end):
    lo, hi = np.datetime64(f"{year}-01-01", "ms"), np.datetime64(f"{year + 1}-01-01", "ms")
    t0, t1 = to_time(start), to_time(end)
    return (max(lo, t0) if t0 is not None else lo), (min(hi, t1) if t1 is not None else hi)


def _open(st: Store, site, lo, hi, variables):
    return open_site(st, site, lo, hi, variables=variables)


class _Accumulator:
    """Counts per (bin..., class), filled block by block; the bins are fixed before any frame is read,
    except magnetic latitude, counted over the whole globe and trimmed to the range observed."""

    def __init__(self, by: tuple[str, ...], sites: list[str]):
        self.by, self.sites = by, sites
        self.classes: list[str] | None = None
        self.flag_values = None
        self.counts = None
        self.frames_read = 0
        self.frames_counted = 0
        self.without_magnetic = 0
        self.below_threshold = 0
        self.years_seen: set[int] = set()
        self.sizes = {"mlt": 24, "mlat": MLAT_RANGE[1] - MLAT_RANGE[0], "month": 12, "site": len(sites)}

    def _start(self, ds):
        attrs = ds["label"].attrs
        self.classes = str(attrs.get("flag_meanings", "")).split()
        if not self.classes:
            raise BadInputError("label", "has no flag_meanings (class names).", "Label the store with the classifier.")
        self.flag_values = np.asarray(attrs.get("flag_values", np.arange(len(self.classes))))
        self.counts = {}  # year-free dims are fixed; `year` grows: one array per year, stacked at the end

    def add_site_year(self, ds: xr.Dataset, site: str, min_probability, smooth_ms: int) -> None:
        if "label" not in ds:
            return
        if self.classes is None:
            self._start(ds)
        elif str(ds["label"].attrs.get("flag_meanings", "")).split() != self.classes:
            raise StoreError(f"site {site}: its labels' classes differ from the other sites' ({self.classes}). "
                             "Fix: label every site with one classifier.")
        label = ds["label"].data
        prob = ds["label_probability"].data if "label_probability" in ds else None
        if (min_probability is not None or smooth_ms) and prob is None:
            raise StoreError(f"site {site}: no label_probability to threshold or smooth with. "
                             "Fix: classify again (the classifier writes it).")
        need_magnetic = "mlt" in self.by or "mlat" in self.by
        bounds = np.cumsum((0,) + label.chunks[0])
        t_ms = ds["time"].values.astype("datetime64[ms]").astype(np.int64)
        tasks = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            lo, hi = int(a), int(b)
            if smooth_ms:  # context of half a window on either side, so block edges smooth as the rest
                half = smooth_ms // 2 + 1
                lo = int(np.searchsorted(t_ms, t_ms[a] - half, side="left"))
                hi = int(np.searchsorted(t_ms, t_ms[b - 1] + half, side="right"))
            mlt = ds["mlt"].data[a:b] if need_magnetic else None
            mlat = ds["mlat"].data[a:b] if need_magnetic else None
            tasks.append(dask.delayed(self._block, pure=False)(
                site, t_ms, int(a), int(b), lo, hi, label[lo:hi], None if prob is None else prob[lo:hi],
                mlt, mlat, min_probability, smooth_ms))
        for part in dask.compute(*tasks, scheduler="threads"):  # a block per core; the merge is here
            self._merge(part)

    def _merge(self, part: dict) -> None:
        for key, counts in part["counts"].items():
            self.counts[key] = self.counts[key] + counts if key in self.counts else counts
        for name in ("frames_read", "frames_counted", "without_magnetic", "below_threshold"):
            setattr(self, name, getattr(self, name) + part[name])
        self.years_seen.update(part["years"])

    def _block(self, site, t_all, a, b, lo, hi, codes, prob, mlt, mlat, min_probability, smooth_ms) -> dict:
        """Counts of frames ``[a, b)`` of a site-year (``[lo, hi)`` with the smoothing's context):
        a partial result for ``_merge`` (run in a worker thread: no shared state is written)."""
        k = len(self.classes)
        t_ms = t_all[lo:hi]
        codes = np.asarray(codes)
        prob = None if prob is None else np.asarray(prob)
        inner = np.zeros(hi - lo, bool)
        inner[a - lo: b - lo] = True
        coords = {} if mlt is None else {"mlt": np.asarray(mlt), "mlat": np.asarray(mlat)}
        lookup = np.full(int(self.flag_values.max()) + 2, -1, np.int64)  # flag value -> class index
        lookup[self.flag_values.astype(np.int64)] = np.arange(k)
        raw = np.where(np.isfinite(codes), codes, -1).astype(np.int64)
        index = np.where((raw >= 0) & (raw < len(lookup) - 1), lookup[np.clip(raw, 0, len(lookup) - 1)], -1)
        labelled = index >= 0
        if prob is not None:
            labelled &= np.isfinite(prob).all(axis=1)
        part = {"counts": {}, "frames_read": int(np.count_nonzero(labelled & inner)), "frames_counted": 0,
                "without_magnetic": 0, "below_threshold": 0, "years": set()}
        counted = index.copy()
        confidence = None
        if smooth_ms:
            keep = np.flatnonzero(labelled)
            t, own, evidence = t_ms[keep], index[keep], prob[keep].astype(np.float64)
            step = np.diff(t)
            cadence = float(np.median(step)) if len(step) else 1000.0
            segment = np.r_[0, np.cumsum(step > 3.0 * max(cadence, 1.0))]
            smoothed = smooth_labels(t, evidence, segment, smooth_ms, own)
            counted[keep] = smoothed
            if min_probability is not None:
                confidence = np.full(len(codes), np.nan)
                confidence[keep] = _window_mean(t, evidence, segment, smooth_ms, smoothed)
        elif min_probability is not None:
            confidence = np.full(len(codes), np.nan)
            rows = np.flatnonzero(labelled)
            confidence[rows] = prob[rows, index[rows]]
        use = labelled & inner
        if confidence is not None:
            sure = use & (confidence >= float(min_probability))
            part["below_threshold"] = int(np.count_nonzero(use & ~sure))
            use = sure
        counted, t_in = counted[inner], t_ms[inner]
        use = use[inner]
        bins, valid = self._bin_index(site, t_in, coords)
        part["without_magnetic"] = int(np.count_nonzero(use & ~valid))
        use &= valid
        years = _year_of(t_in)
        present = (np.flatnonzero(np.bincount(years[use] - years.min())) + years.min()) if use.any() else []
        size = int(np.prod(self._shape())) * k
        for year in (present if "year" in self.by else [None]):
            sel = use if year is None else use & (years == year)
            flat = bins[sel] * k + counted[sel]
            part["counts"][None if year is None else int(year)] = \
                np.bincount(flat, minlength=size).reshape(self._shape() + (k,))
            part["frames_counted"] += int(np.count_nonzero(sel))
        part["years"] = {int(y) for y in present}
        return part

    def _shape(self) -> tuple[int, ...]:
        return tuple(self.sizes[d] for d in self.by if d != "year")

    def _bin_index(self, site, t_ms, coords) -> tuple[np.ndarray, np.ndarray]:
        """Flat bin index (over the dims except `year`) of each frame, and whether it has one."""
        valid = np.ones(len(t_ms), bool)
        parts = []
        for dim in self.by:
            if dim == "year":
                continue
            if dim == "mlt":
                v = coords["mlt"]
                ok = np.isfinite(v)
                i = np.where(ok, np.floor(np.nan_to_num(v)), 0).astype(np.int64) % 24
            elif dim == "mlat":
                v = coords["mlat"]
                ok = np.isfinite(v)
                i = np.clip(np.where(ok, np.floor(np.nan_to_num(v)), 0).astype(np.int64) - MLAT_RANGE[0],
                            0, self.sizes["mlat"] - 1)
            elif dim == "month":
                ok = np.ones(len(t_ms), bool)
                i = _month_index(t_ms)
            else:  # site
                ok = np.ones(len(t_ms), bool)
                i = np.full(len(t_ms), self.sites.index(site), np.int64)
            valid &= ok
            parts.append(i)
        shape = self._shape()
        flat = np.ravel_multi_index(parts, shape) if parts else np.zeros(len(t_ms), np.int64)
        return flat, valid

    def result(self, st, start, end, min_probability, smooth) -> xr.Dataset:
        k = len(self.classes)
        shape = self._shape()
        dims = [d for d in self.by if d != "year"]
        if "year" in self.by:
            years = sorted(self.years_seen) or sorted(y for y in self.counts if y is not None)
            counts = np.stack([self.counts.get(y, np.zeros(shape + (k,), np.int64)) for y in years], axis=0)
            dims = ["year"] + dims
        else:
            years = sorted(self.years_seen)
            counts = self.counts.get(None, np.zeros(shape + (k,), np.int64))
        coords = {}
        for axis, dim in enumerate(dims):
            coords[dim] = _coordinate(dim, years, self.sites)
        if "mlat" in dims:  # trim the globe to the magnetic latitudes observed
            axis = dims.index("mlat")
            seen = np.flatnonzero(counts.sum(axis=tuple(i for i in range(counts.ndim) if i != axis)))
            keep = np.arange(seen.min(), seen.max() + 1) if len(seen) else np.arange(0)
            counts = np.take(counts, keep, axis=axis)
            coords["mlat"] = (coords["mlat"][0], coords["mlat"][1][keep], coords["mlat"][2])
        order = [dims.index(d) for d in self.by]  # back to the order asked for
        counts = np.moveaxis(counts, order + [counts.ndim - 1], list(range(counts.ndim)))
        by = list(self.by)
        sky = [c for c in self.classes if c not in NOT_SKY]
        sky_index = [self.classes.index(c) for c in sky]
        frames = counts.sum(axis=-1)
        clear = counts[..., sky_index].sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = counts[..., sky_index] / clear[..., None]
            err = np.sqrt(p * (1.0 - p) / clear[..., None])
        p = np.where(clear[..., None] > 0, p, np.nan)
        err = np.where(clear[..., None] > 0, err, np.nan)
        data = {
            "label_frames": (by + ["class"], counts,
                             {"units": "1", "long_name": "labelled frames of each class in the bin"}),
            "frames": (by, frames, {"units": "1", "long_name": "labelled frames counted in the bin (every class)"}),
            "clear_sky_frames": (by, clear, {"units": "1", "long_name": "clear-sky frames in the bin: the denominator",
                                             "comment": DENOMINATOR}),
            "probability": (by + ["sky_class"], p, {
                "units": "1", "long_name": "occurrence probability of the class among clear-sky frames",
                "comment": "label_frames / clear_sky_frames; missing (NaN) where the bin has no clear-sky frame"}),
            "probability_error": (by + ["sky_class"], err, {
                "units": "1", "long_name": "binomial standard error of the occurrence probability",
                "comment": "sqrt(p (1 - p) / clear_sky_frames); frames 3 s apart are not independent, so this is "
                           "a lower bound on the real uncertainty"}),
        }
        coords["class"] = ("class", np.array(self.classes), {"long_name": "frame label (classifier's class)"})
        coords["sky_class"] = ("sky_class", np.array(sky), {"long_name": "classes that are sky observations"})
        attrs = {
            "title": "auroral occurrence from the frame labels", "source": "aurora_pipeline.occurrence",
            "aurora_store": str(st.url), "aurora_sites": " ".join(self.sites),
            "aurora_start": "" if start is None else str(to_time(start)),
            "aurora_end": "" if end is None else str(to_time(end)),
            "aurora_years": " ".join(str(y) for y in years), "aurora_by": " ".join(self.by),
            "aurora_denominator": DENOMINATOR, "aurora_excluded_from_denominator": " ".join(NOT_SKY),
            "aurora_frames_labelled": int(self.frames_read), "aurora_frames_counted": int(self.frames_counted),
            "aurora_frames_without_magnetic_coordinates": int(self.without_magnetic),
            "aurora_frames_below_min_probability": int(self.below_threshold),
            "aurora_min_probability": "none" if min_probability is None else float(min_probability),
            "aurora_smooth": "none (per-frame labels)" if not smooth else str(smooth),
            "aurora_magnetic_coordinates": "AACGM-v2 (aacgmv2 2.7.1) of the imager's zenith at 110 km",
            "aurora_pipeline_version": str(st.attrs.get("aurora_pipeline_version")),
        }
        return xr.Dataset(data, coords=coords, attrs=attrs)


def _month_starts(t_ms: np.ndarray) -> np.ndarray:
    """int64 ms of the first of each month from the first frame's year to the month after the last."""
    y0, y1 = (int(np.datetime64(int(v), "ms").astype("datetime64[Y]").astype(np.int64)) + 1970
              for v in (t_ms.min(), t_ms.max()))
    months = np.arange(np.datetime64(f"{y0:04d}-01", "M"), np.datetime64(f"{y1 + 1:04d}-01", "M") + 1)
    return months.astype("datetime64[ms]").astype(np.int64)


def _month_index(t_ms: np.ndarray) -> np.ndarray:
    """0..11, the UT month of each frame (a search in the month starts: cheaper than datetime64 units)."""
    if not len(t_ms):
        return np.zeros(0, np.int64)
    return (np.searchsorted(_month_starts(t_ms), t_ms, side="right") - 1) % 12


def _year_of(t_ms: np.ndarray) -> np.ndarray:
    if not len(t_ms):
        return np.zeros(0, np.int64)
    y0 = int(np.datetime64(int(t_ms.min()), "ms").astype("datetime64[Y]").astype(np.int64)) + 1970
    starts = _month_starts(t_ms)[::12]  # 1 January of each year spanned (and the next)
    return y0 + np.searchsorted(starts, t_ms, side="right") - 1


def _coordinate(dim: str, years: list[int], sites: list[str]):
    if dim == "mlt":
        return ("mlt", np.arange(24) + 0.5, {"units": "hour", "long_name": "AACGM-v2 magnetic local time (bin "
                                             "centre; bins [h, h + 1))", "bin_width": 1.0})
    if dim == "mlat":
        return ("mlat", np.arange(*MLAT_RANGE) + 0.5, {"units": "degrees_north", "long_name": "AACGM-v2 magnetic "
                                                       "latitude of the zenith (bin centre)", "bin_width": 1.0})
    if dim == "month":
        return ("month", np.arange(1, 13), {"long_name": "month of the year (UT)"})
    if dim == "year":
        return ("year", np.array(years, np.int64), {"long_name": "year (UT)"})
    return ("site", np.array(sites), {"long_name": "four-letter THEMIS imager code"})


def _window_mean(t, evidence, segment, window_ms, chosen) -> np.ndarray:
    """Mean probability of ``chosen`` over each frame's smoothing window (as ``smooth_labels`` averages)."""
    half = window_ms / 2.0
    key = t.astype(np.float64) + segment.astype(np.float64) * (4.0 * window_ms + 1e12)
    lo = np.searchsorted(key, key - half, side="left")
    hi = np.searchsorted(key, key + half, side="right")
    csum = np.vstack([np.zeros((1, evidence.shape[1])), np.cumsum(evidence, axis=0)])
    return (csum[hi, chosen] - csum[lo, chosen]) / (hi - lo)


def to_table(occ: xr.Dataset):
    """The occurrence Dataset as a flat pandas table: one row per bin, counts and probabilities per class."""
    by = [d for d in occ.attrs["aurora_by"].split()]
    df = occ[["frames", "clear_sky_frames"]].to_dataframe()
    counts = occ["label_frames"].to_dataframe()["label_frames"].unstack("class")
    counts.columns = [f"count_{c}" for c in counts.columns]
    prob = occ["probability"].to_dataframe()["probability"].unstack("sky_class")
    prob.columns = [f"probability_{c}" for c in prob.columns]
    err = occ["probability_error"].to_dataframe()["probability_error"].unstack("sky_class")
    err.columns = [f"probability_error_{c}" for c in err.columns]
    return pd.concat([df, counts, prob, err], axis=1).reset_index()[by + list(df.columns) + list(counts.columns)
                                                                      + list(prob.columns) + list(err.columns)]


def write_csv(occ: xr.Dataset, path) -> Path:
    """Write ``to_table(occ)`` as CSV (atomically: ``aurora_pipeline.atomic``); empty bins are blank."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        to_table(occ).to_csv(tmp, index=False, float_format="%.6g")
    return path
