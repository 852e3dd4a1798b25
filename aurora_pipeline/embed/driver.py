"""Embed the store's frames: ``frames`` in, ``embedding`` (slot, feature) out, hour by hour.

Each hour's embeddings are region-written into its own chunks beside its frames; the
hour's ``embedding_model`` fact names the encoder once they are written (see
``aurora_pipeline.store.stages``). A rerun with the same model skips the hour; another
model's embeddings are refused unless ``overwrite=True`` (the nightly run passes it for
its window, so a new deployment model re-embeds what it labels). Re-embedding an hour
clears its labels and clusters, which derive from the embeddings. The checkpoint's
location is recorded in the store (root attribute ``aurora_encoder_checkpoints``, by model
id), so the similarity index can embed image queries with it.

Memory stays flat: one hour (about 1,200 frames) is in memory at a time, and the next
hour is read while the current one is embedded.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field


from aurora_pipeline.embed.config import EmbedConfig
from aurora_pipeline.errors import StoreError
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.store.core import Store, StoreLike, open_store
from aurora_pipeline.store.stages import run_stage, split_done, stored_hours
from aurora_pipeline.store.writer import ensure_embedding, write_embedding

FACT = "embedding_model"


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


def hours_to_embed(st: Store, sites, start, end, model_id: str, overwrite: bool, only=None):
    """(to do, already done with this model); refuses another model's embeddings unless ``overwrite``."""
    todo, done = split_done(stored_hours(st, sites, start, end, only), FACT, model_id)
    foreign = [r for r in todo if r.embedding_model]
    if foreign and not overwrite:
        r = foreign[0]
        raise StoreError(
            f"{len(foreign)} hour(s) already hold embeddings of another model (e.g. {r.name}: {r.embedding_model}; "
            f"this checkpoint is {model_id}). Fix: pass --overwrite to replace them, or embed into another store.")
    return todo, done


def check_store_setting(st: Store, sidecar: dict, checkpoint: str) -> None:
    """Refuse (StoreError, one line naming both settings) a store whose preprocessing is not the
    one the checkpoint's encoder expects (recorded by ``import-encoder`` and by ``pretrain``).
    A checkpoint that records no setting, or a store with nothing ingested, is not checked."""
    # torch (encoder.checkpoint): off this module's import (nightly and flows.embed import it without torch)
    from aurora_pipeline.encoder.checkpoint import encoder_preprocess

    want, have = encoder_preprocess(sidecar), st.preprocess
    if want is None or have is None:
        return
    want, have = PreprocessConfig(**want).setting(), PreprocessConfig(**have).setting()
    if want == have:
        return
    keys = [k for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)]
    shown = lambda s: ", ".join(f"{k}={s.get(k)!r}" for k in keys)  # noqa: E731
    raise StoreError(
        f"{st.url}: the store's frames are preprocessed with {shown(have)}, but the encoder {sidecar.get('model_id')} "
        f"({checkpoint}) expects {shown(want)}. Fix: ingest into a new store with `aurora-pipeline ingest "
        f"--checkpoint {checkpoint}` and embed that one, or use an encoder trained on this store's frames.")


def embed_store(
    store: StoreLike,
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
    only: set | None = None,
) -> EmbedReport:
    """Embed every stored hour of ``sites`` in ``[start, end)`` not yet embedded by ``model_id``.

    ``embed_hour(frames uint8 (n, s, s)) -> float32 (n, d)`` runs the model (see
    ``aurora_pipeline.embed.model``). ``only``: (site, datetime64[h]) pairs to limit to.
    """
    st = open_store(store, storage_options, mode="a")
    sites = [s.lower() for s in (sites or st.sites())]
    todo, done = hours_to_embed(st, sites, start, end, model_id, overwrite, only)
    report = EmbedReport(hours_skipped=[r.name for r in done])
    started = time.perf_counter()
    ready: set[tuple[str, int]] = set()

    def read(ref):
        return st.year_group(ref.site, ref.year)["frames"][ref.slots]

    def write(ref, embedding):
        if (ref.site, ref.year) not in ready:
            ensure_embedding(st, ref.site, ref.year, embedding.shape[1], dtype)
            ready.add((ref.site, ref.year))
        write_embedding(st, ref.site, ref.year, ref.hour_of_year, embedding.astype(dtype))

    def progress(ref):
        report.hours_embedded.append(ref.name)
        if on_hour is not None:
            on_hour(ref.site, ref.name, ref.frames)

    report.frames = run_stage(st, todo, FACT, model_id, read=read, compute=lambda ref, frames: embed_hour(frames),
                              write=write, on_hour=progress)
    report.seconds = time.perf_counter() - started
    return report


def embed_with_checkpoint(
    store: StoreLike,
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
    only: set | None = None,
    mixed_precision: bool = EmbedConfig.mixed_precision,
) -> dict:
    """Load the encoder of ``checkpoint`` (a path or fsspec URL) and embed the store with it.

    ``mixed_precision``: bf16 autocast where the device does bf16 natively (embeddings within
    about 1% of float32's); False for float32 throughout.

    A store whose preprocessing setting is not the encoder's is refused (``check_store_setting``).

    With ``dask_address`` the hours are split by site across the cluster's workers, each
    loading the encoder once (GPU workers when the cluster has them).
    """
    # torch: only when embedding
    from aurora_pipeline.embed.model import embed_frames
    from aurora_pipeline.encoder.checkpoint import load_encoder, read_verified, resolve_checkpoint

    cfg = EmbedConfig(batch_size=batch_size, device=device, mixed_precision=mixed_precision, dtype="float32")
    sidecar, _ = read_verified(resolve_checkpoint(checkpoint), ())
    st = open_store(store, storage_options, mode="r+")
    check_store_setting(st, sidecar, str(checkpoint))
    if dask_address:
        return _embed_on_dask(st, checkpoint, sites, start, end, device, overwrite, dtype, dask_address, storage_options, only,
                              mixed_precision)
    model, meta = load_encoder(checkpoint, device)
    image_size = meta["config"]["image_size"]
    report = embed_store(
        st, lambda frames: embed_frames(model, frames, cfg, image_size), meta["model_id"],
        sites=sites, start=start, end=end, overwrite=overwrite, dtype=dtype, storage_options=storage_options,
        on_hour=on_hour, only=only,
    )
    location = checkpoint if "://" in str(checkpoint) else os.path.abspath(checkpoint)
    st.record_checkpoint(meta["model_id"], str(location))  # for the index
    return {"model_id": meta["model_id"], **report.summary()}


def _embed_on_dask(st: Store, checkpoint, sites, start, end, device, overwrite, dtype, address, storage_options,
                   only, mixed_precision) -> dict:
    # dask/distributed: only when embedding on a Dask cluster
    from aurora_pipeline.dask_cluster import dask_client

    sites = [s.lower() for s in (sites or st.sites())]
    url = st.local_path or st.url
    with dask_client(address) as client:
        futures = client.map(
            lambda site: embed_with_checkpoint(url, checkpoint, sites=[site], start=start, end=end, device=device,
                                               overwrite=overwrite, dtype=dtype, storage_options=storage_options, only=only,
                                               mixed_precision=mixed_precision),
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
