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
import time
import uuid

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


@contextlib.contextmanager
def _local_lock(path: str, wait_s: float):
    for folder in (os.path.dirname(os.path.dirname(path)), os.path.dirname(path)):
        os.makedirs(folder, exist_ok=True)
        meta = os.path.join(folder, "zarr.json")
        if not os.path.exists(meta):
            with open(meta, "ab") as fh:  # "a": never truncates a file another process holds
                if fh.tell() == 0:
                    fh.write(_group_json(long_name="writer locks of this store (see aurora_pipeline.store.locks)"))
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
