"""Frames from the store for training: an in-memory uint8 array plus its provenance.

Training draws random batches, so it reads frames many times in random order; from
Zarr that would decompress a 64-frame chunk for every frame drawn. Instead the
frames of the asked sites and times are read once, chunk by chunk, into memory
(128x128 uint8 is 16 KiB a frame: a million frames is 16 GiB). When there are more
than ``max_frames``, whole store chunks are drawn at random (seeded) until the
budget is met, so a sample costs no more reads than it holds.
"""

from __future__ import annotations

import numpy as np
from aurora_pipeline.errors import StoreError
from aurora_pipeline.store.core import StoreLike, open_store
from aurora_pipeline.store.stages import stored_hours
from aurora_pipeline.store import layout
from aurora_pipeline.values import optional_positive_int


def load_training_frames(
    store: StoreLike,
    sites: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    *,
    max_frames: int | None = None,
    seed: int = 0,
    storage_options: dict | None = None,
) -> tuple[np.ndarray, dict]:
    """Return ``(frames uint8 (n, s, s), provenance dict)`` for training.

    Provenance names the store, sites, time range, hours, frame count and sampling.
    Raises ``StoreError`` when nothing matches.
    """
    max_frames = optional_positive_int(max_frames, "max_frames", "give --max-frames 1 or more, or leave it "
                                       "out to train on every frame")
    st = open_store(store, storage_options)
    sites = [s.lower() for s in (sites or st.sites())]
    pieces = []  # (site, year, first slot, stop slot): whole store chunks of the stored frames
    for ref in stored_hours(st, sites, start, end):
        step = st.year_group(ref.site, ref.year)["frames"].chunks[0]
        first, stop = ref.slots.start, ref.slots.stop
        pieces += [(ref.site, ref.year, a, min(a + step, stop)) for a in range(first, stop, step)]
    if not pieces:
        raise StoreError(f"{st.url}: no frames for sites {sites} in [{start}, {end}). Fix: ingest them first.")
    total = sum(b - a for _, _, a, b in pieces)
    sampled = max_frames is not None and total > max_frames
    if sampled:
        order = np.random.default_rng(seed).permutation(len(pieces))
        keep, count = [], 0
        for i in order:
            if count >= max_frames:
                break
            keep.append(pieces[i])
            count += pieces[i][3] - pieces[i][2]
        pieces = sorted(keep)
    out = [st.year_group(site, year)["frames"][a:b] for site, year, a, b in pieces]
    frames = np.concatenate(out)
    if max_frames is not None:
        frames = frames[:max_frames]
    provenance = {
        "store": st.url,
        "sites": sites,
        "start": start,
        "end": end,
        "hours": sorted({f"{s}/{_hour_name(y, a)}" for s, y, a, _ in pieces}),
        "frames": int(len(frames)),
        "frames_available": int(total),
        "sampling": f"random whole chunks, seed {seed}" if sampled else "all frames",
        "preprocess": st.preprocess,  # the store's setting: the encoder expects frames prepared so
    }
    return frames, provenance


def _hour_name(year: int, slot: int) -> str:
    return str(layout.hour_at(year, slot // layout.SLOTS_PER_HOUR))[:13]
