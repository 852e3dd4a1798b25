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
step. Then the files the replaced sidecar named, and the new one does not, are deleted:
nothing else in the folder is ever deleted (a user's own ``index-notes.txt`` stays), and a
folder that is neither empty nor an index of ours is refused before anything is written.
Data files left by a run killed before its sidecar was written are named by no sidecar;
they are kept, and reused when a later run writes the same contents.

The sidecar is replaced under the store's lock ``similarity-index`` (as every writer of
the store writes under a lock, see ``aurora_pipeline.store.locks``), and only if it is
still the one the run started from: two library callers writing one index at once never
delete each other's files, and the second to finish is told the index was replaced under
it (``IndexChangedError``) instead of silently undoing the first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import posixpath
import re
from dataclasses import dataclass

import fsspec
import numpy as np
import pandas as pd

from aurora_pipeline import __version__
from aurora_pipeline.atomic import atomic_write
from aurora_pipeline.errors import BadInputError, StoreError
from aurora_pipeline.store.core import StoreLike
from aurora_pipeline.search.catalog import Catalog
from aurora_pipeline.search.index import VectorIndex
from aurora_pipeline.store.locks import store_lock

FORMAT = "aurora-pipeline similarity index"
INDEX_FORMAT_VERSION = 1
SIDECAR = "index.json"
BUILD_COMMAND = "aurora-pipeline index --store {store}"
LOCK = "similarity-index"  # the store lock the sidecar is replaced under
_DATA_FILE = re.compile(r"(index-[0-9a-f]{16}\.faiss|catalog-[0-9a-f]{16}\.npz)")  # what save_index writes


class IndexChangedError(StoreError):
    """The index was replaced by another run between this run's start and its commit."""


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
    sidecar_sha256: str | None = None  # of the sidecar this was read from (None: a new index)

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
    return fsspec.core.url_to_fs(location, **(storage_options or {}))


def _is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def _write(fs, path: str, data: bytes) -> None:
    if _is_local(fs):
        atomic_write(path, data)
    else:
        fs.pipe_file(path, data)  # one PUT: readers see the old object or the new one


def save_index(saved: SavedIndex, location: str, storage_options: dict | None = None, *, store: StoreLike | None = None,
               replaces: str | None | bool = True) -> str:
    """Write ``saved`` to ``location``; returns the sidecar's path.

    Args:
        store: the ``Store`` indexed; the sidecar is replaced under its lock ``similarity-index``.
        replaces: the sha256 of the sidecar this index was made from (None: there was none);
            ``True`` replaces whatever is there.

    Raises:
        BadInputError: ``location`` is neither empty nor an index of ours.
        IndexChangedError: the sidecar is no longer the one ``replaces`` names (another run
            replaced it meanwhile); the data files this call wrote are removed again.
    """
    fs, root = _fs(location, storage_options)
    check_index_folder(location, storage_options)
    fs.makedirs(root, exist_ok=True)
    files, created = {}, []
    for role, suffix, data in (("index", "faiss", saved.vectors.to_bytes()), ("catalog", "npz", saved.catalog.to_bytes())):
        digest = hashlib.sha256(data).hexdigest()
        name = f"{role}-{digest[:16]}.{suffix}"
        path = posixpath.join(root, name)
        if not fs.exists(path):
            _write(fs, path, data)
            created.append(name)
        files[role] = {"name": name, "size": len(data), "sha256": digest}
    doc = {"format": FORMAT, "format_version": INDEX_FORMAT_VERSION, **saved.meta, "sites": list(saved.catalog.sites),
           "counts": saved.counts(), "files": files, "aurora_pipeline_version": __version__,
           "written": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    body = (json.dumps(doc, indent=2, default=str) + "\n").encode()
    sidecar = posixpath.join(root, SIDECAR)
    with store_lock(store, LOCK) if store is not None else contextlib.nullcontext():
        current = _read_sidecar(fs, root)
        named_now = _named_files(current)
        if replaces is not True and _sha256(current) != replaces:
            for name in created:
                if name not in named_now:
                    fs.rm(posixpath.join(root, name))
            store_url = getattr(store, "url", None) or saved.meta.get("store") or "STORE"
            raise IndexChangedError(
                f"{location}: the index was replaced by another run while this one ran; its index is kept and "
                f"this run's result dropped. Fix: run `{BUILD_COMMAND.format(store=store_url)}` again once the "
                "other run is done (it updates that index).")
        _write(fs, sidecar, body)
        keep = {f["name"] for f in files.values()}
        for name in named_now - keep:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(posixpath.join(root, name))
    saved.sidecar_sha256 = _sha256(body)
    saved.location = location
    return sidecar


def _sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _read_sidecar(fs, root: str) -> bytes | None:
    try:
        return fs.cat_file(posixpath.join(root, SIDECAR))
    except FileNotFoundError:
        return None


def _named_files(sidecar: bytes | None) -> set[str]:
    """The data files a sidecar of ours names (only those are ever deleted)."""
    try:
        doc = json.loads(sidecar) if sidecar else {}
    except (ValueError, UnicodeDecodeError):
        return set()
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("files"), dict):
        return set()
    names = {str(f.get("name", "")) for f in doc["files"].values() if isinstance(f, dict)}
    return {n for n in names if _DATA_FILE.fullmatch(n)}  # a plain file name, never a path elsewhere


