"""Embed the store's frames: Zarr frames in, ``embedding`` (time, feature) out, hour by hour.

Each site-hour group gets an ``embedding`` variable beside ``frames``, on the same
time axis, carrying the encoder's model id. An hour is done when its group attribute
``aurora_embedding_model_id`` names the model, set after the variable is written; a
rerun with the same model skips it, and a different model is refused unless
``overwrite=True`` (two models' embeddings never mix in one variable).

Memory stays flat: one hour (about 1,200 frames) is in memory at a time, and the
next hour is read while the current one is embedded.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from aurora_pipeline.errors import StoreError
from aurora_pipeline.store.zarr_layout import (
    select_hours,
    hour_attrs,
    list_hours,
    list_sites,
    read_hour_variable,
    write_hour_variables,
    zarr_store,
)

MODEL_ATTR = "aurora_embedding_model_id"


@dataclass
class EmbedReport:
    hours_embedded: list[str] = field(default_factory=list)
    hours_skipped: list[str] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0

    def summary(self) -> dict:
        return {
            "hours_embedded": len(self.hours_embedded),
            "hours_skipped": len(self.hours_skipped),
            "frames": self.frames,
            "seconds": round(self.seconds, 2),
            "frames_per_second": round(self.frames / self.seconds, 1) if self.seconds else None,
        }


def hours_to_embed(zs, sites, start, end, model_id: str, overwrite: bool, only: set[str] | None = None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(to do, already done with this model); refuses another model's embeddings unless ``overwrite``.

    ``only`` limits the hours to these ``"site/YYYYMMDDTHH"`` names (the nightly run's new hours).
    """
    todo, done, foreign = [], [], []
    for site in sites:
        for hour in select_hours(list_hours(zs, site), start, end):
            if only is not None and f"{site}/{hour}" not in only:
                continue
            existing = (hour_attrs(zs, site, hour) or {}).get(MODEL_ATTR)
            if existing == model_id and not overwrite:
                done.append((site, hour))
            else:
                if existing and existing != model_id:
                    foreign.append((site, hour, existing))
                todo.append((site, hour))
    if foreign and not overwrite:
        site, hour, other = foreign[0]
        raise StoreError(
            f"{len(foreign)} hour(s) already hold embeddings of another model (e.g. {site}/{hour}: {other}; "
            f"this checkpoint is {model_id}). Fix: pass --overwrite to replace them, or embed into another store."
        )
    return todo, done


def write_embedding(zs, site: str, hour: str, embedding: np.ndarray, model_id: str, dtype: str) -> None:
    """Write ``embedding`` (n, d) beside the hour's frames, then record the model id on the group."""
    ds = xr.Dataset(
        {
            "embedding": (
                ("time", "feature"),
                embedding.astype(dtype),
                {
                    "units": "1",
                    "long_name": "SimCLR encoder representation h (ResNet18 pooled features)",
                    "aurora_model_id": model_id,
                },
            )
        },
        coords={"feature": ("feature", np.arange(embedding.shape[1], dtype=np.int32), {"long_name": "feature index", "units": "1"})},
    )
    chunks = (min(1024, max(len(embedding), 1)), embedding.shape[1])
    write_hour_variables(zs, site, hour, ds, MODEL_ATTR, model_id, {"embedding": {"chunks": chunks}})


def read_hour_frames(zs, site: str, hour: str) -> np.ndarray:
    """The frames (n, s, s) uint8 of one site-hour."""
    return read_hour_variable(zs, site, hour, "frames")


def embed_store(
    store,
    embed_hour,
    model_id: str,
    *,
    sites: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    overwrite: bool = False,
    dtype: str = "float32",
    storage_options: dict | None = None,
    on_hour=None,
    only: set[str] | None = None,
) -> EmbedReport:
    """Embed every complete hour of ``sites`` in ``[start, end)`` not yet embedded by ``model_id``.

    ``embed_hour(frames uint8 (n, s, s)) -> float32 (n, d)`` runs the model (see
    ``aurora_pipeline.embed.model``). Reads of the next hour and writes of the previous one
    overlap the model's work.
    """
    zs = zarr_store(store, storage_options)
    sites = [s.lower() for s in (sites or list_sites(zs))]
    todo, done = hours_to_embed(zs, sites, start, end, model_id, overwrite, only)
    report = EmbedReport(hours_skipped=[f"{s}/{h}" for s, h in done])
    started = time.perf_counter()
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        pending_read = pool.submit(read_hour_frames, zs, *todo[0]) if todo else None
        pending_write = None
        for i, (site, hour) in enumerate(todo):
            frames = pending_read.result()
            pending_read = pool.submit(read_hour_frames, zs, *todo[i + 1]) if i + 1 < len(todo) else None
            embedding = embed_hour(frames)
            if pending_write is not None:
                pending_write.result()
            pending_write = pool.submit(write_embedding, zs, site, hour, embedding, model_id, dtype)
            report.hours_embedded.append(f"{site}/{hour}")
            report.frames += len(frames)
            if on_hour is not None:
                on_hour(site, hour, len(frames))
        if pending_write is not None:
            pending_write.result()
    report.seconds = time.perf_counter() - started
    return report


def embed_with_checkpoint(
    store,
    checkpoint: str,
    *,
    sites=None,
    start=None,
    end=None,
    device: str = "auto",
    overwrite: bool = False,
    dtype: str = "float32",
    batch_size: int = 512,
    dask_address: str | None = None,
    storage_options: dict | None = None,
    on_hour=None,
    only: set[str] | None = None,
) -> dict:
    """Load the encoder of ``checkpoint`` (a path or fsspec URL) and embed the store with it.

    With ``dask_address`` the hours are split by site across the cluster's workers, each
    loading the encoder once (GPU workers when the cluster has them).
    """
    from aurora_pipeline.encoder.checkpoint import load_encoder
    from aurora_pipeline.embed.model import EmbedConfig, embed_frames

    cfg = EmbedConfig(batch_size=batch_size, device=device, dtype="float32")
    if dask_address:
        return _embed_on_dask(store, checkpoint, sites, start, end, device, overwrite, dtype, dask_address, storage_options, only)
    model, meta = load_encoder(checkpoint, device)
    image_size = meta["config"]["image_size"]
    report = embed_store(
        store, lambda frames: embed_frames(model, frames, cfg, image_size), meta["model_id"],
        sites=sites, start=start, end=end, overwrite=overwrite, dtype=dtype, storage_options=storage_options, on_hour=on_hour,
        only=only,
    )
    return {"model_id": meta["model_id"], **report.summary()}


def _embed_on_dask(store, checkpoint, sites, start, end, device, overwrite, dtype, address, storage_options, only) -> dict:
    from aurora_pipeline.dask_cluster import dask_client

    zs = zarr_store(store, storage_options)
    sites = [s.lower() for s in (sites or list_sites(zs))]
    with dask_client(address) as client:
        futures = client.map(
            lambda site: embed_with_checkpoint(store, checkpoint, sites=[site], start=start, end=end, device=device,
                                               overwrite=overwrite, dtype=dtype, storage_options=storage_options, only=only),
            sites, pure=False,
        )
        parts = client.gather(futures)
    return {
        "model_id": parts[0]["model_id"] if parts else None,
        "hours_embedded": sum(p["hours_embedded"] for p in parts),
        "hours_skipped": sum(p["hours_skipped"] for p in parts),
        "frames": sum(p["frames"] for p in parts),
        "seconds": max((p["seconds"] for p in parts), default=0.0),
    }
