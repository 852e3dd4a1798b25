"""deployments/prefect.yaml on a real Prefect server, run by a real process worker.

The deployments are registered from the repository root exactly as
deployments/README.md says (work pools ``cpu`` and ``gpu``, ``prefect deploy --all``),
a process worker for ``cpu`` runs them with ``AURORA_PIPELINE_ROOT`` set, and the
runs are started with ``prefect deployment run`` and parameter overrides pointing
at temporary paths:

- ``label-archive/nightly`` twice: everything, then a newer hour and a late older
  hour, which land in time order;
- ``oath-benchmark/oath-benchmark`` at a tiny setting on a synthetic OATH folder: its run
  directory, and the OATH table it publishes as an artifact;
- and the nightly cron schedule makes the server create scheduled runs.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

import numpy as np
import pytest
import xarray as xr

import aurora_pipeline
from servers import ManagedProcess, PrefectServer, start_worker
from test_label_archive import FRAMES_PER_HOUR, IMAGE_SIZE, SITE, NightlyModels, add_hour, build_nightly_models, snapshot

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NIGHTLY = "label-archive/nightly"
OATH = "oath-benchmark/oath-benchmark"
RUN_TIMEOUT_S = 300  # a flow run that has not finished by then is reported with the worker's log
DEPLOYMENTS = {  # flow/deployment -> work pool, as deployments/prefect.yaml says
    NIGHTLY: "cpu",
    OATH: "cpu",
    "pretrain-encoder/default": "gpu",
    "cluster-embeddings/default": "cpu",
}


@contextmanager
def api_client(server: PrefectServer):
    """A synchronous Prefect client talking to ``server`` (not the tests' temporary one)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as client:
        yield client


def scheduled_runs(client, deployment_id: UUID) -> list:
    """The runs the server's scheduler created for a deployment and that have not started."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId, FlowRunFilterState
    from prefect.client.schemas.filters import FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
    ))
    return [r for r in runs if r.auto_scheduled]


def set_schedules_active(client, deployment_name: str, active: bool) -> None:
    """Switch a deployment's schedules on or off; off also deletes the runs they already created,
    so that a worker never picks up a 12:00 UT nightly run with the real archive in its parameters."""
    deployment = client.read_deployment_by_name(deployment_name)
    for schedule in deployment.schedules:
        client.update_deployment_schedule(deployment.id, schedule.id, active=active)
    if not active:
        for run in scheduled_runs(client, deployment.id):
            client.delete_flow_run(run.id)


@pytest.fixture(scope="module")
def deployed(prefect_server: PrefectServer) -> PrefectServer:
    """The server, with the cpu and gpu process pools and every deployment of prefect.yaml."""
    for pool in ("cpu", "gpu"):
        prefect_server.cli("work-pool", "create", pool, "--type", "process", "--overwrite")
    # from the repository root, as the README says: entrypoints are relative to it
    prefect_server.cli("deploy", "--all", "--prefect-file", "deployments/prefect.yaml", cwd=REPO)
    return prefect_server


@pytest.fixture(scope="module")
def worker(deployed: PrefectServer, tmp_path_factory) -> Iterator[ManagedProcess]:
    """A process worker for the cpu pool, started outside the repository with AURORA_PIPELINE_ROOT set."""
    with api_client(deployed) as client:
        set_schedules_active(client, NIGHTLY, False)
    where = tmp_path_factory.mktemp("worker")
    process = start_worker(deployed.api_url, "cpu", where,
                           {"AURORA_PIPELINE_ROOT": str(REPO), "PREFECT_LOGGING_LEVEL": "INFO"},
                           log_path=where / "worker.log", home=where / "home")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> NightlyModels:
    return build_nightly_models(tmp_path_factory.mktemp("deployed-models"))


def run_deployment(server: PrefectServer, worker: ManagedProcess, name: str, params: dict) -> None:
    """``prefect deployment run NAME --params JSON``, then wait until the run ends; fail unless Completed."""
    out = server.cli("deployment", "run", name, "--params", json.dumps(params), cwd=REPO).stdout
    found = re.search(r"UUID: ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})", out)
    assert found, f"no flow run id in the output of `prefect deployment run {name}`:\n{out}"
    run_id = UUID(found.group(1))
    deadline = time.monotonic() + RUN_TIMEOUT_S
    with api_client(server) as client:
        run = client.read_flow_run(run_id)
        while not (run.state and run.state.is_final()) and time.monotonic() < deadline:
            time.sleep(1.0)
            run = client.read_flow_run(run_id)
        state = run.state
        if state is None or not state.is_completed():
            from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            log_text = "\n".join(f"{entry.level} {entry.message}" for entry in logs[-40:])
            pytest.fail(
                f"{name} run {run_id} ended {state.name if state else 'without a state'}"
                f" ({state.message if state else ''}) or timed out after {RUN_TIMEOUT_S} s.\n"
                f"flow run logs:\n{log_text}\nworker: {worker.describe()}"
            )


def test_every_deployment_is_registered_on_its_pool_with_the_yaml_defaults(deployed: PrefectServer) -> None:
    with api_client(deployed) as client:
        found = {name: client.read_deployment_by_name(name) for name in DEPLOYMENTS}
    assert {name: d.work_pool_name for name, d in found.items()} == DEPLOYMENTS
    assert all(d.entrypoint.startswith("flows/") for d in found.values()), [d.entrypoint for d in found.values()]
    nightly = found[NIGHTLY].parameters
    assert nightly["sites"] == ["atha", "fsmi", "gako", "gill", "inuv", "rank"]
    assert nightly["store"] == "demo_out/store.zarr"
    # the yaml restates no default (tests/flows/test_settings.py): the flows' own defaults apply
    # (lookback_days 30, the paper's 100 epochs)
    assert "lookback_days" not in nightly and "epochs" not in found[OATH].parameters


def test_nightly_cron_schedule_creates_scheduled_runs(deployed: PrefectServer) -> None:
    with api_client(deployed) as client:
        deployment = client.read_deployment_by_name(NIGHTLY)
        assert [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules] == [("0 12 * * *", "UTC")]
        set_schedules_active(client, NIGHTLY, True)
        client.resume_deployment(deployment.id)  # marks it as just changed (it was not paused)
        try:
            # the scheduler service looks at recently changed deployments every 5 s, at all every 60 s
            deadline, runs = time.monotonic() + 60, []
            while not runs and time.monotonic() < deadline:
                time.sleep(1.0)
                runs = scheduled_runs(client, deployment.id)
            assert runs, f"no scheduled runs of {NIGHTLY} after 60 s; server: {deployed.managed.describe()}"
            starts = sorted(r.expected_start_time for r in runs)
            assert all((t.hour, t.minute, t.second) == (12, 0, 0) and t.utcoffset().total_seconds() == 0
                       for t in starts), starts
            assert starts[0].timestamp() > time.time(), "a scheduled run is in the past"
            days = {t.date() for t in starts}
            assert len(days) == len(starts), "two scheduled runs on one day"
        finally:
            set_schedules_active(client, NIGHTLY, False)


def test_nightly_deployment_labels_new_files_once_and_late_hours_in_place(
    deployed: PrefectServer, worker: ManagedProcess, models: NightlyModels, tmp_path: Path
) -> None:
    archive, store = tmp_path / "archive", tmp_path / "nightly.zarr"
    add_hour(archive, "2011-01-06T05")
    add_hour(archive, "2011-01-06T06")
    params = {  # absolute paths: the run starts in the repository root, not here
        "archive": str(archive), "store": str(store), "checkpoint": models.checkpoint,
        "classifier": models.classifier, "centroids": models.centroids, "sites": [SITE],
        "lookback_days": 30, "reconcile": True, "image_size": IMAGE_SIZE, "device": "cpu",
    }

    def runs_table():
        return xr.open_zarr(store, group="runs", consolidated=False).to_dataframe()

    run_deployment(deployed, worker, NIGHTLY, params)
    assert runs_table()["files_ingested"].tolist() == [2]
    before = snapshot(store, skip=("runs",))

    # (a night with nothing new changes nothing: tests/flows/test_label_archive.py runs that in-process)
    add_hour(archive, "2011-01-06T07")  # the next hour
    add_hour(archive, "2011-01-06T04")  # an older hour that arrived late
    run_deployment(deployed, worker, NIGHTLY, params)
    runs = runs_table()
    assert runs["files_new"].tolist() == [2, 2] and runs["files_ingested"].tolist() == [2, 2]
    assert json.loads(runs["summary"].iloc[1])["hours"] == ["gako/2011-01-06T04", "gako/2011-01-06T07"]
    frames_chunks = {k: v for k, v in before.items() if k.startswith(f"{SITE}/2011/frames/c/")}
    after = snapshot(store)
    assert frames_chunks and {k: after.get(k) for k in frames_chunks} == frames_chunks, \
        "labelling the new hours rewrote frames of hours already stored"

    # plain xarray reads the whole store: one group per site-year with its per-hour facts, plus the run log
    tree = xr.open_datatree(store, engine="zarr", consolidated=False)
    year = tree[f"{SITE}/2011"].dataset
    assert {"frames", "embedding", "label", "label_probability", "cluster"} <= set(year.data_vars)
    assert int((year.hour_frames > 0).sum()) == 4 and set(year.hour_classifier.values.tolist()) > {""}
    assert tree["runs"].sizes["row"] == 2
    times = aurora_pipeline.open_site(store, SITE).time.values
    assert len(times) == 4 * FRAMES_PER_HOUR and (np.diff(times) > np.timedelta64(0, "ms")).all()


def test_oath_benchmark_deployment_at_a_tiny_setting(
    deployed: PrefectServer, worker: ManagedProcess, tmp_path: Path
) -> None:
    from aurora_pipeline.oath.synth import write_synthetic_oath

    from aurora_pipeline.encoder.checkpoint import load_encoder
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    oath = write_synthetic_oath(tmp_path / "oath", n=60, image_size=64, workers=1)
    out = tmp_path / "oath_out"
    run_deployment(deployed, worker, OATH, {
        "oath_dir": str(oath), "out": str(out), "epochs": 1, "batch_size": 16, "image_size": 32, "splits": "1",
        "device": "cpu", "max_images_per_class": 8, "supervised_epochs": 1, "mixed_precision": False,
    })
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["epochs"] == 1 and results["config"]["splits"] == [1]
    assert results["config"]["max_images_per_class"] == 8
    assert results["data"]["n_images"] == 46  # 8 per class, moon has only 6 in this synthetic release
    assert set(results["models"]) == {"simclr_linear", "supervised_resnet18", "raw_pixels_linear"}
    for name in ("report.md", "results.json", "confusion_matrix_split1.png", "silhouette.png", "montage_clusters.png"):
        assert (out / name).is_file(), name
    assert load_encoder(out / "encoder")[1]["model_id"] == results["encoder"]["model_id"]
    # the flow publishes the OATH table (the paper's row beside ours) as an artifact on the server
    with api_client(deployed) as client:
        tables = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["oath-table"])))
    assert len(tables) == 1 and "| 90.9 | 0.7 |" in tables[0].data
    assert f"{100 * results['models']['simclr_linear']['mean']['accuracy']:.1f}" in tables[0].data
