"""The write protocol every stage follows: region writes first, then the facts, under the site's lock.

Ingest (frames):
    1. ``hide_hours`` (driver): hours being rewritten become invisible first (``frames = 0``);
    2. ``write_frames`` (workers, in parallel): each hour's frames into its own chunks;
    3. ``commit_hours`` (driver): times; for an hour stored before (a re-issued file, a rerun),
       every derived value of its slots cleared (embedding, label, label_probability,
       cluster: fill values, so nothing derived from the old file survives and slots past
       the new frame count hold nothing); source facts, stage facts cleared; then ``frames = n``.

Derived stages (embedding, labels, clusters), by the stage's driver:
    1. ``clear_stage``: the stage's fact of the hours to redo becomes "" (values read as missing);
    2. ``write_embedding`` / ``write_small`` : the values;
    3. ``set_stage``: the stage's fact names the model / classifier / centroids that wrote them.

A run killed between any two steps leaves each hour either as it was, or invisible /
missing, and the next run redoes it: nothing is half-visible, nothing is doubled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from aurora_pipeline.store import layout
from aurora_pipeline.store.core import Store, utc_now
from aurora_pipeline.store.facts import STAGE_FACTS, read_facts, write_facts
from aurora_pipeline.store.locks import store_lock
from aurora_pipeline.store.regions import write_hour_rows, write_small_rows
from aurora_pipeline.errors import StoreError
from aurora_pipeline.source.skymap import coordinate_attrs


@dataclass(frozen=True)
class HourWrite:
    """What the driver records for one ingested hour once its frames are written."""

    hour: np.datetime64          # start of the hour (UT)
    times: np.ndarray            # (n,) datetime64[ms], strictly increasing, inside the hour
    source_file: str
    source_url: str = ""
    source_sha256: str = ""
    source_size: int = 0
    source_layout: str = ""
    skymap: str = ""


def _by_year(hours) -> dict[int, list[tuple[int, object]]]:
    out: dict[int, list] = {}
    for item in hours:
        hour = item.hour if isinstance(item, HourWrite) else item
        year, index = layout.hour_position(hour)
        out.setdefault(year, []).append((index, item))
    return out


def hide_hours(st: Store, site: str, hours) -> None:
    """Make stored hours invisible before they are rewritten (a re-issued file, a rerun)."""
    for year, items in _by_year(hours).items():
        group = st.year_group(site, year)
        if group is None:
            continue
        with store_lock(st, site):
            stored = read_facts(group, ("frames",))["frames"]
            visible = [i for i, _ in items if stored[i] > 0]
            write_facts(group, np.array(visible), {"frames": 0})


def write_frames(st: Store, site: str, hour, frames: np.ndarray) -> list[str]:
    """Region-write one hour's frames (n, s, s) uint8 into its own chunks; returns the chunk keys written."""
    year, index = layout.hour_position(hour)
    group = st.year_group(site, year, create=True)
    size = group["frames"].shape[1:]
    if tuple(frames.shape[1:]) != tuple(size):
        raise StoreError(f"{st.url}: frames of {frames.shape[1:]} for a store of {size} frames")
    return write_hour_rows(group, index, {"frames": frames})


def commit_hours(st: Store, site: str, writes: list[HourWrite]) -> None:
    """Record ingested hours (times and facts) and make them visible, under the site's lock."""
    for year, items in _by_year(writes).items():
        group = st.year_group(site, year, create=True)
        index = np.array([i for i, _ in items])
        ws = [w for _, w in items]
        with store_lock(st, site):
            write_small_rows(group, "time", {i: w.times for i, w in zip(index, ws)})
            stored_before = read_facts(group, ("ingested_at",))["ingested_at"][index] != ""
            _clear_derived(group, index[stored_before])
            write_facts(group, index, {
                "source_file": [w.source_file for w in ws], "source_url": [w.source_url for w in ws],
                "source_sha256": [w.source_sha256 for w in ws], "source_size": [int(w.source_size) for w in ws],
                "source_layout": [w.source_layout for w in ws], "skymap": [w.skymap for w in ws],
                "ingested_at": utc_now(), **{f: "" for f in STAGE_FACTS},
                "frames": [len(w.times) for w in ws],
            })


DERIVED_ARRAYS = ("embedding", "label", "label_probability", "cluster")  # values computed from an hour's frames


def _clear_derived(group, hours: np.ndarray) -> None:
    """Fill values in every derived array over the whole slot range of ``hours`` (under the site's lock)."""
    if not len(hours):
        return
    for name in DERIVED_ARRAYS:
        if name not in group:
            continue
        empty = np.empty((0,) + tuple(group[name].shape[1:]), dtype=group[name].dtype)
        if name == "embedding":  # a big array: whole-hour chunks, written hour by hour
            for i in hours:
                write_hour_rows(group, int(i), {name: empty})
        else:
            write_small_rows(group, name, {int(i): empty for i in hours})


