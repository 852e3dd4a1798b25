"""Which Prefect API a command uses, what reaches the terminal, and the command's JSON (no server needed)."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from aurora_pipeline.errors import BadInputError, CheckpointError
from aurora_cli import local_server
from aurora_cli.terminal import HideUserErrors
from aurora_cli.main import _json_ready


def test_a_command_with_nothing_set_gets_a_temporary_server_with_a_generous_timeout(tmp_path):
    env = {"PREFECT_HOME": str(tmp_path)}
    assert local_server.choose_api(env) == "temporary"
    assert int(env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]) >= 600
    assert "PREFECT_API_URL" not in env
    mine = {"PREFECT_HOME": str(tmp_path), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "42"}
    local_server.choose_api(mine)
    assert mine["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "42"  # the user's own setting wins


def test_the_users_api_url_is_kept_from_the_environment_or_the_profile(tmp_path):
    env = {"PREFECT_HOME": str(tmp_path), "PREFECT_API_URL": "http://example.invalid:4200/api"}
    assert local_server.choose_api(env) == "configured" and env["PREFECT_API_URL"].startswith("http://example")
    (tmp_path / "profiles.toml").write_text(
        'active = "work"\n[profiles.work]\nPREFECT_API_URL = "http://10.0.0.5:4200/api"\n[profiles.ephemeral]\n')
    env = {"PREFECT_HOME": str(tmp_path)}
    assert local_server.choose_api(env) == "configured" and "PREFECT_API_URL" not in env
    env = {"PREFECT_HOME": str(tmp_path), "PREFECT_PROFILE": "ephemeral"}
    assert local_server.choose_api(env) == "temporary"


def test_a_stale_server_record_is_not_used(tmp_path):
    state = {"pid": 2**22 + 12345, "port": 1, "api_url": "http://127.0.0.1:1/api", "log": "x", "started": "t"}
    (tmp_path / local_server.STATE_FILE).write_text(json.dumps(state))
    env = {"PREFECT_HOME": str(tmp_path)}
    assert local_server.read_state(env).port == 1
    assert local_server.running_server(env) is None and local_server.choose_api(env) == "temporary"


def _record(name: str, level: int, msg: str, error: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(error), error, None) if error is not None else None
    return logging.LogRecord(name, level, __file__, 1, msg, None, exc_info)


def test_user_errors_stay_off_the_console_and_everything_else_stays_on():
    keep = HideUserErrors().filter
    err = BadInputError("/data/oath", "most images are missing", "download the release again")
    assert not keep(_record("prefect.flow_runs", logging.ERROR, "Encountered exception during execution: x", err))
    assert not keep(_record("prefect.task_runs", logging.ERROR,
                            f"Finished in state Failed('Task run encountered an exception BadInputError: {err}')"))
    assert not keep(_record("prefect.flow_runs", logging.INFO,
                            "Finished in state Failed('Flow run encountered an exception: CheckpointError: x')"))
    assert not keep(_record("prefect.flow_runs", logging.ERROR, "boom", CheckpointError("bad checkpoint")))
    bug = ZeroDivisionError("division by zero")
    assert keep(_record("prefect.flow_runs", logging.ERROR, "Encountered exception during execution", bug))
    assert keep(_record("prefect.flow_runs", logging.INFO, "Finished in state Completed()"))
    assert keep(_record("prefect.task_runs", logging.WARNING, "FAILED x.cdf: truncated Fix: download again"))


def test_json_output_has_null_where_python_has_nan():
    value = {"images_per_second": float("nan"), "loss": [1.0, float("inf")], "n": 3}
    assert json.dumps(_json_ready(value), allow_nan=False) == '{"images_per_second": null, "loss": [1.0, null], "n": 3}'


def test_the_warm_runner_refuses_what_a_new_process_would_do_differently(tmp_path):
    """A command from another installation, with other import-time settings, or after a code change
    is not run by the runner (it runs in its own process); a matching one is."""
    from aurora_cli import command_runner

    runner = command_runner.Runner(tmp_path / "runner.sock")
    request = {"argv": ["ingest"], "env": dict(os.environ), "install": command_runner._install()}
    assert runner._refusal(request, [0, 1, 2]) is None
    other = {**request, "install": ["/other/venv/bin/python", "/other/aurora_pipeline", "/other/flows"]}
    assert "another installation" in runner._refusal(other, [0, 1, 2])
    settings = {**request, "env": {**request["env"], "OMP_NUM_THREADS": "7"}}
    assert "OMP_NUM_THREADS" in runner._refusal(settings, [0, 1, 2])
    assert runner._refusal(request, []) == "malformed request"
    runner.code = "something else"
    assert runner._refusal(request, [0, 1, 2]).startswith("the code changed")
    assert [Path(p).name for p in command_runner._install()[1:]] == ["aurora_pipeline", "flows", "aurora_cli"]


def test_the_code_fingerprint_covers_the_command_line_package():
    """Touching a .py file of aurora_cli (as of aurora_pipeline and flows) changes the warm runner's
    fingerprint, so a runner started before an edit of the command line restarts itself."""
    from aurora_cli import command_runner

    for package in ("aurora_pipeline", "flows", "aurora_cli"):
        marker = Path(__import__(package).__file__)
        info = marker.stat()
        before = command_runner.code_fingerprint()
        try:
            os.utime(marker, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
            assert command_runner.code_fingerprint() != before, package
        finally:
            os.utime(marker, ns=(info.st_atime_ns, info.st_mtime_ns))


def test_the_runners_warm_up_starts_no_thread_and_leaves_the_commands_settings_made():
    """The runner forks only with one thread; its warm-up makes what each child would redo."""
    from prefect.settings import get_current_settings

    from aurora_cli import command_runner, heartbeats

    heartbeats._QUIET.clear()
    threads = threading.active_count()
    command_runner.warm_up()
    assert threading.active_count() == threads
    [(settings, made)] = heartbeats._QUIET  # made by the warm-up, for these settings
    assert settings is get_current_settings() and made.flows.heartbeat_frequency is None
