"""How flows fail: a bug ends the run Failed with its traceback, a refusal is not retried.

The flows run in this process on Prefect's temporary server; the ingest's Dask cluster
runs its workers as threads here, so a bug injected into preprocessing reaches them.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import time

import numpy as np
import pytest

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.source.archive import relative_path
from aurora_pipeline.synth.archive import render_site_hour, write_asi_cdf

pytestmark = pytest.mark.slow


@pytest.fixture
def threaded_dask():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def _final_task_runs(flow_run_id, name: str, timeout: float = 60.0) -> list:
    """The flow run's task runs called ``name``-..., once the server has recorded them as final
    (task runs reach it as events, a moment after the flow run ends)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            found = [r for r in runs if r.name.startswith(name) and r.state is not None and r.state.is_final()]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.5)


def test_a_bug_in_preprocessing_fails_the_run_with_its_traceback_not_a_failures_row(
        tmp_path, threaded_dask, monkeypatch):
    import aurora_pipeline.ingest.driver as driver
    from aurora_pipeline.store.failures import read_failures
    from flows.ingest import ingest_archive

    archive, store = tmp_path / "archive", tmp_path / "s.zarr"
    hour = np.datetime64("2011-01-06T05", "h")
    times, images, _ = render_site_hour("gako", hour, 4, 0, size=64)
    write_asi_cdf(archive / relative_path("gako", hour), "gako", times, images)

    def broken(*args, **kwargs):
        return 1 / 0  # a bug of ours, not bad input

    monkeypatch.setattr(driver, "preprocess_frames", broken)
    state = ingest_archive(archive=str(archive), store=str(store), image_size=32, dask_address=threaded_dask,
                           return_state=True)
    assert state.is_failed() and "ZeroDivisionError" in state.message
    logs = _run_logs(state.state_details.flow_run_id, "Traceback")
    assert any("ZeroDivisionError" in text and "preprocess" in text for text in logs), logs
    if store.exists():
        assert read_failures(store).empty, "a bug was recorded as a bad file"


def _run_logs(flow_run_id, containing: str, timeout: float = 60.0) -> list[str]:
    """The flow run's log messages on the server, once one of them contains ``containing``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            logs = [entry.message for entry in client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))]
            if any(containing in text for text in logs) or time.monotonic() > deadline:
                return logs
            time.sleep(0.5)


def _unsafe_tarball() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        labels = b"class2,class6,picNum,picType,rotAng\n0,0,00001,arc,010\n"
        good = tarfile.TarInfo("oath_v1.1/classifications/classifications.csv")
        good.size = len(labels)
        tar.addfile(good, io.BytesIO(labels))
        evil = tarfile.TarInfo("oath_v1.1/../evil")
        evil.size = 5
        tar.addfile(evil, io.BytesIO(b"pwned"))
    return buffer.getvalue()


def test_a_refused_tarball_is_not_retried(tmp_path):
    from flows.oath_benchmark import oath_benchmark

    data = _unsafe_tarball()
    (tmp_path / "oath_v1.1_20181026.tgz").write_bytes(data)  # hand-copied beside the folder, as the README says
    state = oath_benchmark(oath_dir=str(tmp_path / "oath"), out=str(tmp_path / "out"), download=True,
                           sha256=hashlib.sha256(data).hexdigest(), return_state=True)
    assert state.is_failed() and "oath_v1.1/../evil" in state.message
    with pytest.raises(BadInputError):
        state.result()
    [fetch] = _final_task_runs(state.state_details.flow_run_id, "fetch")
    assert fetch.state.is_failed() and fetch.run_count == 1  # refused once, never retried
    assert not (tmp_path / "evil").exists()
