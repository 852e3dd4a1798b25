"""Dask clients for the per-file work: an existing scheduler, or a LocalCluster.

Example:
    >>> with dask_client() as client:          # LocalCluster, one process per core
    ...     futures = client.map(work, items)
    >>> with dask_client("tcp://10.0.0.5:8786") as client:   # an existing cluster
    ...     ...
"""

from __future__ import annotations

import contextlib
import logging
import os

import dask


@contextlib.contextmanager
def dask_client(address: str | None = None, *, n_workers: int | None = None, memory_limit: str = "4GiB",
                threads: bool = False):
    """Yield a ``distributed.Client``: to ``address`` when given, else to a new LocalCluster.

    The LocalCluster has ``n_workers`` single-threaded workers (default: the number of
    cores). By default each is a process with one math thread, so that NumPy and PyTorch
    inside a task do not oversubscribe the cores. ``threads=True`` makes them threads of
    this process instead, for work that runs outside Python's global lock (the ingest:
    libdeflate, the OATH framing kernel, NumPy, zstd and sha256 all release it): no worker
    processes to start, no imports in them, no copies between processes (an ingest of 10
    hour files 6.3 -> 5.35 s on 2 cores; BENCHMARKS.md), one memory for all of them (no
    per-worker limit). A task cannot be killed in a thread: Ctrl-C ends the command once the
    files in flight are done.
    """
    # distributed: only when a client is made (import of this module stays cheap)
    from distributed import Client, LocalCluster

    if address:
        client = Client(address, timeout="60s")
        try:
            yield client
        finally:
            client.close()
        return
    n = n_workers or os.cpu_count() or 1
    for name in ("distributed", "distributed.nanny", "distributed.scheduler", "distributed.worker", "distributed.batched"):
        logging.getLogger(name).setLevel(logging.ERROR)  # start/stop chatter and shutdown races are not news
    if threads:
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=False, dashboard_address=":0",
                          memory_limit=0, silence_logs=40) as cluster, Client(cluster) as client:
            yield client
        return
    one_thread = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": one_thread, "distributed.worker.daemon": False}):
        with LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=":0", memory_limit=memory_limit, silence_logs=40,
        ) as cluster, Client(cluster) as client:
            yield client
