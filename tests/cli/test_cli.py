"""The `aurora-pipeline` command as a user runs it: a subprocess, its exit code and its output.

One module-scoped local Prefect server (`aurora-pipeline server start`, in a new
Prefect home) serves every command here, as it would serve a user's commands; one
small store is built once through the commands (synth-archive, ingest, pretrain at
the store's 32 px, embed) and reused. tests/flows/test_demo.py runs the README's first
command with none of the Prefect settings of tests/conftest.py and a new, empty Prefect
home, so Prefect's temporary server makes its first start there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from aurora_cli import command_runner
from servers import serve_directory, free_port

pytestmark = pytest.mark.slow

CLI = Path(sys.executable).parent / "aurora-pipeline"
REPO = Path(__file__).resolve().parents[2]
HOURS = ("2011-01-06T04", "2011-01-06T05")


@dataclass
class Cli:
    """Runs `aurora-pipeline` with one Prefect home whose local server is up."""

    env: dict
    home: Path
    api_url: str

    def run(self, *args: str, expect: int = 0, extra_env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
        done = subprocess.run([str(CLI), *args], env={**self.env, **(extra_env or {})}, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=REPO)
        assert done.returncode == expect, (f"`aurora-pipeline {' '.join(args)}` exited {done.returncode}, "
                                           f"expected {expect}\nstdout:\n{done.stdout[-3000:]}\n"
                                           f"stderr:\n{done.stderr[-5000:]}")
        return done

    def json(self, *args: str, **kwargs) -> dict:
        """The command's output, which must be strict JSON (no NaN or Infinity)."""
        return strict_json(self.run(*args, **kwargs).stdout)

    def flow_runs(self, flow_name: str) -> list[dict]:
        """The server's runs of ``flow_name``, newest first."""
        flows = httpx.post(f"{self.api_url}/flows/filter", json={}).json()
        ids = [f["id"] for f in flows if f["name"] == flow_name]
        if not ids:
            return []
        return httpx.post(f"{self.api_url}/flow_runs/filter", json={
            "flows": {"id": {"any_": ids}}, "sort": "EXPECTED_START_TIME_DESC"}).json()

    def task_runs(self, flow_run_id: str, want: str, timeout: float = 60) -> list[dict]:
        """Task runs of a flow run whose name starts with ``want`` (recorded from events: poll)."""
        deadline = time.monotonic() + timeout
        while True:
            runs = httpx.post(f"{self.api_url}/task_runs/filter", json={
                "flow_runs": {"id": {"any_": [flow_run_id]}}}).json()
            found = [r for r in runs if r["name"].startswith(want) and r["state_type"] in ("FAILED", "COMPLETED")]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.5)


def strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def base_env(home: Path) -> dict:
    """This environment without any Prefect API, and with the Prefect home ``home``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILES_PATH")}
    env.update(PREFECT_HOME=str(home), PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """`aurora-pipeline server start` on a free port, in a new Prefect home; stopped at the end."""
    home = tmp_path_factory.mktemp("cli-prefect-home")
    env = base_env(home)
    port = free_port()
    started = subprocess.run([str(CLI), "server", "start", "--port", str(port)], env=env, capture_output=True,
                             text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert started.returncode == 0, started.stdout + started.stderr
    state = json.loads(started.stdout)
    assert state["running"] and state["api_url"] == f"http://127.0.0.1:{port}/api"
    runner = Cli(env=env, home=home, api_url=state["api_url"])
    yield runner
    stopped = runner.json("server", "stop")
    assert stopped == {"running": False, "stopped": True}
    assert runner.run("server", "status", expect=1).stdout.count('"running": false') == 1


@dataclass
class Built:
    archive: Path
    store: Path
    checkpoint: Path
    labels: Path       # the synthetic labels of the stored frames (gill's second hour is not stored)
    pretrained: dict


@pytest.fixture(scope="module")
def built(cli, tmp_path_factory) -> Built:
    """gako: two site-hours, gill: one (48 frames each, 32 px), pretrained 1 epoch and embedded."""
    work = tmp_path_factory.mktemp("cli-store")
    archive, store, checkpoint = work / "archive", work / "store.zarr", work / "encoder"
    made = cli.json("synth-archive", str(archive), "--sites", "gako,gill", "--start", HOURS[0], "--hours", "2",
                    "--frames-per-hour", "48", "--seed", "2")
    assert made["files"] == 4
    first = cli.json("ingest", "--archive", str(archive), "--store", str(store), "--sites", "gako",
                     "--image-size", "32")
    assert first["files_ingested"] == 2 and first["frames"] == 96 and first["sites_without_files"] == []
    # an asked site with no files is named; gill gets only its first hour
    second = cli.json("ingest", "--archive", str(archive), "--store", str(store), "--sites", "gill,inuv",
                      "--end", HOURS[1], "--image-size", "32")
    assert second["files_ingested"] == 1 and second["sites_without_files"] == ["inuv"]
    pretrained = cli.json("pretrain", "--store", str(store), "--checkpoint", str(checkpoint), "--epochs", "1",
                          "--batch-size", "16", "--device", "cpu", "--no-mixed-precision")
    embedded = cli.json("embed", "--store", str(store), "--checkpoint", str(checkpoint), "--device", "cpu")
    assert embedded["model_id"] == pretrained["model_id"]
    labels = pd.read_csv(archive / "labels.csv")
    stored = ~((labels["site"] == "gill") & labels["time"].str.startswith(HOURS[1]))
    labels[stored].to_csv(work / "labels.csv", index=False)
    return Built(archive, store, checkpoint, work / "labels.csv", pretrained)


def labels_for(built: Built, path: Path, keep, relabel=None) -> Path:
    """A labels CSV of the synthetic labels of the stored frames kept by ``keep(row)``; ``relabel(df)``
    may change classes."""
    df = pd.read_csv(built.labels)
    df = df[df.apply(keep, axis=1)].copy()
    if relabel is not None:
        df = relabel(df)
    df.to_csv(path, index=False)
    return path


def hour_of(row) -> str:
    return row["time"][:13]


# --------------------------------------------------------------------------- the server


def test_commands_use_the_running_local_server(cli, built):
    status = cli.json("server", "status")
    assert status["running"] and status["api_url"] == cli.api_url
    assert status["log"].startswith(str(cli.home)) and Path(status["state_file"]).parent == cli.home
    ingests = cli.flow_runs("ingest-archive")
    assert len(ingests) >= 2 and all(r["state_type"] == "COMPLETED" for r in ingests)
    assert cli.flow_runs("pretrain-encoder") and cli.flow_runs("embed-frames")
    again = cli.json("server", "start")  # already up: reported, nothing started
    assert again["started_now"] is False and again["api_url"] == cli.api_url


# --------------------------------------------------------------------------- the warm runner


def runner_log(cli: Cli) -> list[str]:
    """The lines of the warm runner's log that say which command it ran."""
    path = cli.home / command_runner.RUNNER_LOG
    return [line for line in path.read_text().splitlines() if " runs `aurora-pipeline " in line]


def test_commands_run_in_the_warm_runner(cli, built):
    assert cli.json("server", "status")["runner"] is True
    ran = runner_log(cli)
    assert any("runs `aurora-pipeline ingest --archive" in line for line in ran)
    assert any("runs `aurora-pipeline pretrain --store" in line for line in ran)
    before = len(runner_log(cli))
    done = cli.run("ingest", "--archive", str(built.archive), "--store", str(built.store), "--sites", "gako",
                   "--image-size", "32")
    assert strict_json(done.stdout)["files_skipped"] == 2
    assert len(runner_log(cli)) == before + 1  # this command, run by the runner, output on our pipes


