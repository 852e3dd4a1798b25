"""Reading the store: per-hour facts, single hours, and whole sites as one lazy Dataset.

``open_site`` costs O(site-years) object reads to open, whatever the number of hours:
per site-year it reads the array metadata, the per-hour facts (one object each) and the
``time`` chunks of the stored hours (one per SMALL_CHUNK_HOURS hours). Frames, embeddings,
labels and clusters stay lazy (Dask); computing them reads only the chunks they need.

    >>> ds = open_site("store.zarr", "gako", start="2011-01-06T04", end="2011-01-06T06")
    >>> both = open_sites("store.zarr", ["gako", "gill"], label="arc")
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr
import zarr
from zarr.core.sync import sync

from aurora_pipeline.errors import BadInputError, StoreError
from aurora_pipeline.hours import time_range, to_hour, to_time
from aurora_pipeline.source import magnetic
from aurora_pipeline.source.magnetic import outside_valid_years, range_warning
from aurora_pipeline.source.sites import check_site
from aurora_pipeline.store import layout
from aurora_pipeline.store.core import Store, StoreLike, open_store, raise_if_damaged
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


def hour_facts(store: StoreLike, site: str, start=None, end=None, *, storage_options: dict | None = None) -> pd.DataFrame:
    """One row per stored hour of ``site`` overlapping [start, end): the hour, its position and every fact."""
    start, end = time_range(start, end)
    st = open_store(store, storage_options)
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


def read_inventory(store: StoreLike, sites: list[str] | None = None, *, storage_options: dict | None = None) -> pd.DataFrame:
    """The ingested archive files (site, hour, file, sha256, size, frames), O(site-years) reads.

    The nightly run compares it with a listing of the archive to find new and late files.
    """
    st = open_store(store, storage_options)
    parts = [hour_facts(st, site) for site in (sites or st.sites())]
    columns = ["site", "hour", "file", "sha256", "size", "frames"]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    df = pd.concat(parts, ignore_index=True)
    return df.rename(columns={"source_file": "file", "source_sha256": "sha256", "source_size": "size"})[columns]


def read_hour(store: StoreLike, site: str, hour, variables=("time", "frames"), *, storage_options: dict | None = None) -> dict:
    """The stored rows of one hour: name -> array of the hour's n frames (time as datetime64[ms]).

    Raises StoreError when the hour is not stored.
    """
    st = open_store(store, storage_options)
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


def read_slots(store: StoreLike, site: str, year: int, slots: np.ndarray, variable: str, *, storage_options: dict | None = None) -> np.ndarray:
    """Rows of ``variable`` at ``slots`` of a site-year (only the chunks that hold them are read)."""
    st = open_store(store, storage_options)
    group = st.year_group(site, year)
    if group is None or variable not in group:
        raise StoreError(f"{st.url}: {site} {year} has no `{variable}`. Fix: run the stage that writes it.")
    values = read_rows(group, variable, slots)
    return values.astype("datetime64[ms]") if variable == "time" else values


def skymap_coords(group, hour_skymaps: np.ndarray) -> tuple[dict, dict]:
    """(coords, attrs) to put on an opened site-year: hour_skymaps is the `skymap` fact of each
    frame's hour (facts["skymap"][owner]).

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



@dataclass
class _YearPiece:
    """What ``open_site`` reads of one site-year: its stored frames in range and the arrays that hold them."""

    year: int
    group: object                  # the zarr Group
    hours: np.ndarray              # stored hour indices in range
    slots: np.ndarray              # slot of each frame in range
    owner: np.ndarray              # hour index of each frame
    times: np.ndarray              # datetime64[ms] of each frame
    facts: dict                    # fact -> (hours_in_year,) values
    arrays: dict                   # variable -> zarr Array (only those present and asked for)
    classes: tuple | None          # (values, attrs) of the `class` coordinate, when label_probability is read


DATA_VARS = ("frames", "embedding", "label", "label_probability", "cluster")  # along slot, beside `time`


