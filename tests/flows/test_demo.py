"""The README's first command: the demo runs the whole chain end to end from the CLI.

`make demo` runs `aurora-pipeline demo --workdir demo_out` (15 epochs at 64 px, 120
frames in each of 8 site-hours); this test runs the same command at its quick setting (1
epoch at 32 px, 48 frames an hour) so that `make test` stays short, as a new user runs it:
none of the Prefect settings of tests/conftest.py, a new and empty Prefect home and no
server running, so Prefect's temporary server makes its first start (its database
migrations) within the command. The command runs once for the module; its demo folder is
then read by the checks of the printed figures and by the README's blocks that run on the
demo's store (tests/readme_blocks.py).
"""

import csv
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from readme_blocks import demo_store_blocks, printed_shape, run_blocks

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo command at its quick setting, once for this module: (workdir, its output, the summary file)."""
    tmp_path = tmp_path_factory.mktemp("demo")
    cli = Path(sys.executable).parent / "aurora-pipeline"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "DO_NOT_TRACK"}
    env["PREFECT_HOME"] = str(tmp_path / "new-home")
    done = subprocess.run([str(cli), "demo", "--workdir", str(tmp_path / "demo"), "--epochs", "1", "--image-size", "32",
                           "--frames-per-hour", "48"], env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return tmp_path, done, json.loads((tmp_path / "demo" / "demo_summary.json").read_text())


@pytest.mark.slow
def test_demo_command_runs_the_whole_chain(demo):
    tmp_path, done, summary = demo
    assert "no Prefect server is running, so Prefect starts a temporary one" in done.stderr
    assert (tmp_path / "new-home" / "prefect.db").is_file()  # its database, in the new home
    assert set(summary["store_summary"]["sites"]) == {"gako", "gill"}
    for site in summary["store_summary"]["sites"].values():
        assert site["frames"] == 4 * 48
        assert {"frames", "embedding", "label", "label_probability", "cluster"} <= set(site["variables"])
    assert 3 <= summary["best_k"] <= summary["k_max"] == 10
    assert all(Path(p).stat().st_size > 0 for p in summary["plots"])
    assert (tmp_path / "demo" / "keogram_gako.png").stat().st_size > 0
    events = (tmp_path / "demo" / "events.csv").read_text().splitlines()
    assert summary["n_events"] >= 2 and len(events) == summary["n_events"] + 1 and events[0].startswith("site,")
    both = done.stdout + done.stderr
    assert both.count("held-out accuracy on the synthetic labels") == 1, both[-4000:]  # the summary is printed once


@pytest.mark.slow
def test_demo_accuracies_are_named_for_their_frames_and_beat_chance(demo):
    tmp_path, done, summary = demo
    # the labels' most common class: what a classifier that learned nothing scores
    with open(tmp_path / "demo" / "archive" / "labels.csv") as f:
        classes = Counter(row["class"] for row in csv.DictReader(f))
    chance = max(classes.values()) / sum(classes.values())
    assert len(classes) >= 4 and chance < 0.5, classes
    # frames seconds apart are near copies, so even the 1-epoch encoder (and a random one) separate the
    # synthetic scenes well above chance, on any CPU kind
    for key in ("hour_cv_accuracy_all_hours_simclr", "hour_cv_accuracy_all_hours_random_init_encoder",
                "hour_cv_accuracy_fitted_hours_simclr"):
        assert summary[key] >= chance + 0.15, (key, summary[key], chance)
    assert summary["holdout_accuracy_simclr"] > 0.0
    # each figure is printed once, under the name of the frames it uses, and is the summary file's
    fitted = re.findall(r"hour-grouped cross-validated accuracy on the fitted hours \(the held-out hours left out\): "
                        r"(\d\.\d+)", done.stderr)
    assert len(fitted) == 1 and abs(float(fitted[0]) - summary["hour_cv_accuracy_fitted_hours_simclr"]) < 6e-4
    lines = done.stdout.splitlines()
    all_hours = [line for line in lines if "accuracy on all labelled hours" in line]
    fitted_hours = [line for line in lines if "accuracy on the fitted hours only" in line]
    assert len(all_hours) == 1 and len(fitted_hours) == 1, done.stdout[-3000:]
    assert f"SimCLR {summary['hour_cv_accuracy_all_hours_simclr']:.3f}" in all_hours[0]
    assert f"random-init encoder {summary['hour_cv_accuracy_all_hours_random_init_encoder']:.3f}" in all_hours[0]
    assert f"SimCLR {summary['hour_cv_accuracy_fitted_hours_simclr']:.3f}" in fitted_hours[0]
    # the random-init comparison says what it is doing while it runs
    assert len(re.findall(r"(SimCLR|randomly initialised) encoder: embedding \d+ labelled frames", done.stderr)) == 2


@pytest.mark.slow
def test_the_readme_blocks_run_on_the_demo_store_and_print_what_it_shows(demo):
    tmp_path, _, _ = demo
    blocks = demo_store_blocks(REPO / "README.md")
    assert len(blocks) >= 3  # reading back, open_sites, the worked example
    printed = run_blocks(blocks, tmp_path / "demo")
    for block, out in zip(blocks, printed):
        # the figures come from one `make demo` (README), this run is the quick setting: same rows and columns
        assert printed_shape(out) == printed_shape(block.printed), (block.line, out, block.printed)
    assert any(block.printed for block in blocks)
