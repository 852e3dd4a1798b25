"""The labelled Zarr store: layout, writes keyed by position, and lazy reads.

Layout (Zarr v3; every group opens with plain xarray)::

    STORE/                         root attrs: title, Conventions, source, history, aurora_pipeline_version
      <site>/                      one subtree per site, lower-case four-letter code (e.g. gako)
        <YYYYMMDD>T<HH>/           one group per site-hour = one archive file
          time                     (time) int64 milliseconds since 1970-01-01, exact to the ms
          frames                   (time, y, x) uint8, brightness x 255 after eq. 1
          embedding, label, ...    added beside frames by the later stages
      failures/                    the table of files that could not be ingested (see failures.py)

Why one group per site-hour: the real archive delivers one file per site-hour and
delivers them late and out of order. A late hour is a new group, written at a cost
bounded by that hour's size, and never moves the history already stored; a rerun
rewrites the same group (a write keyed by position, never an append); two Dask tasks
never write the same group because they never ingest the same file. ``open_site``
stitches the hours of a site into one sorted, lazy time axis.

An hour group counts only once its ``aurora_ingest_complete`` attribute is set, which
happens after every array in it is written: a run killed half way leaves an
incomplete group that readers ignore and the next run rewrites.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
import zarr.storage

from aurora_pipeline import __version__
from aurora_pipeline.errors import BadInputError, StoreError

TIME_ENCODING = {"units": "milliseconds since 1970-01-01", "calendar": "proleptic_gregorian", "dtype": "int64"}
FRAMES_PER_CHUNK = 64  # 64 frames of 128x128 uint8 = 1 MiB per chunk
COMPLETE = "aurora_ingest_complete"
HOUR_GROUP = re.compile(r"^\d{8}T\d{2}$")
FRAMES_ATTRS = {
    "units": "1",
    "long_name": "all-sky image brightness after the eq. 1 stretch, scaled to 0-255",
    "valid_range": [0, 255],
    "comment": "brightness in [0, 1] is frames / 255; y runs north-up as in the source CDF rows",
}


def zarr_store(store: str | Path | zarr.storage.StoreLike, storage_options: dict | None = None, *, read_only=False):
    """A zarr Store for a local path or an fsspec URL such as ``s3://bucket/store.zarr``."""
    if not isinstance(store, (str, Path)):
        return store
    text = str(store)
    if "://" in text and not text.startswith("file://"):
        return zarr.storage.FsspecStore.from_url(text, storage_options=storage_options or {}, read_only=read_only)
    path = Path(text.removeprefix("file://"))
    if read_only and not path.exists():
        raise StoreError(f"{path}: no such store. Fix: run `aurora-pipeline ingest --store {path}` first.")
    return zarr.storage.LocalStore(path, read_only=read_only)


def hour_key(hour: str | np.datetime64) -> str:
    """``"2011010617"`` or a datetime64 -> the group name ``"20110106T17"``."""
    text = str(hour)
    if re.fullmatch(r"\d{10}", text):
        return f"{text[:8]}T{text[8:]}"
    if HOUR_GROUP.match(text):
        return text
    h = np.datetime64(hour, "h").astype(object)
    return f"{h:%Y%m%dT%H}"


def hour_group(site: str, hour: str | np.datetime64) -> str:
    return f"{site}/{hour_key(hour)}"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ensure_root(zs, action: str) -> None:
    """Create the root group's CF attributes if missing and add a dated history line."""
    root = zarr.open_group(zs, mode="a")
    attrs = dict(root.attrs)
    history = attrs.get("history", "")
    line = f"{_now()} aurora-pipeline {__version__}: {action}"
    root.attrs.update(
        {
            "title": attrs.get("title", "THEMIS ASI frames labelled with a SimCLR encoder"),
            "Conventions": "CF-1.10",
            "source": "THEMIS ground-based all-sky imagers, Level-1 full-resolution CDF (thg_l1_asf)",
            "institution": attrs.get("institution", "aurora-pipeline"),
            "aurora_pipeline_version": __version__,
            "history": (history + "\n" + line).strip(),
        }
    )


def write_hour_frames(zs, site: str, hour: str, times: np.ndarray, frames: np.ndarray, attrs: dict) -> None:
    """Write (or rewrite) one site-hour group with its frames, then mark it complete.

    ``times`` (n,) datetime64[ms], strictly increasing; ``frames`` (n, s, s) uint8.
    Any earlier content of the group (a half-written attempt, an older version of the
    file) is replaced whole.
    """
    if len(times) != len(frames):
        raise StoreError(f"{site} {hour}: {len(times)} times for {len(frames)} frames")
    ds = xr.Dataset(
        {"frames": (("time", "y", "x"), frames, FRAMES_ATTRS)},
        coords={"time": ("time", times.astype("datetime64[ms]"), {"long_name": "frame time (UT)", "standard_name": "time"})},
        attrs={**attrs, "site": site, COMPLETE: False},
    )
    chunk = min(FRAMES_PER_CHUNK, max(len(frames), 1))
    ds.to_zarr(
        zs,
        group=hour_group(site, hour),
        mode="w",
        consolidated=False,
        encoding={"time": TIME_ENCODING, "frames": {"chunks": (chunk,) + frames.shape[1:]}},
    )
    mark_complete(zs, site, hour)


