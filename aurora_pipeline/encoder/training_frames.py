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
import zarr

from aurora_pipeline.errors import StoreError
from aurora_pipeline.store.zarr_layout import select_hours, hour_group, list_hours, list_sites, zarr_store


def load_training_frames(
    store,
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
    zs = zarr_store(store, storage_options, read_only=True)
    sites = [s.lower() for s in (sites or list_sites(zs))]
    pieces = []  # (site, hour, start, stop) ranges of whole chunks
    for site in sites:
        for hour in select_hours(list_hours(zs, site), start, end):
            arr = zarr.open_array(zs, path=f"{hour_group(site, hour)}/frames", mode="r")
            step = arr.chunks[0]
            pieces += [(site, hour, i, min(i + step, arr.shape[0])) for i in range(0, arr.shape[0], step)]
    if not pieces:
        raise StoreError(f"{store}: no frames for sites {sites} in [{start}, {end}). Fix: ingest them first.")
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
    arrays = {}
    out = []
    for site, hour, a, b in pieces:
        key = (site, hour)
        if key not in arrays:
            arrays[key] = zarr.open_array(zs, path=f"{hour_group(site, hour)}/frames", mode="r")
        out.append(arrays[key][a:b])
    frames = np.concatenate(out)
    if max_frames is not None:
        frames = frames[:max_frames]
    provenance = {
        "store": str(store),
        "sites": sites,
        "start": start,
        "end": end,
        "hours": sorted({f"{s}/{h}" for s, h, _, _ in pieces}),
        "frames": int(len(frames)),
        "frames_available": int(total),
        "sampling": f"random whole chunks, seed {seed}" if sampled else "all frames",
    }
    return frames, provenance
