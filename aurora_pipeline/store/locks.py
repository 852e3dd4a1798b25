"""One lock per site (and one for the store's catalogue and tables), for every writer.

Every writer of a site's per-hour facts, small per-frame arrays or new arrays holds the
site's lock while it writes them; the parallel region writes of frames and embeddings
need none (each hour owns its chunks). The lock is held for the driver's short writes,
not for a whole run, so a nightly run and an ingest started by hand interleave safely.

- Local disk: ``fcntl.flock`` on ``STORE/.aurora-locks/<name>/zarr.json``. The kernel drops
  the lock when its process dies, so a killed run never leaves a stale lock.
- fsspec stores (S3): the object ``STORE/.aurora-locks/<name>/zarr.json`` created with an
  exclusive write (``If-None-Match: *``, S3 conditional writes) holding the owner and an
  expiry; released by deleting it.

Lock files are empty Zarr groups, so plain Zarr and xarray see a valid hierarchy. A lock older than ``LEASE_SECONDS`` belongs to a
  writer that died and is broken. Writes under the lock take seconds, far less than the lease.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
import uuid

from aurora_pipeline.atomic import atomic_write
from aurora_pipeline.errors import StoreError
import fcntl

LOCK_DIR = ".aurora-locks"
LEASE_SECONDS = 300.0
WAIT_SECONDS = 900.0


@contextlib.contextmanager
def store_lock(store, name: str, *, wait_s: float = WAIT_SECONDS):
    """Hold the lock ``name`` (a site code, "catalogue" or "tables") of ``store`` (a ``Store``)."""
    if store.local_path is not None:
        with _local_lock(os.path.join(store.local_path, LOCK_DIR, name, "zarr.json"), wait_s):
            yield
    else:
        with _object_lock(store.fs, f"{store.fs_root}/{LOCK_DIR}/{name}/zarr.json", wait_s):
            yield


def _group_json(**attributes) -> bytes:
    return json.dumps({"zarr_format": 3, "node_type": "group", "attributes": attributes}).encode()


LOCKS_GROUP = _group_json(long_name="writer locks of this store (see aurora_pipeline.store.locks)")


def _create_once(meta: str, content: bytes) -> None:
    """Make the file ``meta`` with ``content`` unless it exists, so that no reader ever sees it part-written
    and it is never replaced once made (a lock file's inode is what ``flock`` locks: a replaced file
    would let two writers hold "the" lock). The content goes to a temporary file beside it, which is
    hard-linked to ``meta`` in one step; ``os.link`` fails when another writer made ``meta`` first.
    (Opening ``meta`` for appending and writing when it was empty let two writers that opened it at
    once both write: a zarr.json of two documents that no Zarr reader opens.)"""
    if os.path.exists(meta):
        return
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(meta), prefix=".zarr.json.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, meta)
    finally:
        os.unlink(tmp)


def _is_group_json(data: bytes) -> bool:
    try:
        return json.loads(data).get("node_type") == "group"
    except (ValueError, AttributeError):
        return False


# lock files this process has found whole (or repaired): checked once, not on every acquisition
_CHECKED: set[str] = set()


def _repair_in_place(fd: int, content: bytes) -> None:
    """Rewrite the held lock file's content if it is not one group document (a store whose lock file two
    writers created at once before the fix above): same inode, under its lock."""
    size = os.fstat(fd).st_size
    if _is_group_json(os.pread(fd, size, 0)):
        return
    os.ftruncate(fd, 0)
    os.pwrite(fd, content, 0)


@contextlib.contextmanager
def _local_lock(path: str, wait_s: float):
    folders = (os.path.dirname(os.path.dirname(path)), os.path.dirname(path))
    checked = path in _CHECKED
    for folder in folders:
        os.makedirs(folder, exist_ok=True)
        _create_once(os.path.join(folder, "zarr.json"), LOCKS_GROUP)
    parent = os.path.join(folders[0], "zarr.json")  # locked by nobody: a bad one is replaced whole
    if not checked:
        with open(parent, "rb") as fh:
            if not _is_group_json(fh.read()):
                atomic_write(parent, LOCKS_GROUP)
    fd = os.open(path, os.O_RDWR, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreError(f"{path}: held by another writer for over {wait_s:.0f} s. Fix: wait for the "
                                     "other run to finish, or stop it.") from None
                time.sleep(0.05)
        try:
            if not checked:
                _repair_in_place(fd, LOCKS_GROUP)
                _CHECKED.add(path)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _object_lock(fs, path: str, wait_s: float):
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    deadline = time.monotonic() + wait_s
    while True:
        body = _group_json(owner=token, expires=time.time() + LEASE_SECONDS)
        try:
            fs.pipe_file(path, body, mode="create")
            break
        except FileExistsError:
            _break_if_expired(fs, path)
        except OSError as err:  # S3 answers a lost race with 412 Precondition Failed
            if "412" not in str(err) and "PreconditionFailed" not in str(err):
                raise
        if time.monotonic() > deadline:
            raise StoreError(f"{path}: held by another writer for over {wait_s:.0f} s. Fix: wait for the other run "
                             f"to finish; a lock older than {LEASE_SECONDS:.0f} s is broken automatically.")
        time.sleep(0.1)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(path)


def _break_if_expired(fs, path: str) -> None:
    try:
        held = json.loads(fs.cat_file(path)).get("attributes", {})
    except (FileNotFoundError, ValueError):
        return
    if float(held.get("expires", 0)) < time.time():
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(path)