def mark_complete(zs, site: str, hour: str) -> None:
    zarr.open_group(zs, path=hour_group(site, hour), mode="r+").attrs[COMPLETE] = True


def site_group(zs, site: str):
    try:
        return zarr.open_group(zs, path=site, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        return None


def list_hours(zs, site: str, *, complete_only: bool = True) -> list[str]:
    """Sorted hour-group names of a site (``YYYYMMDDTHH``), complete ones only by default."""
    group = site_group(zs, site)
    if group is None:
        return []
    names = sorted(name for name in group.group_keys() if HOUR_GROUP.match(name))
    if not complete_only:
        return names
    return [n for n in names if zarr.open_group(zs, path=f"{site}/{n}", mode="r").attrs.get(COMPLETE, False)]


def list_sites(zs) -> list[str]:
    try:
        root = zarr.open_group(zs, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return []
    return sorted(n for n in root.group_keys() if re.fullmatch(r"[a-z0-9]{4}", n))


def hour_attrs(zs, site: str, hour: str) -> dict | None:
    """Attributes of a site-hour group, or None when it does not exist."""
    try:
        return dict(zarr.open_group(zs, path=hour_group(site, hour), mode="r").attrs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        return None


def inventory(zs, site: str, hours: list[str] | None = None) -> dict[str, dict]:
    """The ingested files of a site: hour key -> {file, sha256, size, frames, ...} (complete hours only)."""
    keys = [hour_key(h) for h in hours] if hours is not None else list_hours(zs, site, complete_only=False)
    out = {}
    for key in keys:
        attrs = hour_attrs(zs, site, key)
        if attrs and attrs.get(COMPLETE):
            out[key] = {
                "file": attrs.get("aurora_source_file"),
                "sha256": attrs.get("aurora_source_sha256"),
                "size": attrs.get("aurora_source_size"),
                "frames": attrs.get("aurora_frames"),
            }
    return out


def select_hours(names: list[str], start, end) -> list[str]:
    def hour_of(name):
        return np.datetime64(f"{name[:4]}-{name[4:6]}-{name[6:8]}T{name[9:11]}", "h")

    t0 = None if start is None else np.datetime64(np.datetime64(str(start)), "h")
    t1 = None if end is None else np.datetime64(str(end))
    keep = []
    for name in names:
        h = hour_of(name)
        if t0 is not None and h < t0:
            continue
        if t1 is not None and h >= t1:
            continue
        keep.append(name)
    return keep


def open_hour(zs, site: str, hour: str, *, chunks="auto-store") -> xr.Dataset:
    """One site-hour group as a lazy Dataset (chunks follow the store's)."""
    return xr.open_zarr(zs, group=hour_group(site, hour), consolidated=False, chunks={} if chunks == "auto-store" else chunks)


def open_site(
    store: str | Path,
    site: str,
    start: str | np.datetime64 | None = None,
    end: str | np.datetime64 | None = None,
    *,
    storage_options: dict | None = None,
) -> xr.Dataset:
    """Open every stored frame of ``site`` in ``[start, end)`` as one lazy Dataset.

    The hours are stitched on one sorted ``time`` axis; all variables present in
    every hour group (frames, embedding, label, label_probability, cluster) come
    along, Dask-backed. Variables missing from some hours are filled (NaN/-1) so that
    the time axis stays whole. Raises ``StoreError`` when the site has no hours.
    """
    zs = zarr_store(store, storage_options, read_only=True)
    site = site.lower()
    names = select_hours(list_hours(zs, site), start, end)
    if not names:
        have = list_sites(zs)
        raise StoreError(
            f"{store}: no complete hours for site {site!r} in [{start}, {end}). "
            f"Sites in the store: {', '.join(have) or 'none'}. Fix: ingest that site and time range first."
        )
    parts = [open_hour(zs, site, name) for name in names]
    ds = xr.concat(parts, dim="time", data_vars="all", coords="minimal", compat="override", join="outer",
                   combine_attrs="drop_conflicts", fill_value=_fill_values(parts)) if len(parts) > 1 else parts[0]
    ds.attrs = {k: v for k, v in ds.attrs.items() if k in _SITE_ATTRS} | {"site": site, "aurora_hours": len(names)}
    if start is not None or end is not None:
        ds = ds.sel(time=slice(None if start is None else np.datetime64(str(start)),
                               None if end is None else np.datetime64(str(end)) - np.timedelta64(1, "ms")))
    return ds


_SITE_ATTRS = {"site", "aurora_pipeline_version"}


def _fill_values(parts: list[xr.Dataset]) -> dict:
    fills = {}
    for ds in parts:
        for name, var in ds.data_vars.items():
            fills[name] = -1 if np.issubdtype(var.dtype, np.integer) else np.nan
    return fills


def open_sites(
    store: str | Path,
    sites: list[str] | None = None,
    start: str | np.datetime64 | None = None,
    end: str | np.datetime64 | None = None,
    *,
    label: str | None = None,
    variables: list[str] | None = None,
    storage_options: dict | None = None,
) -> xr.Dataset:
    """Open several sites as one lazy Dataset on a ``time`` axis sorted by time, with a
    ``site`` coordinate along it (select a site with ``ds.where(ds.site == "gako")`` or
    group with ``ds.groupby("site")``).

    ``label`` keeps only the frames whose ``label`` decodes to that class name.
    ``variables`` limits the variables (default: all but ``frames``, which is heavy).
    """
    zs = zarr_store(store, storage_options, read_only=True)
    sites = [s.lower() for s in (sites or list_sites(zs))]
    parts = []
    for site in sites:
        ds = open_site(store, site, start, end, storage_options=storage_options)
        keep = variables if variables is not None else [v for v in ds.data_vars if v != "frames"]
        ds = ds[keep]
        parts.append(ds.assign_coords(site=("time", np.full(ds.sizes["time"], site))))
    out = xr.concat(parts, dim="time", data_vars="all", coords="different", compat="equals", join="outer",
                    combine_attrs="drop_conflicts") if len(parts) > 1 else parts[0]
    out = out.sortby("time")
    if label is not None:
        if "label" not in out:
            raise StoreError(f"{store}: no `label` variable yet. Fix: run `aurora-pipeline classify` first.")
        names = str(out["label"].attrs.get("flag_meanings", "")).split()
        if label not in names:
            raise BadInputError("label", f"{label!r} is not a class of this store ({', '.join(names)})", "pick one of those")
        code = out["label"].attrs["flag_values"][names.index(label)]
        out = out.isel(time=np.flatnonzero((out["label"] == code).values))
    out.attrs["sites"] = " ".join(sites)
    return out


def write_hour_variables(zs, site: str, hour: str, ds: xr.Dataset, marker: str, value: str, encoding: dict | None = None) -> None:
    """Write (or replace) derived variables of one site-hour beside its frames.

    ``ds`` holds variables on the hour's ``time`` axis (no time coordinate needed; it
    must have as many rows as the hour has frames). ``marker`` is a group attribute
    cleared before the write and set to ``value`` after it, so an interrupted write is
    redone by the next run.
    """
    group = zarr.open_group(zs, path=hour_group(site, hour), mode="r+")
    n = group["frames"].shape[0]
    if ds.sizes.get("time", n) != n:
        raise StoreError(f"{site}/{hour_key(hour)}: {ds.sizes['time']} rows for {n} frames; refusing to write")
    group.attrs[marker] = ""
    for name in list(ds.variables):
        if name != "time" and name in group:
            del group[name]  # replaced whole, with this write's chunks
    ds.drop_vars("time", errors="ignore").to_zarr(zs, group=hour_group(site, hour), mode="a", consolidated=False, encoding=encoding or {})
    group.attrs[marker] = value


def read_hour_variable(zs, site: str, hour: str, name: str) -> np.ndarray:
    """The whole of one variable of one site-hour, as a NumPy array."""
    return zarr.open_group(zs, path=hour_group(site, hour), mode="r")[name][:]


def read_hour_times(zs, site: str, hour: str) -> np.ndarray:
    """Frame times of one site-hour, datetime64[ms]."""
    return np.asarray(read_hour_variable(zs, site, hour, "time"), dtype="int64").astype("datetime64[ms]")


def read_inventory(store, sites: list[str] | None = None, *, storage_options: dict | None = None):
    """The ingested archive files as a pandas DataFrame (site, hour, file, sha256, size, frames).

    The inventory lives in each site-hour group's attributes (written with the group, so
    it can never disagree with the frames); this gathers it for reading. The nightly run
    compares it with a listing of the archive to find new and late files.
    """
    import pandas as pd

    zs = zarr_store(store, storage_options, read_only=True)
    rows = [
        {"site": site, "hour": hour, **entry}
        for site in (sites or list_sites(zs))
        for hour, entry in inventory(zs, site).items()
    ]
    return pd.DataFrame(rows, columns=["site", "hour", "file", "sha256", "size", "frames"])