def sidecar_sha256(location: str, storage_options: dict | None = None) -> str | None:
    """The sha256 of the sidecar at ``location`` now (None: no index there)."""
    fs, root = _fs(location, storage_options)
    return _sha256(_read_sidecar(fs, root))


def check_index_folder(location: str, storage_options: dict | None = None) -> None:
    """Refuse a folder for an index that is neither empty (or absent) nor an index of ours.

    Files a killed run of ours left (content-named data files, no sidecar) do not count.

    Raises:
        BadInputError: naming the folder and the fix.
    """
    fs, root = _fs(location, storage_options)
    if not fs.exists(root):
        return
    if not fs.isdir(root):
        raise BadInputError(location, "is a file, not a folder for a similarity index.",
                            "pass --index a new or empty folder, or leave it out (STORE.index beside the store).")
    sidecar = _read_sidecar(fs, root)
    if sidecar is not None:
        try:
            ours = json.loads(sidecar).get("format") == FORMAT
        except (ValueError, UnicodeDecodeError, AttributeError):
            ours = False
        if ours:
            return
    others = sorted(posixpath.basename(e.rstrip("/")) for e in fs.ls(root, detail=False))
    others = [n for n in others if not _DATA_FILE.fullmatch(n)]
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise BadInputError(location, f"is neither empty nor a similarity index of aurora-pipeline (it holds {shown}); "
                            "nothing there is touched.", "pass --index a new or empty folder, or leave it out "
                            "(STORE.index beside the store).")


def check_index_outside_store(location: str, store: StoreLike) -> None:
    """Refuse an index location equal to the store's root or inside it (``store``: a ``Store``).

    Raises:
        BadInputError: naming both and the fix.
    """
    fs, root = _fs(location, store.storage_options)
    if _is_local(fs) != (store.local_path is not None):
        return
    a = os.path.realpath(store.local_path) if store.local_path else store.fs_root.rstrip("/")
    b = os.path.realpath(root) if _is_local(fs) else root.rstrip("/")
    sep = os.sep if _is_local(fs) else "/"
    if b == a or b.startswith(a + sep):
        raise BadInputError(location, f"is inside the store {store.url}: the index would be written among its Zarr "
                            "objects.", "leave --index out (STORE.index beside the store), or pass a folder outside "
                            "the store.")


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
    raw = _read_sidecar(fs, root)
    if raw is None:
        raise BadInputError(location, "no similarity index here (no index.json).", f"build it with `{build}`.")
    try:
        doc = json.loads(raw)
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
    return SavedIndex(vectors, catalog, meta, location, _sha256(raw))
