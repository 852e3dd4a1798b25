"""The per-hour facts of a site-year: what each hour holds and which stage wrote it.

One array per fact along the ``hour`` dimension (one chunk per site-year), named
``hour_<fact>``. Only the run's driver writes them, under the site's lock, after the
parallel region writes of those hours succeeded; ``hour_frames`` is written last, and an
hour is visible to readers only while it is above 0. So a run killed at any point leaves
nothing half-visible, and the next run, comparing the facts with what it is asked to do,
redoes exactly what is missing.

=====================  =======  ================================================================
fact                   type     meaning ("" or 0 = not done)
=====================  =======  ================================================================
frames                 int32    frames stored in the hour (slots h*C .. h*C+frames-1)
source_file            str      archive file name            source_url    str  where it was read
source_sha256          str      sha256 of the file           source_size   int64 bytes
source_layout          str      CDF layout (legacy / v2024)  ingested_at   str  UTC time of the write
skymap                 str      skymap file used for the field of view ("" = inscribed circle)
embedding_model        str      encoder model id of the hour's embeddings
classifier             str      classifier id of the hour's labels
centroids              str      centroids id of the hour's clusters
=====================  =======  ================================================================
"""

from __future__ import annotations

import asyncio

import numpy as np
import xarray as xr
from zarr.core.sync import sync

from aurora_pipeline.store import layout

FACTS: dict[str, tuple[str, object, dict]] = {
    "frames": ("int32", 0, {"long_name": "frames stored in the hour (0: hour not stored)", "units": "1"}),
    "source_file": ("str", "", {"long_name": "archive file the hour was ingested from"}),
    "source_url": ("str", "", {"long_name": "where the archive file was read"}),
    "source_sha256": ("str", "", {"long_name": "sha256 of the archive file"}),
    "source_size": ("int64", 0, {"long_name": "size of the archive file", "units": "bytes"}),
    "source_layout": ("str", "", {"long_name": "CDF layout of the archive file"}),
    "ingested_at": ("str", "", {"long_name": "UTC time the hour was written"}),
    "skymap": ("str", "", {"long_name": "skymap file used for the field of view (empty: inscribed circle)"}),
    "embedding_model": ("str", "", {"long_name": "encoder model id of the hour's embeddings"}),
    "classifier": ("str", "", {"long_name": "classifier id of the hour's labels"}),
    "centroids": ("str", "", {"long_name": "K-means centroids id of the hour's clusters"}),
}
STAGE_FACTS = ("embedding_model", "classifier", "centroids")  # derived from the frames: cleared when they change


def facts_template(year: int) -> xr.Dataset:
    n = layout.hours_in_year(year)
    data = {}
    for name, (dtype, fill, attrs) in FACTS.items():
        values = np.full(n, fill, dtype=object if dtype == "str" else dtype)
        data[f"hour_{name}"] = ("hour", values, attrs)
    return xr.Dataset(data)


def read_facts(group, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The facts of a site-year group: name -> (hours_in_year,) array (strings as ``str``).

    The arrays are fetched concurrently (one object each): the cost is one round trip, not one per fact.
    """
    names = tuple(names or FACTS)
    arrays = [group[f"hour_{name}"].async_array for name in names]
    async def fetch_all():
        return await asyncio.gather(*(a.getitem(slice(None)) for a in arrays))

    values = sync(fetch_all())
    return {name: (v.astype(object) if FACTS[name][0] == "str" else np.asarray(v)) for name, v in zip(names, values)}


def write_facts(group, hours: np.ndarray, updates: dict[str, np.ndarray | list | object]) -> None:
    """Set facts of ``hours`` (indices in the year); call under the site's lock.

    ``frames`` is written last, so an hour becomes visible only once everything else is in place.
    """
    hours = np.asarray(hours, dtype=np.int64)
    if not len(hours):
        return
    unknown = sorted(name for name in updates if name not in FACTS)
    if unknown:
        raise KeyError(f"unknown per-hour fact {unknown[0]!r}")
    current = read_facts(group, tuple(updates))  # every fact read concurrently, as in read_facts
    for name, values in updates.items():
        dtype = FACTS[name][0]
        current[name] = np.array(current[name])  # writable
        current[name][hours] = np.broadcast_to(np.asarray(values, dtype=object if dtype == "str" else dtype),
                                               hours.shape)
    _store_facts(group, {name: v for name, v in current.items() if name != "frames"})
    if "frames" in current:
        _store_facts(group, {"frames": current["frames"]})  # last: it makes the hours visible


def _store_facts(group, values: dict[str, np.ndarray]) -> None:
    """Write whole fact arrays (name -> (hours_in_year,)), concurrently: one round trip, not one per fact."""
    arrays = {name: group[f"hour_{name}"].async_array for name in values}

    async def store_all():
        await asyncio.gather(*(arrays[name].setitem(slice(None), v) for name, v in values.items()))

    sync(store_all())