async def _array_or_none(agroup, name: str):
    """The array ``name`` of the group, or None when the stage that writes it has not run there
    (asked for by name: listing a site-year's keys walks all its chunk objects)."""
    try:
        return await agroup.getitem(name)
    except KeyError:
        return None
_READ_FACTS = ("frames", "skymap", *sorted(set(DERIVED.values())))


async def _read_year(group, year: int, start, end, variables) -> _YearPiece | None:
    """One site-year's facts, frame times and array handles, fetched concurrently (a few round trips)."""
    agroup = zarr.AsyncGroup(metadata=group.metadata, store_path=group.store_path)  # zarr's public async view, no I/O
    fact_arrays = await asyncio.gather(*(agroup.getitem(f"hour_{name}") for name in _READ_FACTS))
    values = await asyncio.gather(*(a.getitem(slice(None)) for a in fact_arrays))
    facts = {name: (v.astype(object) if FACTS[name][0] == "str" else np.asarray(v)) for name, v in zip(_READ_FACTS, values)}
    hours = _hours_in_range(year, facts["frames"], start, end)
    if not len(hours):
        return None
    slots, owner = hour_slot_index(hours, facts["frames"][hours])
    asked = [n for n in DATA_VARS if variables is None or n in variables]
    time_array, *found = await asyncio.gather(agroup.getitem("time"), *(_array_or_none(agroup, n) for n in asked))
    names, handles = [n for n, a in zip(asked, found) if a is not None], [a for a in found if a is not None]
    times = (await time_array.get_orthogonal_selection((slots,))).astype("datetime64[ms]")
    keep = np.ones(len(slots), bool)
    if to_time(start) is not None:
        keep &= times >= to_time(start)
    if to_time(end) is not None:
        keep &= times < to_time(end)
    if not keep.any():
        return None
    classes = None
    if "label_probability" in names:
        array = await agroup.getitem("class")
        classes = (np.asarray(await array.getitem(slice(None))), dict(array.attrs))
    return _YearPiece(year, group, hours, slots[keep], owner[keep], times[keep], facts,
                      {n: zarr.Array(h) for n, h in zip(names, handles)}, classes)


def _read_years(st: Store, site: str, years: list[int], start, end, variables) -> list[_YearPiece]:
    groups = [st.year_group(site, y) for y in years]

    async def read_all():
        return await asyncio.gather(*(_read_year(g, y, start, end, variables) for g, y in zip(groups, years)))

    try:
        return [p for p in sync(read_all()) if p is not None]
    except (ValueError, UnicodeDecodeError):  # an array's zarr.json that is not JSON: name it
        raise_if_damaged(st)
        raise


def _lazy_rows(array, slots: np.ndarray, rows: int):
    """The rows ``slots`` of a zarr array as a dask array in blocks of ``rows`` frames; each block
    reads only the chunks that hold its slots, when computed."""
    # dask.array: off `import aurora_pipeline.store` (only when a site is opened)
    import dask.array as da

    blocks = [slots[i: i + rows] for i in range(0, len(slots), rows)]
    name = "aurora-rows-" + hashlib.sha1(f"{array.store_path}".encode() + slots.tobytes()).hexdigest()
    tail = (slice(None),) * (array.ndim - 1)
    graph = {(name, i, *([0] * (array.ndim - 1))): (_read_block, array, block, tail) for i, block in enumerate(blocks)}
    chunks = (tuple(len(b) for b in blocks), *((n,) for n in array.shape[1:]))
    return da.Array(graph, name, chunks, dtype=array.dtype)


def _read_block(array, slots: np.ndarray, tail: tuple) -> np.ndarray:
    return array.get_orthogonal_selection((slots, *tail))


