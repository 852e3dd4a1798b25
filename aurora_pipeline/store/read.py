"""Reading the store: per-hour facts, single hours, and whole sites as one lazy Dataset.

``open_site`` costs O(site-years) object reads to open, whatever the number of hours:
per site-year it reads the array metadata, the per-hour facts (one object each) and the
``time`` chunks of the stored hours (one per SMALL_CHUNK_HOURS hours). Frames, embeddings,
labels and clusters stay lazy (Dask); computing them reads only the chunks they need.

    >>> ds = open_site("store.zarr", "gako", start="2011-01-06T04", end="2011-01-06T06")
    >>> both = open_sites("store.zarr", ["gako", "gill"], label="arc")
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from aurora_pipeline.errors import BadInputError, StoreError
from aurora_pipeline.hours import to_hour, to_time
from aurora_pipeline.store import layout
from aurora_pipeline.store.core import Store
from aurora_pipeline.store.facts import FACTS, read_facts
from aurora_pipeline.store.regions import hour_slot_index, read_rows

DERIVED = {"embedding": "embedding_model", "label": "classifier", "label_probability": "classifier",
           "cluster": "centroids"}  # variable -> the fact that says the hour's values are complete
DASK_CHUNK_BYTES = 64 << 20
SKYMAP_VARS = ("el", "az", "lat", "lon")


def years_in(st: Store, site: str, start, end) -> list[int]:
    h0, h1 = to_hour(start), to_hour(end)
    return [y for y in st.years(site)
            if (h0 is None or y >= int(str(h0)[:4])) and (h1 is None or y <= int(str(h1 - np.timedelta64(1, "h"))[:4]))]


def _hours_in_range(year: int, stored: np.ndarray, start, end) -> np.ndarray:
    """Indices of stored hours of ``year`` that overlap ``[start, end)`` (times to the ms)."""
    hours = np.flatnonzero(stored > 0)
    first = layout.hour_at(year, hours)
    keep = np.ones(len(hours), bool)
    t0, t1 = to_time(start), to_time(end)
    if t0 is not None:
        keep &= first + np.timedelta64(1, "h") > t0
    if t1 is not None:
        keep &= first < t1
    return hours[keep]


def hour_facts(store, site: str, start=None, end=None, *, storage_options: dict | None = None) -> pd.DataFrame:
    """One row per stored hour of ``site`` overlapping [start, end): the hour, its position and every fact."""
    st = Store.open(store, storage_options)
    frames = []
    for year in years_in(st, site, start, end):
        facts = read_facts(st.year_group(site, year))
        hours = _hours_in_range(year, facts["frames"], start, end)
        df = pd.DataFrame({name: values[hours] for name, values in facts.items()})
        df.insert(0, "first_slot", hours * layout.SLOTS_PER_HOUR)
        df.insert(0, "hour_index", hours)
        df.insert(0, "year", year)
        df.insert(0, "hour", layout.hour_at(year, hours).astype("datetime64[ns]"))
        df.insert(0, "site", site)
        frames.append(df)
    columns = ["site", "hour", "year", "hour_index", "first_slot", *FACTS]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    return pd.concat(frames, ignore_index=True)[columns]


def read_inventory(store, sites: list[str] | None = None, *, storage_options: dict | None = None) -> pd.DataFrame:
    """The ingested archive files (site, hour, file, sha256, size, frames), O(site-years) reads.

    The nightly run compares it with a listing of the archive to find new and late files.
    """
    st = Store.open(store, storage_options)
    parts = [hour_facts(st, site) for site in (sites or st.sites())]
    columns = ["site", "hour", "file", "sha256", "size", "frames"]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    df = pd.concat(parts, ignore_index=True)
    return df.rename(columns={"source_file": "file", "source_sha256": "sha256", "source_size": "size"})[columns]


def read_hour(store, site: str, hour, variables=("time", "frames"), *, storage_options: dict | None = None) -> dict:
    """The stored rows of one hour: name -> array of the hour's n frames (time as datetime64[ms]).

    Raises StoreError when the hour is not stored.
    """
    st = Store.open(store, storage_options)
    year, index = layout.hour_position(hour)
    group = st.year_group(site, year)
    n = int(group["hour_frames"][index]) if group is not None else 0
    if n == 0:
        raise StoreError(f"{st.url}: hour {to_hour(hour)} of {site} is not stored. Fix: ingest it first.")
    slots = np.arange(index * layout.SLOTS_PER_HOUR, index * layout.SLOTS_PER_HOUR + n)
    out = {}
    for name in variables:
        if name not in group:
            raise StoreError(f"{st.url}: {site} {year} has no `{name}` yet. Fix: run the stage that writes it.")
        values = group[name][slots[0]: slots[-1] + 1]
        out[name] = values.astype("datetime64[ms]") if name == "time" else values
    return out


def read_slots(store, site: str, year: int, slots: np.ndarray, variable: str, *, storage_options: dict | None = None) -> np.ndarray:
    """Rows of ``variable`` at ``slots`` of a site-year (only the chunks that hold them are read)."""
    st = Store.open(store, storage_options)
    group = st.year_group(site, year)
    if group is None or variable not in group:
        raise StoreError(f"{st.url}: {site} {year} has no `{variable}`. Fix: run the stage that writes it.")
    values = read_rows(group, variable, slots)
    return values.astype("datetime64[ms]") if variable == "time" else values


def skymap_coords(group, hour_skymaps: np.ndarray) -> tuple[dict, dict]:
    """(coords, attrs) to put on an opened site-year: hour_skymaps is the `skymap` fact of each
    frame's hour (facts["skymap"][owner] in _open_year).

    coords always has `skymap` along time; el/az/lat/lon (y, x) only when all frames share one.
    """
    names = np.asarray(hour_skymaps, dtype=object).astype(str)
    coords = {"skymap": ("time", names, {"long_name": "skymap file of the frame's hour (empty: inscribed circle)"})}
    used = sorted({n for n in names if n})
    if len(used) != 1 or "skymap_file" not in group:
        return coords, ({"skymap_files": " ".join(used)} if used else {})
    files = [str(v) for v in group["skymap_file"][:]]
    i = files.index(used[0])
    for name in SKYMAP_VARS:
        coords[name] = (("y", "x"), np.asarray(group[name][i]), dict(group[name].attrs))
    attrs = {"skymap_file": used[0], "skymap_sha256": str(group["skymap_sha256"][i]),
             "skymap_valid_from": str(group["skymap_valid_from"][i])}
    return coords, attrs



def _open_year(st: Store, site: str, year: int, start, end, variables) -> xr.Dataset | None:
    group = st.year_group(site, year)
    facts = read_facts(group, ("frames", "skymap", *sorted(set(DERIVED.values()))))
    hours = _hours_in_range(year, facts["frames"], start, end)
    if not len(hours):
        return None
    slots, owner = hour_slot_index(hours, facts["frames"][hours])
    times = read_rows(group, "time", slots).astype("datetime64[ms]")
    keep = np.ones(len(slots), bool)
    if to_time(start) is not None:
        keep &= times >= to_time(start)
    if to_time(end) is not None:
        keep &= times < to_time(end)
    slots, owner, times = slots[keep], owner[keep], times[keep]
    if not len(slots):
        return None
    skip = ["time", *(f"hour_{f}" for f in FACTS), *SKYMAP_VARS, "skymap_file", "skymap_sha256", "skymap_valid_from",
            "skymap_crop"]
    if variables is not None:
        skip += [v for v in ("frames", "embedding", "label", "label_probability", "cluster") if v not in variables]
    ds = xr.open_zarr(st.zs, group=layout.year_path(site, year), chunks=None, consolidated=False, drop_variables=skip)
    names = [v for v in ds.data_vars if not v.startswith("hour_") and (variables is None or v in variables)]
    extra, sky_attrs = skymap_coords(group, facts["skymap"][owner])
    if not names:  # none of the asked variables written yet: the time axis alone
        return xr.Dataset(coords={"time": ("time", times, {"standard_name": "time", "long_name": "frame time (UT)"}),
                                  **extra}, attrs={"aurora_hours": int(len(hours)), **sky_attrs})
    ds = ds[names].drop_vars("time", errors="ignore").isel(slot=slots)
    per_frame = sum(int(np.prod(ds[v].shape[1:])) * ds[v].dtype.itemsize for v in names) or 1
    ds = ds.chunk({"slot": max(1024, min(1 << 20, DASK_CHUNK_BYTES // per_frame))})
    for name in names:
        fact = DERIVED.get(name)
        if fact is not None:
            done = facts[fact][owner] != ""
            attrs = dict(ds[name].attrs) | _ids(facts, hours, name)
            if not done.all():  # values of hours whose stage has not completed are missing
                ds[name] = ds[name].where(xr.DataArray(done, dims="slot"))
            ds[name].attrs = attrs
    ds = ds.assign_coords(time=("slot", times, {"standard_name": "time", "long_name": "frame time (UT)"}))
    ds["time"].encoding = {"units": layout.TIME_UNITS, "dtype": "int64"}
    ds = ds.swap_dims(slot="time").assign_coords(extra)
    ds.attrs = {"aurora_hours": int(len(hours)), **sky_attrs}
    return ds


ID_ATTRS = {"embedding_model": "aurora_model_id", "classifier": "aurora_classifier_id", "centroids": "aurora_centroids_id"}


def _ids(facts: dict, hours: np.ndarray, name: str) -> dict:
    """The model / classifier / centroids id attributes of a variable, where its hours agree on one."""
    out = {}
    for fact in ("embedding_model",) + ((DERIVED[name],) if DERIVED[name] != "embedding_model" else ()):
        values = {v for v in facts[fact][hours].tolist() if v}
        if len(values) == 1:
            key = "aurora_encoder_id" if fact == "embedding_model" and name != "embedding" else ID_ATTRS[fact]
            out[key] = values.pop()
    return out


OPEN_THREADS = 8  # site-years opened at once: their reads are mostly waiting (disk, S3 round trips)


def _in_threads(f, items) -> list:
    """``[f(x) for x in items]``, run in a few threads (order kept)."""
    items = list(items)
    if len(items) < 2:
        return [f(x) for x in items]
    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(max_workers=min(OPEN_THREADS, len(items))) as pool:
        return list(pool.map(f, items))


def open_site(store, site: str, start=None, end=None, *, variables: list[str] | None = None,
              storage_options: dict | None = None) -> xr.Dataset:
    """Every stored frame of ``site`` in ``[start, end)`` as one lazy Dataset on a sorted ``time`` axis.

    Variables: ``frames`` (time, y, x), ``embedding`` (time, feature), ``label`` (time, CF flags;
    missing = NaN), ``label_probability`` (time, class), ``cluster`` (time; missing = NaN), as
    far as the stages have written them (``variables`` keeps only some). Values of an hour
    whose stage has not completed are missing. Raises StoreError when nothing is stored.
    """
    st = Store.open(store, storage_options)
    site = site.lower()
    parts = [p for p in _in_threads(lambda y: _open_year(st, site, y, start, end, variables), years_in(st, site, start, end))
             if p is not None]
    if not parts:
        raise StoreError(f"{st.url}: no stored hours for site {site!r} in [{start}, {end}). Sites in the store: "
                         f"{', '.join(st.sites()) or 'none'}. Fix: ingest that site and time range first.")
    n_hours = sum(p.attrs["aurora_hours"] for p in parts)
    ds = parts[0] if len(parts) == 1 else xr.concat(parts, dim="time", data_vars="all", coords="minimal",
                                                    compat="override", join="outer", combine_attrs="drop_conflicts")
    used = sorted({str(v) for v in ds["skymap"].values if v}) if "skymap" in ds.coords else []
    if len(used) > 1:  # one geometry per dataset: the range spans skymaps, so el/az/lat/lon are left out
        ds = ds.drop_vars([v for v in SKYMAP_VARS if v in ds.coords])
        ds.attrs = {"skymap_files": " ".join(used)}
    sky = {k: v for k, v in ds.attrs.items() if k.startswith("skymap_")}
    ds.attrs = {"site": site, "aurora_hours": n_hours, "aurora_pipeline_version": st.attrs.get("aurora_pipeline_version"), **sky,
                **{f"preprocess_{k}": ("none" if v is None else v) for k, v in (st.preprocess or {}).items()}}
    return ds


def open_sites(store, sites: list[str] | None = None, start=None, end=None, *, label: str | None = None,
               variables: list[str] | None = None, storage_options: dict | None = None) -> xr.Dataset:
    """Several sites as one lazy Dataset sorted by time, with a ``site`` coordinate along ``time``.

    ``sites`` defaults to the store's own record of its sites. ``label`` keeps only the frames
    labelled with that class (frames with no label are skipped). ``variables`` defaults to
    every variable but ``frames`` (heavy).
    """
    st = Store.open(store, storage_options)
    sites = [s.lower() for s in (sites or st.sites())]
    unknown = [s for s in sites if s not in st.sites()]
    if unknown:
        raise BadInputError(", ".join(unknown), f"no such site in {st.url} (it holds {', '.join(st.sites()) or 'none'})",
                            "pick sites the store holds, or ingest them first")
    wanted = variables if variables is not None else ["embedding", "label", "label_probability", "cluster"]
    parts = []
    for site, ds in zip(sites, _in_threads(lambda s: open_site(st, s, start, end, variables=wanted + (["label"] if label else [])), sites)):
        parts.append(ds.assign_coords(site=("time", np.full(ds.sizes["time"], site))))
    out = parts[0] if len(parts) == 1 else xr.concat(parts, dim="time", data_vars="all", coords="different",
                                                     compat="equals", join="outer", combine_attrs="drop_conflicts")
    out = out.sortby("time")
    if label is not None:
        if "label" not in out:
            raise StoreError(f"{st.url}: no `label` variable yet. Fix: run `aurora-pipeline classify` first.")
        names = str(out["label"].attrs.get("flag_meanings", "")).split()
        if label not in names:
            raise BadInputError("label", f"{label!r} is not a class of this store ({', '.join(names)})", "pick one of those")
        code = out["label"].attrs["flag_values"][names.index(label)]
        out = out.isel(time=np.flatnonzero((out["label"] == code).values))
    out.attrs["sites"] = " ".join(sites)
    return out
