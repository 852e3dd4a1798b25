"""The similarity index on disk or object storage, without pickle.

A folder (local path or fsspec URL, by default the store's sibling ``STORE.index``):

    index.json                 the sidecar, written last: format and version, the encoder's
                               model id, the index parameters, counts, the site table, the
                               class names, the store and range it was built from, and the
                               name, size and sha256 of the two files below
    index-<sha256:16>.faiss    ``faiss.serialize_index`` bytes (FAISS's own format)
    catalog-<sha256:16>.npz    the hour table and row labels (``np.load(allow_pickle=False)``)

The data files are named by their content, so writing them never touches the files the
current sidecar names; replacing the sidecar (atomically: a local temporary file and
``os.replace``, a single PUT on object storage) switches readers to the new index in one
step. Files no sidecar names any more are then deleted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import posixpath
from dataclasses import dataclass

import numpy as np
import pandas as pd

from aurora_pipeline.atomic import atomic_write
from aurora_pipeline.errors import BadInputError, StoreError
from aurora_pipeline.search.catalog import Catalog
from aurora_pipeline.search.index import VectorIndex

FORMAT = "aurora-pipeline similarity index"
INDEX_FORMAT_VERSION = 1
SIDECAR = "index.json"
BUILD_COMMAND = "aurora-pipeline index --store {store}"


@dataclass
class SavedIndex:
    """An index with everything needed to answer queries: vectors, catalog and sidecar facts.

    ``meta`` keys: ``model_id``, ``params``, ``class_names``, ``store``, ``range``
    (``sites``, ``start``, ``end``), ``checkpoint`` (or None), ``preprocess``.
    """

    vectors: VectorIndex
    catalog: Catalog
    meta: dict
    location: str | None = None

    @property
    def model_id(self) -> str:
        return self.meta["model_id"]

    def counts(self) -> dict:
        live, stored = self.catalog.n_vectors, self.vectors.ntotal
        return {"vectors": live, "dead_rows": stored - live, "hours": self.catalog.n_hours,
                "sites": len(self.catalog.sites), "bytes_per_vector_index": self.vectors.bytes_per_vector(),
                "bytes_per_vector_catalog": round(len(self.catalog.to_bytes()) / max(live, 1), 2)}

    def frame_contents(self) -> tuple[pd.DataFrame, np.ndarray]:
        """What the index holds per live frame, sorted by (site, year, slot): the frames and
        their payload (see ``VectorIndex.contents``), plus each frame's label byte. Two
        indexes with equal frame contents answer every query alike."""
        rows, payload = self.vectors.contents()
        site_no, year, slot = self.catalog.frames_of(rows)
        live = site_no >= 0
        frames = pd.DataFrame({"site": np.asarray(self.catalog.sites, dtype=object)[site_no[live]],
                               "year": year[live], "slot": slot[live], "label": self.catalog.labels[rows[live]]})
        order = np.lexsort((frames.slot.to_numpy(), frames.year.to_numpy(), frames.site.to_numpy().astype(str)))
        return frames.iloc[order].reset_index(drop=True), payload[live][order]


def index_location(store: str, index: str | None = None) -> str:
    """``index`` if given, else the store's sibling folder ``<store>.index``."""
    return str(index) if index else str(store).rstrip("/") + ".index"


def _fs(location: str, storage_options: dict | None):
    import fsspec

    return fsspec.core.url_to_fs(location, **(storage_options or {}))


def _is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def _write(fs, path: str, data: bytes) -> None:
    if _is_local(fs):
        atomic_write(path, data)
    else:
        fs.pipe_file(path, data)  # one PUT: readers see the old object or the new one


