"""Local lock files: made once, whole, never replaced; a damaged one is repaired under its lock."""

from __future__ import annotations

import json
import os
import threading

import pytest
import xarray as xr

from aurora_pipeline.errors import StoreError
from aurora_pipeline.store import locks
from aurora_pipeline.store.core import Store
from aurora_pipeline.store.locks import LOCK_DIR, store_lock


@pytest.fixture
def store(tmp_path) -> Store:
    return Store.open(tmp_path / "s.zarr", mode="a")


def _meta(st: Store, *parts: str) -> str:
    return os.path.join(st.local_path, LOCK_DIR, *parts, "zarr.json")


def _one_group_document(path: str) -> bool:
    with open(path, "rb") as fh:
        return json.loads(fh.read())["node_type"] == "group"  # json.loads refuses two documents


def test_a_writer_that_loses_the_race_to_make_the_lock_file_keeps_the_winners(store, monkeypatch):
    """Between this writer's look (nothing there) and its link, another writer makes the file: the
    link fails, the other's whole file stays, with its inode (what flock locks), and no temporary
    file is left behind."""
    os.makedirs(os.path.dirname(_meta(store, "gako")), exist_ok=True)
    link = os.link
    made = {}

    def another_writer_first(src, dst):
        if dst == _meta(store, "gako") and not made:
            with open(dst, "wb") as fh:  # the other writer's whole file
                fh.write(locks.LOCKS_GROUP)
            made["inode"] = os.stat(dst).st_ino
        return link(src, dst)

    monkeypatch.setattr(locks.os, "link", another_writer_first)
    with store_lock(store, "gako"):
        pass
    assert os.stat(_meta(store, "gako")).st_ino == made["inode"]
    assert _one_group_document(_meta(store, "gako")) and _one_group_document(_meta(store))
    assert sorted(os.listdir(os.path.dirname(_meta(store, "gako")))) == ["zarr.json"]


@pytest.mark.parametrize("attempt", range(10))
def test_many_threads_taking_new_locks_at_once_leave_a_store_xarray_opens(tmp_path, attempt):
    """Eight writers take two new locks at once (the nightly ingest's worker threads did): every
    lock file is one group document. Before the fix some attempts wrote two documents into one."""
    store = Store.open(tmp_path / "s.zarr", mode="a")
    barrier = threading.Barrier(8)
    errors = []

    def take(name):
        try:
            barrier.wait(timeout=60)
            with store_lock(store, name):
                pass
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=take, args=("gako" if i % 2 else "gill",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    for path in (_meta(store), _meta(store, "gako"), _meta(store, "gill")):
        assert _one_group_document(path)
    xr.open_datatree(store.local_path, engine="zarr", consolidated=False)


def test_a_lock_file_of_two_documents_is_repaired_under_its_lock(store):
    """A store whose lock files the racing writers of earlier versions left as two documents: the first
    acquisition in a process (each process checks a lock file once) makes them one again."""
    doubled = locks.LOCKS_GROUP * 2
    os.makedirs(os.path.dirname(_meta(store, "gako")))
    for path in (_meta(store), _meta(store, "gako")):
        with open(path, "wb") as fh:
            fh.write(doubled)
    inode = os.stat(_meta(store, "gako")).st_ino
    with pytest.raises(ValueError):
        xr.open_datatree(store.local_path, engine="zarr", consolidated=False)
    with store_lock(store, "gako"):
        pass
    assert _one_group_document(_meta(store)) and _one_group_document(_meta(store, "gako"))
    assert os.stat(_meta(store, "gako")).st_ino == inode
    xr.open_datatree(store.local_path, engine="zarr", consolidated=False)


def test_the_lock_still_excludes_a_second_holder(store):
    with store_lock(store, "gako"):
        with pytest.raises(StoreError, match="held by another writer"):
            with store_lock(store, "gako", wait_s=0.2):
                pass