def clear_stage(st: Store, site: str, year: int, hours: np.ndarray, fact: str, *, downstream: bool = True) -> None:
    """Mark a stage of ``hours`` as not done (and, for embeddings, the stages that derive from them)."""
    facts = {fact: ""}
    if downstream and fact == "embedding_model":
        facts.update(classifier="", centroids="")
    with store_lock(st, site):
        write_facts(st.year_group(site, year), hours, facts)


def set_stage(st: Store, site: str, year: int, hours: np.ndarray, fact: str, value: str) -> None:
    with store_lock(st, site):
        write_facts(st.year_group(site, year), hours, {fact: value})


def write_embedding(st: Store, site: str, year: int, index: int, embedding: np.ndarray) -> list[str]:
    """Region-write one hour's embeddings (n, d) float32 into its own chunks."""
    return write_hour_rows(st.year_group(site, year), index, {"embedding": embedding})


def write_small(st: Store, site: str, year: int, per_hour: dict[str, dict[int, np.ndarray]]) -> None:
    """Write small per-frame arrays (name -> {hour index -> rows}) of several hours, under the site's lock."""
    group = st.year_group(site, year)
    with store_lock(st, site):
        for name, rows in per_hour.items():
            write_small_rows(group, name, rows)


# --- arrays the later stages add to a site-year -------------------------------------------------
SKYMAP_VARS = ("el", "az", "lat", "lon")
SKYMAP_INFO = ("skymap_file", "skymap_sha256", "skymap_valid_from")


def ensure_skymap(st: Store, site: str, year: int, sky, fov, coords: dict[str, np.ndarray], altitude_km: float) -> int:
    """Add a skymap's coordinates on the frames' grid to a site-year (idempotent); returns its index.

    sky: aurora_pipeline.source.skymap.Skymap; fov: ingest.preprocess.field_of_view(sky, cfg);
    coords: ingest.preprocess.grid_coordinates(sky, fov, cfg); altitude_km: cfg.map_altitude_km. Refuses (StoreError) a file of
    the same name with another checksum (a re-issued skymap: the hours using it must be redone).
    """
    group = st.year_group(site, year, create=True)
    size = group["frames"].shape[1:]
    with store_lock(st, site):
        if "skymap_file" not in group:
            for name in SKYMAP_INFO:
                group.create_array(name, shape=(0,), chunks=(64,), dtype=str, dimension_names=["skymap"],
                                   attributes={"long_name": name.replace("_", " ")})
            group.create_array("skymap_crop", shape=(0, 4), chunks=(64, 4), dtype="int32", fill_value=-1,
                               dimension_names=["skymap", "edge"],
                               attributes={"long_name": "crop window in the raw frame: row0, row1, col0, col1"})
            _create_site_position(group)
            altitude = float(altitude_km)
            for name in SKYMAP_VARS:
                group.create_array(name, shape=(0,) + tuple(size), chunks=(1,) + tuple(size), dtype="float32",
                                   fill_value=np.float32("nan"), dimension_names=["skymap", "y", "x"],
                                   attributes=coordinate_attrs(name, altitude if name in ("lat", "lon") else None))
        files = [str(v) for v in group["skymap_file"][:]]
        if sky.file in files:
            i = files.index(sky.file)
            if str(group["skymap_sha256"][i]) != sky.sha256:
                raise StoreError(f"{st.url}: {site} {year} holds {sky.file} with sha256 {group['skymap_sha256'][i]}, "
                                 f"this one is {sky.sha256}. Fix: a re-issued skymap changes the frames; ingest into a "
                                 "new store, or re-ingest the hours that used it after removing it.")
            return i
        i = len(files)
        for name, value in zip(SKYMAP_INFO, (sky.file, sky.sha256, str(sky.valid_from))):
            group[name].resize((i + 1,))
            group[name][i] = value
        group["skymap_crop"].resize((i + 1, 4))
        group["skymap_crop"][i] = [fov.rows.start, fov.rows.stop, fov.cols.start, fov.cols.stop]
        if SITE_POSITION not in group:  # a site-year written before positions were kept
            _create_site_position(group, rows=i)
        group[SITE_POSITION].resize((i + 1, 3))
        group[SITE_POSITION][i] = [sky.site_lat, sky.site_lon, sky.site_alt_m]
        for name in SKYMAP_VARS:
            values = np.asarray(coords[name], np.float32)
            if values.shape != tuple(size):
                raise StoreError(f"{st.url}: {name} of {values.shape} for frames of {tuple(size)}")
            group[name].resize((i + 1,) + tuple(size))
            group[name][i] = values
        return i


