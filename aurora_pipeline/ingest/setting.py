"""Which preprocessing setting a store's frames get: the one place it is decided.

A store holds exactly one preprocessing setting (``PreprocessConfig``), recorded by its
first ingest (``Store.set_preprocess``). Every caller that needs "the setting for this
store" (``ingest``, the `ingest-archive` and `label-archive` flows, a query image that
must be preprocessed like the stored frames) asks :func:`resolve_preprocess`:

- an existing store: its own setting, with the values the caller asked for put in
  (another value than the store's is then refused by ``Store.set_preprocess``, naming it);
- a new store (or none): the paper's defaults, with the values asked for; giving
  ``skymaps`` picks the skymap's elevation field of view (``fov="elevation"``).

``None`` for a value means "not asked": the store's own value, or the default.

    >>> resolve_preprocess("store.zarr", image_size=64).image_size
    64
"""

from __future__ import annotations

import dataclasses

from aurora_pipeline.errors import BadInputError, CheckpointError, NoStoreError
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.store.core import Store, StoreLike

__all__ = ["encoder_config", "ingest_setting", "resolve_preprocess"]


def resolve_preprocess(
    store: StoreLike | None = None,
    *,
    image_size: int | None = None,
    skymaps: str | None = None,
    min_elevation: float | None = None,
    map_altitude_km: float | None = None,
    checkpoint: str | None = None,
    storage_options: dict | None = None,
) -> PreprocessConfig:
    """The preprocessing setting for ``store`` (path, URL, ``Store`` or None for a new one).

    Args:
        store: the store; a path where no store exists yet counts as a new store.
        image_size: side of the stored frames in pixels (None: the store's, else 128).
        skymaps: a skymap tree; for a new store it selects ``fov="elevation"``. An
            existing store keeps its own field of view (``ingest`` refuses skymaps for a
            store made with the inscribed circle, and the reverse).
        min_elevation, map_altitude_km: the elevation cut (degrees) and the altitude (km)
            of the stored lat/lon, with skymaps (None: the store's, else 13.5 and 110).
        checkpoint: an encoder checkpoint; a NEW store asked for no image size and no
            skymaps gets the setting the checkpoint records (its frames' framing and size,
            e.g. the imported Aurora-FM's OATH framing at 224 px), so the encoder can embed it.

    Raises:
        BadInputError: a value ``PreprocessConfig`` refuses (e.g. ``image_size=0``).
        StoreError: ``store`` exists but cannot be read as a store (another format, ...).
    """
    setting = _stored_setting(store, storage_options)
    if setting is None:
        encoder = _encoder_setting(checkpoint, storage_options) if image_size is None and not skymaps else None
        base = encoder or (PreprocessConfig(fov="elevation") if skymaps else PreprocessConfig())  # default: OATH's
    else:
        base = PreprocessConfig(**setting)
    asked = {"image_size": image_size, "min_elevation": min_elevation, "map_altitude_km": map_altitude_km}
    return dataclasses.replace(base, **{k: v for k, v in asked.items() if v is not None})


def _stored_setting(store, storage_options: dict | None) -> dict | None:
    if store is None:
        return None
    try:
        return Store.open(store, storage_options).preprocess
    except NoStoreError:  # a new store: nothing recorded yet
        return None


def _encoder_setting(checkpoint: str | None, storage_options: dict | None) -> PreprocessConfig | None:
    """The setting ``checkpoint`` records for its frames, or None (no checkpoint, or one from before
    checkpoints recorded it: the caller's default applies, and ``embed`` says if they disagree)."""
    if not checkpoint:
        return None
    try:
        return encoder_config(checkpoint, storage_options)
    except CheckpointError:
        return None


def encoder_config(checkpoint: str, storage_options: dict | None = None) -> PreprocessConfig:
    """The preprocessing setting an encoder checkpoint expects its frames in (``ingest --checkpoint``).

    Raises:
        CheckpointError: not a checkpoint, or one that records no setting (trained before
            checkpoints recorded it).
    """
    # lazy: the checkpoint module imports torch, which an ingest without --checkpoint never needs
    from aurora_pipeline.encoder.checkpoint import encoder_preprocess, read_verified, resolve_checkpoint

    where = resolve_checkpoint(checkpoint, storage_options)
    sidecar, _ = read_verified(where, (), storage_options)
    setting = encoder_preprocess(sidecar)
    if setting is None:
        raise CheckpointError(f"{where}: records no preprocessing setting (it predates checkpoints recording "
                              "the setting of their frames). Fix: ingest with --image-size "
                              f"{sidecar.get('config', {}).get('image_size')} instead of --checkpoint, or retrain.")
    return PreprocessConfig(**setting)


def ingest_setting(store: StoreLike, *, image_size: int | None = None, skymaps: str | None = None,
                   min_elevation: float | None = None, map_altitude_km: float | None = None,
                   checkpoint: str | None = None) -> PreprocessConfig:
    """The setting an ``ingest`` asked for: with ``checkpoint`` the encoder's (size and framing),
    which ``image_size`` and ``skymaps`` may only repeat; else :func:`resolve_preprocess`
    (the elevation values count only with ``skymaps``).

    Raises:
        BadInputError: ``image_size`` or ``skymaps`` disagree with the encoder's setting.
        CheckpointError: the checkpoint records no setting.
    """
    if checkpoint:
        cfg = encoder_config(checkpoint)
        size_differs = image_size is not None and image_size != cfg.image_size
        if size_differs or (skymaps and cfg.fov != "elevation"):
            asked = f"--image-size {image_size}" if size_differs else "--skymaps"
            raise BadInputError(asked, f"disagrees with the encoder's preprocessing (fov={cfg.fov}, image_size="
                                f"{cfg.image_size}) that --checkpoint {checkpoint} sets",
                                f"leave {asked.split()[0]} out: the store gets the encoder's setting")
        return cfg
    elevation = {"min_elevation": min_elevation, "map_altitude_km": map_altitude_km} if skymaps else {}
    return resolve_preprocess(store, image_size=image_size, skymaps=skymaps, **elevation)
