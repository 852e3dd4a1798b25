"""The store's embeddings as the later stages read them: which hours have them, and the vectors.

The classifier and the clusters both work on the embeddings ``aurora_pipeline.embed.driver``
wrote; these helpers find the hours embedded by one encoder and read their vectors (no
torch: reading needs none).
"""

from __future__ import annotations

import numpy as np

from aurora_pipeline.errors import StoreError
from aurora_pipeline.store.core import Store
from aurora_pipeline.store.regions import read_rows
from aurora_pipeline.store.stages import HourRef, split_done, stored_hours


def embedded_hours(st: Store, sites, start=None, end=None, only: set | None = None,
                   model: str | None = None) -> tuple[list[HourRef], str]:
    """The stored hours that have an embedding, and the single model id they share.

    With ``model``, only the hours embedded by that model (others are left alone).
    ``only`` limits the hours to these (site, datetime64[h]) pairs.
    Raises StoreError when there are none, or (without ``model``) when hours carry different models.
    """
    refs = [r for r in stored_hours(st, sites, start, end, only) if r.embedding_model]
    models: dict[str, HourRef] = {}
    for r in refs:
        models.setdefault(r.embedding_model, r)
    if model is not None:
        mine = [r for r in refs if r.embedding_model == model]
        if not mine:
            have = ", ".join(f"{m} (e.g. {r.name})" for m, r in models.items()) or "none"
            raise StoreError(f"no hours of sites {list(sites)} are embedded by encoder {model} (embedded by: {have}). "
                             "Fix: run `aurora-pipeline embed` with that encoder's checkpoint, or refit on this store.")
        return mine, model
    if not refs:
        raise StoreError(f"no embedded hours for sites {list(sites)}. Fix: run `aurora-pipeline embed` first.")
    if len(models) > 1:
        listed = ", ".join(f"{m} (e.g. {r.name})" for m, r in models.items())
        raise StoreError(f"the store's hours were embedded by different encoders: {listed}. "
                         "Fix: re-embed with one checkpoint (`aurora-pipeline embed --overwrite`).")
    return refs, next(iter(models))


def read_hour_embedding(st: Store, ref: HourRef) -> np.ndarray:
    """One hour's embeddings (n, d) float32."""
    return np.asarray(st.year_group(ref.site, ref.year)["embedding"][ref.slots], dtype=np.float32)


def read_embeddings(st: Store, refs: list[HourRef]) -> dict[str, tuple[np.ndarray, np.ndarray, list[tuple[str, int, int]]]]:
    """Per site: (times (n,) datetime64[ms], embeddings (n, d) float32, [(site-hour name, first row, stop row)])."""
    out: dict[str, list] = {}
    for ref in refs:
        t = read_rows(st.year_group(ref.site, ref.year), "time", np.arange(ref.slots.start, ref.slots.stop)).astype("datetime64[ms]")
        x = read_hour_embedding(st, ref)
        times, xs, spans = out.setdefault(ref.site, [[], [], []])
        first = sum(len(a) for a in times)
        times.append(t)
        xs.append(x)
        spans.append((ref.name, first, first + len(t)))
    return {s: (np.concatenate(t), np.concatenate(x), spans) for s, (t, x, spans) in out.items()}


def pending_hours(st: Store, sites, start, end, only, *, encoder_id: str, fact: str, value: str, made_by: str,
                  fix: str) -> tuple[list[HourRef], list[HourRef]]:
    """(hours embedded by ``encoder_id`` whose ``fact`` is not yet ``value``, hours already done).

    A store embedded by another encoder is refused with what the model was ``made_by`` and the ``fix``.
    """
    sites = [s.lower() for s in (sites or st.sites())]
    try:
        refs, _ = embedded_hours(st, sites, start, end, only, model=encoder_id)
    except StoreError as err:
        raise StoreError(f"{made_by}: {err} Fix: {fix}.") from None
    return split_done(refs, fact, value)