def _site_variable(name: str, pieces: list[_YearPiece], rows: int) -> xr.Variable:
    """``name`` over every piece (fill values where a site-year lacks it), CF-decoded as xarray would."""
    # dask.array: off `import aurora_pipeline.store`, as above
    import dask.array as da

    first = next(p.arrays[name] for p in pieces if name in p.arrays)
    parts = [(_lazy_rows(p.arrays[name], p.slots, rows) if name in p.arrays else
              da.full((len(p.slots), *first.shape[1:]), first.fill_value, dtype=first.dtype,
                      chunks=(rows, *first.shape[1:]))) for p in pieces]
    data = parts[0] if len(parts) == 1 else da.concatenate(parts)
    attrs = _agreed_attrs([p.arrays[name].attrs for p in pieces if name in p.arrays])
    if "_FillValue" in attrs:  # as the array's metadata has it (the attribute may be encoded, e.g. NaN)
        attrs["_FillValue"] = first.fill_value.item()
    encoding = {"dtype": first.dtype, "chunks": first.chunks}
    if "coordinates" in attrs:
        encoding["coordinates"] = attrs.pop("coordinates")
    dims = ("time", *list(first.metadata.dimension_names or [f"dim_{i}" for i in range(first.ndim)])[1:])
    return xr.conventions.decode_cf_variable(name, xr.Variable(dims, data, attrs, encoding), decode_times=False)


def _agreed_attrs(all_attrs: list) -> dict:
    """The attributes that every site-year that has them agrees on (xarray's ``drop_conflicts``)."""
    out, dropped = {}, set()
    for attrs in all_attrs:
        for key, value in dict(attrs).items():
            if key in dropped:
                continue
            if key in out and not _same(out[key], value):
                out.pop(key)
                dropped.add(key)
            elif key not in out:
                out[key] = value
    return out


def _same(a, b) -> bool:
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except (TypeError, ValueError):
        return a == b