SITE_POSITION = "skymap_site_position"  # (skymap, 3): the skymap's own imager position, for magnetic coordinates


def _create_site_position(group, rows: int = 0) -> None:
    group.create_array(SITE_POSITION, shape=(rows, 3), chunks=(64, 3), dtype="float64", fill_value=np.nan,
                       dimension_names=["skymap", "position"],
                       attributes={"long_name": "imager position from the skymap file: geodetic latitude (deg), "
                                                "east longitude (deg), altitude (m)"})


def ensure_embedding(st: Store, site: str, year: int, width: int, dtype: str = "float32") -> None:
    """Create ``embedding`` (slot, feature) (NaN fill) unless it exists with this width and dtype."""
    group = st.year_group(site, year, create=True)
    if "embedding" in group and group["embedding"].shape[1] == width and group["embedding"].dtype == np.dtype(dtype):
        return
    ds = xr.Dataset(
        {"embedding": (("slot", "feature"), np.full((1, width), np.nan, dtype=dtype),
                       {"units": "1", "long_name": "SimCLR encoder representation h (ResNet18 pooled features)",
                        "comment": "the encoder of each hour is its hour_embedding_model fact"})},
        coords={"feature": ("feature", np.arange(width, dtype=np.int32), {"long_name": "feature index", "units": "1"})})
    nan = np.dtype(dtype).type("nan")
    enc = {"embedding": {"chunks": (layout.EMBEDDING_CHUNK, width), "_FillValue": nan, "fill_value": nan}}
    replace = "embedding" in group
    st.ensure_variables(site, year, ds, enc, replace=replace)
    if replace:
        clear_stage(st, site, year, np.arange(layout.hours_in_year(year)), "embedding_model")


def ensure_labels(st: Store, site: str, year: int, class_names: list[str]) -> None:
    """Create ``label`` and ``label_probability`` for these classes unless they exist with them."""
    group = st.year_group(site, year, create=True)
    meanings = " ".join(class_names)
    if "label" in group and group["label"].attrs.get("flag_meanings") == meanings and "label_probability" in group:
        return
    small, k = layout.small_chunk(), len(class_names)
    codes = list(range(k))
    ds = xr.Dataset(
        {"label": ("slot", np.full(1, -1, dtype=np.int8), {
            "long_name": "most probable class of the frame (logistic regression on the SimCLR embedding)", "units": "1",
            "flag_values": codes, "flag_meanings": meanings,
            "comment": "missing (fill) where the hour is not labelled; its classifier is the hour_classifier fact"}),
         "label_probability": (("slot", "class"), np.full((1, k), np.nan, dtype=np.float32), {
            "long_name": "class probability", "units": "1", "valid_range": [0.0, 1.0]})},
        coords={"class": ("class", np.array(class_names, dtype=object), {"long_name": "class name"})})
    enc = {"label": {"chunks": (small,), "_FillValue": -1, "fill_value": -1},
           "label_probability": {"chunks": (small, k), "_FillValue": np.float32("nan"), "fill_value": np.float32("nan")}}
    replace = "label" in group or "label_probability" in group
    st.ensure_variables(site, year, ds, enc, replace=replace)
    if replace:
        clear_stage(st, site, year, np.arange(layout.hours_in_year(year)), "classifier")


def ensure_cluster(st: Store, site: str, year: int, k: int) -> None:
    group = st.year_group(site, year, create=True)
    if "cluster" in group:
        group["cluster"].attrs["valid_range"] = [0, max(k - 1, int(group["cluster"].attrs.get("valid_range", [0, 0])[1]))]
        return
    ds = xr.Dataset({"cluster": ("slot", np.full(1, -1, dtype=np.int16), {
        "long_name": "K-means cluster of the frame's SimCLR embedding", "units": "1", "valid_range": [0, k - 1],
        "comment": "missing (fill) where the hour is not assigned; its centroids are the hour_centroids fact"})})
    st.ensure_variables(site, year, ds, {"cluster": {"chunks": (layout.small_chunk(),), "_FillValue": -1, "fill_value": -1}})


def write_hour(st: Store, site: str, hour, times: np.ndarray, frames: np.ndarray, *, source_file: str = "",
               **facts) -> list[str]:
    """Write and commit one hour in one call (tests, benchmarks, converters); returns the chunk keys."""
    hide_hours(st, site, [hour])
    keys = write_frames(st, site, hour, frames)
    commit_hours(st, site, [HourWrite(hour=np.datetime64(hour, "h"), times=np.asarray(times).astype("datetime64[ms]"),
                                      source_file=source_file, **facts)])
    return keys
