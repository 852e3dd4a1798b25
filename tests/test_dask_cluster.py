"""The local Dask clusters of ``dask_client``: worker processes by default, threads for the ingest."""

from __future__ import annotations

import os
import threading

from aurora_pipeline.dask_cluster import dask_client


def _where() -> tuple[int, str]:
    return os.getpid(), threading.current_thread().name


def test_threads_run_the_workers_in_this_process():
    with dask_client(n_workers=2, threads=True) as client:
        places = client.run(_where)
    assert len(places) == 2
    assert {pid for pid, _ in places.values()} == {os.getpid()}
    assert all(name != threading.main_thread().name for _, name in places.values())


def test_by_default_each_worker_is_a_process_of_its_own():
    with dask_client(n_workers=2) as client:
        pids = {pid for pid, _ in client.run(_where).values()}
    assert len(pids) == 2 and os.getpid() not in pids