def _site_dataset(st: Store, site: str, pieces: list[_YearPiece]) -> xr.Dataset:
    times = np.concatenate([p.times for p in pieces])
    names = sorted({n for p in pieces for n in p.arrays}, key=lambda n: (n != "frames", n))
    # per hour first, then out to the frames: a per-frame str conversion of 10^6 names costs seconds
    skymaps = np.concatenate([p.facts["skymap"].astype(str)[p.owner] for p in pieces])
    extra, sky_attrs = _site_skymap(pieces, skymaps)
    n_hours = int(sum(len(p.hours) for p in pieces))
    magnetic, site_attrs = _magnetic_coords(site, pieces, skymaps, times, extra)
    coords = {"time": ("time", times, {"standard_name": "time", "long_name": "frame time (UT)"}), **extra,
              **magnetic}
    classes = next((p.classes for p in pieces if p.classes is not None), None)
    if classes is not None:
        coords["class"] = ("class", classes[0], classes[1])
    data = {}
    if names:
        firsts = {n: next(p.arrays[n] for p in pieces if n in p.arrays) for n in names}
        per_frame = sum(int(np.prod(a.shape[1:])) * a.dtype.itemsize for a in firsts.values()) or 1
        rows = max(1024, min(1 << 20, DASK_CHUNK_BYTES // per_frame))
        for name in names:
            var = _site_variable(name, pieces, rows)
            fact = DERIVED.get(name)
            if fact is not None:
                done = np.concatenate([(p.facts[fact] != "")[p.owner] for p in pieces])
                attrs = dict(var.attrs) | _ids_over(pieces, name)
                if not done.all():  # values of hours whose stage has not completed are missing
                    var = var.where(xr.Variable("time", done))
                var.attrs = attrs
            data[name] = var
    ds = xr.Dataset(data, coords=coords)
    ds["time"].encoding = {"units": layout.TIME_UNITS, "dtype": "int64"}
    ds.attrs = {"site": site, "aurora_hours": n_hours, "aurora_pipeline_version": st.attrs.get("aurora_pipeline_version"),
                **sky_attrs, **site_attrs,
                **{f"preprocess_{k}": ("none" if v is None else v) for k, v in (st.preprocess or {}).items()}}
    return ds


def _site_skymap(pieces: list[_YearPiece], skymaps: np.ndarray) -> tuple[dict, dict]:
    """The `skymap` coordinate along time, and el/az/lat/lon when every frame shares one skymap."""
    names = np.asarray(skymaps).astype(str)
    coords = {"skymap": ("time", names, {"long_name": "skymap file of the frame's hour (empty: inscribed circle)"})}
    used = _used_skymaps(pieces)
    if len(used) != 1:
        return coords, ({"skymap_files": " ".join(used)} if used else {})
    piece = next(p for p in pieces if used[0] in _used_skymaps([p]))
    geometry, attrs = skymap_coords(piece.group, piece.facts["skymap"][_frame_hours(piece)])  # per hour
    return {**coords, **{k: v for k, v in geometry.items() if k != "skymap"}}, attrs


def _used_skymaps(pieces: list[_YearPiece]) -> list[str]:
    """The skymap names of the hours that have frames in the pieces, sorted (per hour, not per frame)."""
    return sorted({str(n) for p in pieces for n in p.facts["skymap"][_frame_hours(p)] if str(n)})


def _frame_hours(piece: _YearPiece) -> np.ndarray:
    """The hour indices that hold the piece's frames (``owner`` is sorted: one pass, no hashing)."""
    owner = piece.owner
    return owner[np.r_[True, owner[1:] != owner[:-1]]] if len(owner) else owner


def _magnetic_coords(site: str, pieces: list[_YearPiece], skymaps: np.ndarray, times: np.ndarray,
                     sky_coords: dict) -> tuple[dict, dict]:
    """Lazy AACGM-v2 coordinates (``source/magnetic.py``): ``mlat``/``mlt`` of the zenith along time,
    and ``pixel_mlat``/``pixel_mlon`` on (y, x) beside a skymap's lat/lon; and the site position attributes.

    The position: the first skymap of the frames that recorded one (``skymap_site_position``),
    else the published THEMIS table. Nothing is computed here; frames outside AACGM's years
    are only counted (the caller warns)."""
    position, source = None, "none (no skymap position and not in THEMIS_POSITIONS)"
    used = _used_skymaps(pieces)
    if used:
        position = _skymap_position(pieces, used)
        if position is not None:
            source = "skymap"
    if position is None:
        position = magnetic.site_position(site)
        if position is not None:
            source = "THEMIS_POSITIONS (asilib asi_locations.csv)"
    coords = magnetic.lazy_frame_coords(times, position, source)
    if "lat" in sky_coords and "lon" in sky_coords:
        lat, lon = sky_coords["lat"][1], sky_coords["lon"][1]
        altitude = float(sky_coords["lat"][2].get("mapping_altitude_km", magnetic.ALTITUDE_KM))
        coords.update(magnetic.lazy_pixel_coords(lat, lon, altitude, times[len(times) // 2]))
    attrs = {"site_position_source": source}
    if position is not None:
        attrs |= {"site_lat": position[0], "site_lon": position[1], "site_alt_m": position[2]}
    return coords, attrs


def _skymap_position(pieces: list[_YearPiece], used: list[str]) -> tuple[float, float, float] | None:
    """The imager position the store kept with the first of ``used`` skymaps, or None (older store)."""
    for piece in pieces:
        if not set(_used_skymaps([piece])) & set(used):
            continue
        try:
            files = [str(v) for v in piece.group["skymap_file"][:]]
            positions = piece.group["skymap_site_position"][:]
        except KeyError:
            continue
        for name in used:
            if name in files and files.index(name) < len(positions):
                value = positions[files.index(name)]
                if np.all(np.isfinite(value)):
                    return tuple(float(v) for v in value)
    return None


def _ids_over(pieces: list[_YearPiece], name: str) -> dict:
    """The model / classifier / centroids ids of ``name`` where all its hours agree on one."""
    facts = {f: np.concatenate([p.facts[f][p.hours] for p in pieces]) for f in set(DERIVED.values())}
    hours = np.arange(len(facts["embedding_model"]))
    return _ids(facts, hours, name)


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
    with cf.ThreadPoolExecutor(max_workers=min(OPEN_THREADS, len(items))) as pool:
        return list(pool.map(f, items))


def open_site(store: StoreLike, site: str, start=None, end=None, *, variables: list[str] | None = None,
              storage_options: dict | None = None) -> xr.Dataset:
    """Every stored frame of ``site`` in ``[start, end)`` as one lazy Dataset on a sorted ``time`` axis.

    Variables: ``frames`` (time, y, x), ``embedding`` (time, feature), ``label`` (time, CF flags;
    missing = NaN), ``label_probability`` (time, class), ``cluster`` (time; missing = NaN), as
    far as the stages have written them (``variables`` keeps only some). Values of an hour
    whose stage has not completed are missing. Raises StoreError when nothing is stored.

    Magnetic coordinates (AACGM-v2, ``aurora_pipeline.source.magnetic``), lazy: nothing is
    computed until read. ``mlat`` and ``mlt`` (time) of the imager's zenith at 110 km;
    with a skymap, ``pixel_mlat`` / ``pixel_mlon`` (y, x) of its ``lat``/``lon`` at their
    mapping altitude. The site's position (attributes ``site_lat``, ``site_lon``,
    ``site_alt_m``, ``site_position_source``) is the skymap's, else the published table.
    Frames outside AACGM's years 1990-2030 get NaN, and one MagneticCoordinatesWarning.
    """
    start, end = time_range(start, end)
    st = open_store(store, storage_options)
    site = site.lower()
    ds = _open_site(st, site, start, end, variables)
    outside = _outside_aacgm(ds)
    if outside:
        range_warning(f"{st.url} {site}", outside)
    return ds


def _open_site(st: Store, site: str, start, end, variables) -> xr.Dataset:
    pieces = _read_years(st, site, years_in(st, site, start, end), start, end, variables)
    if not pieces:
        if site not in st.sites():
            check_site(site, "site")  # a typo or a path is named as such, not as "not stored"
        raise StoreError(f"{st.url}: no stored hours for site {site!r} in [{start}, {end}). Sites in the store: "
                         f"{', '.join(st.sites()) or 'none'}. Fix: ingest that site and time range first.")
    return _site_dataset(st, site, pieces)


def _outside_aacgm(ds: xr.Dataset) -> int:
    """Frames of ``ds`` outside AACGM-v2's valid years (cheap: two comparisons on the sorted times)."""
    t = ds["time"].values
    return outside_valid_years(t) if len(t) and outside_valid_years(t[[0, -1]]) else 0


def open_sites(store: StoreLike, sites: list[str] | None = None, start=None, end=None, *, label: str | None = None,
               variables: list[str] | None = None, storage_options: dict | None = None) -> xr.Dataset:
    """Several sites as one lazy Dataset sorted by time, with a ``site`` coordinate along ``time``.

    ``sites`` defaults to the store's own record of its sites. ``label`` keeps only the frames
    labelled with that class (frames with no label are skipped). ``variables`` defaults to
    every variable but ``frames`` (heavy). ``mlat``/``mlt`` come along time as in
    ``open_site`` (one warning for all sites outside AACGM's years); the per-pixel
    ``pixel_mlat``/``pixel_mlon`` only when one site is asked for.
    """
    start, end = time_range(start, end)
    st = open_store(store, storage_options)
    sites = [s.lower() for s in (sites or st.sites())]
    unknown = [s for s in sites if s not in st.sites()]
    if unknown:
        raise BadInputError(", ".join(unknown), f"no such site in {st.url} (it holds {', '.join(st.sites()) or 'none'})",
                            "pick sites the store holds, or ingest them first")
    wanted = variables if variables is not None else ["embedding", "label", "label_probability", "cluster"]
    parts = []
    for site, ds in zip(sites, _in_threads(lambda s: _open_site(st, s, start, end, wanted + (["label"] if label else [])), sites)):
        if len(sites) > 1:  # per-pixel geometry is one site's: not carried into a multi-site Dataset
            ds = ds.drop_vars([n for n in ("pixel_mlat", "pixel_mlon") if n in ds.coords])
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
    outside = _outside_aacgm(out)
    if outside:  # once for all the sites
        range_warning(f"{st.url} {', '.join(sites)}", outside)
    return out