def heartbeats_of(cli: Cli, flow_run_id: str) -> list[dict]:
    """The heartbeat events the server stored for one flow run."""
    return httpx.post(f"{cli.api_url}/events/filter", json={
        "filter": {"event": {"name": ["prefect.flow-run.heartbeat"]},
                   "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]}}, "limit": 50}).json()["events"]


def test_a_commands_runs_send_heartbeats_only_when_the_user_sets_their_frequency(cli, built):
    nothing_new = ("ingest", "--archive", str(built.archive), "--store", str(built.store), "--sites", "gako",
                   "--image-size", "32")
    cli.run(*nothing_new)
    quiet = cli.flow_runs("ingest-archive")[0]["id"]
    cli.run(*nothing_new, extra_env={"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"})  # Prefect's guide to zombie runs
    asked = cli.flow_runs("ingest-archive")[0]["id"]
    assert asked != quiet
    deadline = time.monotonic() + 120  # the server stores events in batches
    while not heartbeats_of(cli, asked) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert heartbeats_of(cli, asked), "the run of a command with PREFECT_FLOWS_HEARTBEAT_FREQUENCY set sent none"
    # the first command had sent all its events before the second began, and the server stores them in order
    assert heartbeats_of(cli, quiet) == []


def test_other_import_time_settings_run_the_command_in_its_own_process(cli, built, tmp_path):
    before = len(runner_log(cli))
    done = cli.run("--debug", "ingest", "--archive", str(built.archive), "--store", str(tmp_path / "s.zarr"),
                   "--sites", "gill", "--end", HOURS[1], "--image-size", "32",
                   extra_env={"PREFECT_LOGGING_LEVEL": "ERROR"})
    assert strict_json(done.stdout)["files_ingested"] == 1
    assert "settings read at import differ from the runner's: PREFECT_LOGGING_LEVEL" in done.stderr
    assert len(runner_log(cli)) == before
    off = cli.run("ingest", "--archive", str(tmp_path / "none"), "--store", str(tmp_path / "t.zarr"), expect=2,
                  extra_env={command_runner.OFF_SWITCH: "1"})
    assert off.stderr.count("error:") == 1 and len(runner_log(cli)) == before


def test_a_user_error_in_the_runner_prints_one_line_and_exits_2(cli, tmp_path):
    done = cli.run("ingest", "--archive", str(tmp_path / "nowhere"), "--store", str(tmp_path / "s.zarr"), expect=2)
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "holds no THEMIS ASI tree" in errors[0] and "Traceback" not in done.stderr
    assert "runs `aurora-pipeline ingest --archive " + str(tmp_path / "nowhere") in runner_log(cli)[-1]


def test_ctrl_c_reaches_the_command_the_runner_runs(cli, tmp_path):
    """SIGINT sent to the command while it is inside the ingest (its first download held by the
    mirror until then, so the command cannot have finished) ends it with 130."""
    archive = tmp_path / "archive"
    cli.json("synth-archive", str(archive), "--sites", "gako", "--hours", "2", "--frames-per-hour", "240")
    mirror = serve_directory(archive)
    held = mirror.hold(str(sorted(archive.rglob("*.cdf"))[0].relative_to(archive)))
    try:
        before = len(runner_log(cli))
        command = subprocess.Popen([str(CLI), "ingest", "--archive", mirror.url, "--store", str(tmp_path / "s.zarr"),
                                    "--image-size", "32"], env=cli.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        assert held.arrived.wait(timeout=120), "the command never asked for the held file"
        line = runner_log(cli)[-1]
        assert len(runner_log(cli)) == before + 1 and "ingest --archive " + mirror.url in line
        pid = int(line.split("runner: pid ")[1].split()[0])
        command.send_signal(signal.SIGINT)
        held.release()  # the download in flight may finish: the interrupt is already on its way
        out, err = command.communicate(timeout=120)
    finally:
        held.release()
        mirror.stop()
    assert command.returncode == 130, out + err
    assert "KeyboardInterrupt" in err
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists()  # the command's process is gone, not left running


def test_the_runner_restarts_when_the_code_changes(cli, built, tmp_path):
    marker = REPO / "flows" / "__init__.py"
    info = marker.stat()
    before = len(runner_log(cli))
    try:
        os.utime(marker, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
        done = cli.run("--debug", "ingest", "--archive", str(built.archive), "--store", str(built.store),
                       "--sites", "gako", "--image-size", "32")
        assert "the code changed since the runner started" in done.stderr
        assert strict_json(done.stdout)["files_skipped"] == 2 and len(runner_log(cli)) == before
        path = command_runner.socket_path(cli.env)
        deadline = time.monotonic() + 300
        while not command_runner.ping(path) and time.monotonic() < deadline:
            time.sleep(0.2)
        cli.run("ingest", "--archive", str(built.archive), "--store", str(built.store), "--sites", "gako",
                "--image-size", "32")
        assert len(runner_log(cli)) == before + 1  # the restarted runner, with the new code, ran it
    finally:
        os.utime(marker, ns=(info.st_atime_ns, info.st_mtime_ns))


# --------------------------------------------------------------------------- pretrain, embed


def test_pretrain_trains_at_the_stores_frame_size_and_prints_json(cli, built):
    assert built.pretrained["image_size"] == 32 and built.pretrained["epochs"] == 1
    speed = built.pretrained["images_per_second"]
    assert speed is None or speed > 0  # None (null) when the run was too short to time past its warm-up
    sidecar = json.loads((built.checkpoint / "final" / "state.json").read_text())
    assert sidecar["config"]["image_size"] == 32
    # resuming a finished run trains nothing: its speed is null, and the output is still JSON
    done = cli.run("pretrain", "--store", str(built.store), "--checkpoint", str(built.checkpoint), "--epochs", "1",
                   "--batch-size", "16", "--device", "cpu", "--no-mixed-precision", "--resume")
    assert strict_json(done.stdout)["images_per_second"] is None


# --------------------------------------------------------------------------- fit, classify, cluster


@pytest.fixture(scope="module")
def classifier(cli, built, tmp_path_factory) -> tuple[Path, dict]:
    """`fit-classifier` on every stored frame's synthetic label: (its directory, the command's output)."""
    out = tmp_path_factory.mktemp("cli-classifier") / "classifier"
    short = cli.json("fit-classifier", "--store", str(built.store), "--labels", str(built.labels),
                     "--out", str(out), "--cv-folds", "3")
    return out, short


def test_fit_classifier_reports_per_class_metrics_by_name(built, classifier):
    out, short = classifier
    names = sorted(pd.read_csv(built.labels)["class"].unique())
    assert sorted(short["per_class"]) == names
    assert all(0.0 <= short["per_class"][c]["f1"] <= 1.0 for c in names)
    # three site-hours; a class that lives in one of them leaves frame folds, and the output says so
    assert short["cv_scheme"] in ("hour_grouped", "frame_stratified") and 2 <= short["cv_folds"] <= 3
    if short["cv_scheme"] == "frame_stratified":
        assert short["cv_note"].startswith("hour-grouped cross-validation cannot run: 3 site-hour(s)")
    assert 0.0 <= short["cv_accuracy"] <= 1.0 and Path(short["confusion_matrix_png"]).stat().st_size > 0
    assert (out / "classifier.json").is_file() and short["labelled_frames"] == 144


def test_classify_command_labels_every_stored_frame(cli, built, classifier):
    labelled = cli.json("classify", "--store", str(built.store), "--classifier", str(classifier[0]))
    assert labelled["hours_labelled"] == 3 and sum(labelled["label_counts"].values()) == 144


def test_cluster_command_on_one_site_hour(cli, built, tmp_path):
    summary = cli.json("cluster", "--store", str(built.store), "--sites", "gill", "--out", str(tmp_path / "cl"),
                       "--k-min", "2", "--k-max", "4")
    assert 2 <= summary["best_k"] <= 4
    refused = cli.run("cluster", "--store", str(built.store), "--sites", "gill", "--out", str(tmp_path / "c2"),
                      "--k-min", "3", "--k-max", "60", expect=2)
    assert "48 rows, too few for k_max=60" in refused.stderr and "Traceback" not in refused.stderr


def test_fit_on_the_smallest_inputs(built, tmp_path):
    """One site-hour, two site-hours, one class, a class with a single frame (library call, same store)."""
    from aurora_pipeline.classify.driver import fit_from_store
    from aurora_pipeline.classify.model import ClassifierConfig
    from aurora_pipeline.errors import BadInputError

    def fit(name, keep, relabel=None, **kwargs):
        csv = labels_for(built, tmp_path / f"{name}.csv", keep, relabel)
        return fit_from_store(built.store, csv, tmp_path / name, ClassifierConfig(), **kwargs).cross_validation

    def alternate(df):  # two classes in every hour
        df["class"] = np.where(np.arange(len(df)) % 2 == 0, "arc", "clear")
        return df

    one_hour = fit("one-hour", lambda r: r["site"] == "gill" and hour_of(r) == HOURS[0], alternate)
    assert one_hour["scheme"] == "frame_stratified" and one_hour["folds"] == 5
    assert "hour-grouped cross-validation cannot run: 1 site-hour(s)" in one_hour["note"]
    assert 0.0 <= one_hour["accuracy"] <= 1.0

    two_hours = fit("two-hours", lambda r: r["site"] == "gako", alternate)
    assert two_hours["scheme"] == "hour_grouped" and two_hours["folds"] == 2
    assert two_hours["note"] == "2-fold instead of 5-fold: only 2 site-hours"

    def one_odd_frame(df):
        df = alternate(df)
        df.iloc[0, df.columns.get_loc("class")] = "moon"
        return df

    single = fit("single-frame-class", lambda r: r["site"] == "gako", one_odd_frame)
    assert single["scheme"] == "none" and single["accuracy"] is None
    assert "class(es) ['moon'] have a single frame" in single["note"] and 0.0 <= single["training_accuracy"] <= 1.0
    assert (tmp_path / "single-frame-class" / "classifier.json").is_file()  # the fit itself is still saved

    with pytest.raises(BadInputError, match=r"name only the class\(es\) \['arc'\]"):
        fit("one-class", lambda r: r["site"] == "gako", lambda df: df.assign(**{"class": "arc"}))
    with pytest.raises(BadInputError, match=r"only in the held-out hours"):
        fit("held-out-only", lambda r: r["site"] == "gako",
            lambda df: df.assign(**{"class": np.where(df["time"].str.startswith(HOURS[1]), "moon", "arc")}),
            holdout_hours_fraction=0.5)


# --------------------------------------------------------------------------- failures


def test_a_user_error_prints_one_line_exits_2_and_the_ui_keeps_it(cli, built, tmp_path):
    csv = labels_for(built, tmp_path / "one-class.csv", lambda r: r["site"] == "gako",
                     lambda df: df.assign(**{"class": "arc"}))
    args = ("fit-classifier", "--store", str(built.store), "--labels", str(csv), "--out", str(tmp_path / "k"))
    done = cli.run(*args, expect=2, extra_env={"PREFECT_LOGGING_LEVEL": "INFO"})
    problem = "name only the class(es) ['arc']"
    assert done.stderr.count(problem) == 1, done.stderr
    assert "Traceback" not in done.stderr
    line = [x for x in done.stderr.splitlines() if problem in x]
    assert line[0].startswith(f"aurora-pipeline fit-classifier: error: {csv}: ") and "Fix: label frames" in line[0]
    # the server still has the failed run, its failed task with the message, and the traceback in its logs
    run = cli.flow_runs("fit-classifier")[0]
    assert run["state_type"] == "FAILED" and problem in run["state"]["message"]
    [fit_task] = cli.task_runs(run["id"], "fit")
    assert fit_task["state_type"] == "FAILED" and problem in fit_task["state"]["message"]
    logs = httpx.post(f"{cli.api_url}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run["id"]]}}}).json()
    assert any("Traceback" in entry["message"] and problem in entry["message"] for entry in logs)
    # --debug shows the traceback
    debug = cli.run(*args, "--debug", expect=1)
    assert "Traceback" in debug.stderr and "BadInputError" in debug.stderr


def test_bad_settings_and_sites_are_refused_before_any_work(cli, built, tmp_path):
    store = tmp_path / "never.zarr"
    size = cli.run("ingest", "--archive", str(built.archive), "--store", str(store), "--image-size", "100000",
                   expect=2)
    assert "image_size: must be a whole number of pixels in 8..512, got 100000" in size.stderr
    typo = cli.run("ingest", "--archive", str(built.archive), "--store", str(store), "--sites", "gako,gakk",
                   expect=2)
    assert "--sites: unknown THEMIS ASI site code(s) ['gakk']" in typo.stderr and "Traceback" not in typo.stderr
    assert not store.exists()


def test_a_hostile_file_among_good_ones_and_a_run_where_every_file_fails(cli, built, tmp_path):
    from hostile_cdf import patched_cdf

    archive = tmp_path / "archive"
    good = next(built.archive.rglob("thg_l1_asf_gill_2011010604_v01.cdf"))
    target = archive / good.relative_to(built.archive)
    target.parent.mkdir(parents=True)
    shutil.copy(good, target)
    hostile = patched_cdf(tmp_path, dims=(65535, 65535))  # gako 2011-01-06T04, 65535 x 65535 claimed
    (archive / "thg/l1/asi/gako/2011/01").mkdir(parents=True)
    hostile = shutil.move(hostile, archive / "thg/l1/asi/gako/2011/01" / hostile.name)
    mixed = cli.json("ingest", "--archive", str(archive), "--store", str(tmp_path / "mixed.zarr"), "--image-size", "32")
    assert mixed["files_ingested"] == 1 and mixed["files_failed"] == 1
    assert "65535 x 65535" in mixed["failures"][0]

    only_bad = tmp_path / "only-bad"
    (only_bad / "thg/l1/asi/gako/2011/01").mkdir(parents=True)
    shutil.copy(hostile, only_bad / "thg/l1/asi/gako/2011/01")
    done = cli.run("ingest", "--archive", str(only_bad), "--store", str(tmp_path / "bad.zarr"), "--image-size", "32",
                   expect=2)
    assert "none of the 1 file(s) could be ingested" in done.stderr and "Traceback" not in done.stderr
    assert cli.flow_runs("ingest-archive")[0]["state_type"] == "FAILED"


# --------------------------------------------------------------------------- the other commands


def test_label_archive_command_with_nothing_new(cli, built, classifier):
    summary = cli.json("label-archive", "--archive", str(built.archive), "--store", str(built.store),
                       "--checkpoint", str(built.checkpoint), "--classifier", str(classifier[0]), "--sites", "gako",
                       "--reconcile", "--device", "cpu")
    assert summary["files_new"] == 0 and summary["files_already_stored"] == 2
    assert summary["total_seconds"] >= 0


def test_oath_commands_at_a_quick_setting(cli, tmp_path):
    oath, out = tmp_path / "oath", tmp_path / "run"
    assert cli.json("synth-oath", str(oath), "--n", "36")["images"] == 36
    results = cli.json("oath-benchmark", "--oath-dir", str(oath), "--out", str(out), "--epochs", "1",
                       "--batch-size", "8", "--image-size", "32", "--splits", "0", "--device", "cpu",
                       "--max-images-per-class", "6")
    assert results["config"]["supervised_epochs"] == 1  # scaled with --epochs (30 at 100)
    report = (out / "report.md").read_text()
    assert "supervised_epochs=1 (paper run: 30)" in report and "epochs=1 (paper: 100)" in report
    assert "image_size=32 (paper run: 128)" in report