def save_index(saved: SavedIndex, location: str, storage_options: dict | None = None) -> str:
    """Write ``saved`` to ``location``; returns the sidecar's path."""
    from aurora_pipeline import __version__

    fs, root = _fs(location, storage_options)
    fs.makedirs(root, exist_ok=True)
    files = {}
    for role, suffix, data in (("index", "faiss", saved.vectors.to_bytes()), ("catalog", "npz", saved.catalog.to_bytes())):
        digest = hashlib.sha256(data).hexdigest()
        name = f"{role}-{digest[:16]}.{suffix}"
        path = posixpath.join(root, name)
        if not fs.exists(path):
            _write(fs, path, data)
        files[role] = {"name": name, "size": len(data), "sha256": digest}
    doc = {"format": FORMAT, "format_version": INDEX_FORMAT_VERSION, **saved.meta, "sites": list(saved.catalog.sites),
           "counts": saved.counts(), "files": files, "aurora_pipeline_version": __version__,
           "written": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    sidecar = posixpath.join(root, SIDECAR)
    _write(fs, sidecar, (json.dumps(doc, indent=2, default=str) + "\n").encode())
    keep = {f["name"] for f in files.values()} | {SIDECAR}
    for entry in fs.ls(root, detail=False):
        name = posixpath.basename(entry.rstrip("/"))
        if name not in keep and (name.startswith("index-") or name.startswith("catalog-")):
            fs.rm(entry)
    return sidecar


def index_exists(location: str, storage_options: dict | None = None) -> bool:
    fs, root = _fs(location, storage_options)
    return fs.exists(posixpath.join(root, SIDECAR))


def load_index(location: str, storage_options: dict | None = None, *, store: str | None = None) -> SavedIndex:
    """Read and check the index at ``location``.

    Raises:
        BadInputError: no index there (the message names the command that builds one).
        StoreError: the sidecar or a file is truncated, foreign, of another format
            version or does not match its recorded sha256.
    """
    fs, root = _fs(location, storage_options)
    build = BUILD_COMMAND.format(store=store or "STORE")
    if store and location != index_location(store):
        build += f" --index {location}"
    try:
        doc = json.loads(fs.cat_file(posixpath.join(root, SIDECAR)))
    except FileNotFoundError:
        raise BadInputError(location, "no similarity index here (no index.json).", f"build it with `{build}`.") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise StoreError(f"{location}/{SIDECAR}: not valid JSON ({err}). Fix: rebuild with `{build} --rebuild`.") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StoreError(f"{location}/{SIDECAR}: not an aurora-pipeline similarity index. Fix: point --index at one, "
                         f"or build one with `{build}`.")
    if doc.get("format_version") != INDEX_FORMAT_VERSION:
        raise StoreError(f"{location}: index format version {doc.get('format_version')!r}, this aurora-pipeline reads "
                         f"{INDEX_FORMAT_VERSION}. Fix: rebuild it with `{build} --rebuild`.")
    blobs = {}
    for role in ("index", "catalog"):
        entry = doc["files"][role]
        try:
            data = fs.cat_file(posixpath.join(root, entry["name"]))
        except FileNotFoundError:
            raise StoreError(f"{location}: {entry['name']} (named by {SIDECAR}) is missing. "
                             f"Fix: rebuild with `{build} --rebuild`.") from None
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise StoreError(f"{location}: {entry['name']} ({len(data)} bytes) does not match the sha256 in {SIDECAR}. "
                             f"Fix: rebuild with `{build} --rebuild`.")
        blobs[role] = data
    meta = {k: doc[k] for k in ("model_id", "params", "class_names", "store", "range", "checkpoint", "preprocess")}
    vectors = VectorIndex.from_bytes(blobs["index"], meta["params"])
    catalog = Catalog.from_bytes(blobs["catalog"], doc["sites"], f"{location}/{doc['files']['catalog']['name']}")
    if vectors.ntotal != catalog.next_row:  # live and dead rows
        raise StoreError(f"{location}: the index holds {vectors.ntotal} vectors, its catalog {catalog.next_row} rows. "
                         f"Fix: rebuild with `{build} --rebuild`.")
    return SavedIndex(vectors, catalog, meta, location)
