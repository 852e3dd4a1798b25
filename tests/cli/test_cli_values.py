"""The command line refuses bad values at the edge, with the library's own message (issue 18).

Each command here is refused before any flow starts, so no Prefect server is needed; the
message after ``error:`` is the library's, word for word (tests/test_values.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.hours import time_range
from test_values import REVERSED, small_store

CLI = Path(sys.executable).parent / "aurora-pipeline"


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                          env={**os.environ, "AURORA_PIPELINE_NO_RUNNER": "1", **(env or {})})


def refused(done: subprocess.CompletedProcess, command: str) -> str:
    """The one error line of a refused command (exit 2, no traceback), after ``error: ``."""
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    prefix = f"aurora-pipeline {command}: error: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix):]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli-values") / "s.zarr"
    small_store(path)
    return path


def test_a_reversed_range_is_refused_by_every_command_with_one_message(store, tmp_path):
    with pytest.raises(BadInputError) as caught:
        time_range(*REVERSED)
    expected = str(caught.value)
    span = ["--start", REVERSED[0], "--end", REVERSED[1]]
    commands = {
        "embed": ["--store", str(store), "--checkpoint", str(tmp_path / "ck"), *span],
        "events": ["--store", str(store), *span],
        "similar": ["--store", str(store), "--site", "gako", "--time", "2011-01-06T04:00:03", *span],
        "keogram": ["--store", str(store), "--site", "gako", "--out", str(tmp_path / "k.png"), *span],
        "pretrain": ["--store", str(store), "--checkpoint", str(tmp_path / "ck"), *span],
    }
    for command, args in commands.items():
        assert refused(run(command, *args), command) == expected, command


@pytest.mark.parametrize("size", ["0", "-1"])
def test_ingest_image_size_zero_or_negative_is_refused_and_makes_no_store(tmp_path, size):
    done = run("ingest", "--archive", str(tmp_path), "--store", str(tmp_path / "new.zarr"), "--image-size", size)
    assert "image_size: must be a whole number of pixels in 8..512" in refused(done, "ingest")
    assert not (tmp_path / "new.zarr").exists()


@pytest.mark.parametrize("count", ["0", "-1"])
def test_pretrain_max_frames_below_one_is_one_line(store, tmp_path, count):
    done = run("pretrain", "--store", str(store), "--checkpoint", str(tmp_path / "ck"), "--max-frames", count)
    assert refused(done, "pretrain").startswith("--max-frames: must be a positive whole number")


def test_a_site_that_is_no_site_code_is_named_by_keogram_and_similar(store, tmp_path):
    done = run("keogram", "--store", str(store), "--site", "../x", "--out", str(tmp_path / "k.png"))
    assert refused(done, "keogram").startswith("--site: unknown THEMIS ASI site code(s) ['../x']")
    done = run("similar", "--store", str(store), "--site", "gakk", "--time", "2011-01-06T04:00:03")
    assert refused(done, "similar").startswith("--site: unknown THEMIS ASI site code(s) ['gakk']")
    done = run("events", "--store", str(store), "--sites", "gako,gakk")  # it did not check its codes
    assert refused(done, "events").startswith("--sites: unknown THEMIS ASI site code(s) ['gakk']")


def test_a_utc_offset_is_taken_as_ut_without_a_numpy_warning(store, tmp_path):
    done = run("keogram", "--store", str(store), "--site", "gako", "--start", "2011-01-06T09:00+05:00",
               "--end", "2011-01-06T10:00+05:00", "--out", str(tmp_path / "k.png"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "timezone" not in done.stderr and "Warning" not in done.stderr, done.stderr
    assert '"frames": 5' in done.stdout


def test_a_damaged_store_is_named_not_a_traceback(store, tmp_path):
    import shutil

    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(store, damaged)
    meta = damaged / "gako" / "2011" / "time" / "zarr.json"
    meta.write_text(meta.read_text()[:40])
    message = refused(run("events", "--store", str(damaged)), "events")
    assert message.startswith(f"{damaged}/gako/2011/time/zarr.json (array time of gako/2011): the store's metadata "
                              "is damaged"), message


def test_debug_says_why_the_warm_runner_is_not_used(store, tmp_path):
    home = tmp_path / "other-home"
    home.mkdir()
    done = subprocess.run([str(CLI), "--debug", "events", "--store", str(store), "--sites", "gakk"],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PREFECT_HOME": str(home)})
    assert (f"the warm runner is not used: no `aurora-pipeline server start` server is running for the Prefect "
            f"home {home}") in done.stderr, done.stderr[-3000:]


@pytest.mark.slow
def test_an_error_inside_a_flow_ends_the_output_with_our_line(prefect_server, tmp_path):
    """issue 18 item 17: Prefect's "EventsWorker - Still processing items" came after our error line.
    Prefect's services are drained before the line is printed, so it is the last one whatever they do."""
    empty = tmp_path / "empty.zarr"
    from aurora_pipeline.store import Store

    Store.open(empty, mode="a")  # a store with no frames: the flow's first task refuses it
    done = subprocess.run([str(CLI), "pretrain", "--store", str(empty), "--checkpoint", str(tmp_path / "ck"),
                           "--epochs", "1"], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                          env=prefect_server.env({"AURORA_PIPELINE_NO_RUNNER": "1"}))
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("aurora-pipeline pretrain: error: ") and "no frames for sites" in lines[-1], \
        done.stderr[-3000:]
