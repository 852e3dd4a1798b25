"""Small saved models (the classifier, the K-means centroids) as JSON + npz, never pickle.

``<stem>.npz`` holds the arrays (loaded with ``allow_pickle=False``) and ``<stem>.json``
the metadata, a format name and version, and a content hash of both, so that loading
runs no code and a truncated, foreign or altered pair is refused with a clear message.
Both files are written atomically, the JSON last.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aurora_pipeline.atomic import atomic_file, atomic_write
from aurora_pipeline.errors import BadInputError, CheckpointError
from aurora_pipeline import __version__

SAVED_MODEL_FORMAT_VERSION = 1


def check_ids(json_path: Path, meta: dict, id_key: str, computed_id: str, encoder_id: str,
               expected_encoder_id: str | None, refit_fix: str) -> None:
    if meta.get(id_key) != computed_id:
        raise CheckpointError(
            f"{json_path}: content does not match its {id_key} (json says {meta.get(id_key)!r}, the arrays "
            f"hash to {computed_id!r}); the .json and .npz are from different saves or were edited. "
            f"Fix: save again, or restore both files together.")
    if expected_encoder_id is not None and encoder_id != expected_encoder_id:
        raise CheckpointError(
            f"{json_path}: {meta.get(id_key)} was fitted on encoder {encoder_id}'s embeddings, the store's "
            f"embedding was made by {expected_encoder_id}. Fix: {refit_fix}.")


def content_id(prefix: str, meta: dict, arrays: dict[str, np.ndarray]) -> str:
    """``prefix-`` + 16 hex digits of a sha256 over canonical JSON of meta and every array's
    name, dtype, shape and bytes (as C-contiguous float64)."""
    h = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name], dtype=np.float64)
        h.update(f"|{name}|{a.shape}|".encode())
        h.update(a.tobytes())
    return f"{prefix}-{h.hexdigest()[:16]}"


def write_artifact(out_dir: Path, stem: str, fmt: str, meta: dict, arrays: dict[str, np.ndarray],
                    id_key: str, overwrite: bool) -> Path:
    """Write ``<stem>.npz`` (arrays, no pickle) then ``<stem>.json`` (meta + format, versions,
    time), each with ``aurora_pipeline.atomic``. The json is written last: a crash in
    between leaves a pair whose hash does not match, which loading reports."""
    json_path, npz_path = out_dir / f"{stem}.json", out_dir / f"{stem}.npz"
    if json_path.exists() and not overwrite:
        try:
            old_id = json.loads(json_path.read_text()).get(id_key)
        except (OSError, ValueError, AttributeError):
            old_id = None
        if old_id != meta[id_key]:
            raise BadInputError(str(json_path), f"already holds a different {stem} ({old_id})",
                                "choose another directory or pass overwrite=True")
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(npz_path) as fh:
        np.savez(fh, **{k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()})
    doc = {"format": fmt, "format_version": SAVED_MODEL_FORMAT_VERSION, **meta, "arrays_file": npz_path.name,
           "aurora_pipeline_version": __version__,
           "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    text = json.dumps(doc, indent=2, default=_json_default) + "\n"
    atomic_write(json_path, text)
    return json_path


def _json_default(value: Any):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


class SavedModel:
    """The base of the content-hashed saved models (the classifier, the K-means centroids).

    A subclass is a frozen dataclass with an ``encoder_id`` field and an id field named
    ``ID_FIELD`` (``field(init=False)``); it says which arrays it saves (``_arrays``) and
    which metadata its id covers (``_hashed_meta``). The id, ``ID_PREFIX-`` + 16 hex digits
    of their hash, is computed when the object is made, so equal content has equal ids.
    """

    ID_PREFIX: ClassVar[str]  # e.g. "clf"
    ID_FIELD: ClassVar[str]   # e.g. "classifier_id"
    STEM: ClassVar[str]       # the files are STEM.json and STEM.npz
    FORMAT: ClassVar[str]     # the JSON's "format"

    def __post_init__(self) -> None:
        object.__setattr__(self, self.ID_FIELD, content_id(self.ID_PREFIX, self._hashed_meta(), self._arrays()))

    def _arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _hashed_meta(self) -> dict:
        raise NotImplementedError

    def write(self, out_dir: str | os.PathLike, extra_meta: dict, overwrite: bool) -> Path:
        """Save as ``out_dir/STEM.json`` + ``.npz`` (``write_artifact``); ``extra_meta`` is saved, not hashed."""
        meta = {self.ID_FIELD: getattr(self, self.ID_FIELD), **self._hashed_meta(), **extra_meta}
        return write_artifact(Path(out_dir), self.STEM, self.FORMAT, meta, self._arrays(), self.ID_FIELD, overwrite)

    def check_loaded(self, json_path: Path, meta: dict, expected_encoder_id: str | None, refit_fix: str) -> None:
        """Refuse a loaded model whose content is not its saved id, or that another encoder's embeddings made."""
        check_ids(json_path, meta, self.ID_FIELD, getattr(self, self.ID_FIELD), getattr(self, "encoder_id"),
                  expected_encoder_id, refit_fix)


def read_artifact(path: Path, stem: str, fmt: str, keys: tuple[str, ...]) -> tuple[dict, dict, Path]:
    """Read and sanity-check ``<stem>.json`` and ``<stem>.npz``; CheckpointError on any problem."""
    if path.is_dir():
        path = path / f"{stem}.json"
    json_path, npz_path = path.with_suffix(".json"), path.with_suffix(".npz")
    fix = f"point to the directory holding {stem}.json and {stem}.npz as written by aurora-pipeline, or save again"
    try:
        meta = json.loads(json_path.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"{json_path}: no such file. Fix: {fix}.") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{json_path}: unreadable or truncated JSON ({exc}). Fix: {fix}.") from exc
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{json_path}: not a {fmt} file (format {found!r}). Fix: {fix}.")
    if meta.get("format_version") != SAVED_MODEL_FORMAT_VERSION:
        raise CheckpointError(f"{json_path}: format_version {meta.get('format_version')!r}, this software reads "
                              f"{SAVED_MODEL_FORMAT_VERSION}. Fix: use the aurora-pipeline version that wrote it, or save again.")
    try:
        # our own handle: np.load(path) leaks its file when the zip is broken
        with open(npz_path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            arrays = {k: np.asarray(npz[k], dtype=np.float64) for k in keys}
    except FileNotFoundError as exc:
        raise CheckpointError(f"{npz_path}: no such file (it must sit next to {json_path.name}). Fix: {fix}.") from exc
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{npz_path}: truncated or foreign array file ({exc}). Fix: {fix}.") from exc
    return meta, arrays, json_path
