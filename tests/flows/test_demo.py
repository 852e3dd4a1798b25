"""The README's first command: the demo runs the whole chain end to end from the CLI.

`make demo` runs `aurora-pipeline demo --workdir demo_out` (15 epochs at 64 px, 120
frames in each of 8 site-hours); this test runs the same command at its quick setting (1
epoch at 32 px, 48 frames an hour) so that `make test` stays short, as a new user runs it:
none of the Prefect settings of tests/conftest.py, a new and empty Prefect home and no
server running, so Prefect's temporary server makes its first start (its database
migrations) within the command.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_command_runs_the_whole_chain(tmp_path):
    cli = Path(sys.executable).parent / "aurora-pipeline"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "DO_NOT_TRACK"}
    env["PREFECT_HOME"] = str(tmp_path / "new-home")
    done = subprocess.run([str(cli), "demo", "--workdir", str(tmp_path / "demo"), "--epochs", "1", "--image-size", "32",
                           "--frames-per-hour", "48"], env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "no Prefect server is running, so Prefect starts a temporary one" in done.stderr
    assert (tmp_path / "new-home" / "prefect.db").is_file()  # its database, in the new home
    summary = json.loads((tmp_path / "demo" / "demo_summary.json").read_text())
    assert set(summary["store_summary"]["sites"]) == {"gako", "gill"}
    for site in summary["store_summary"]["sites"].values():
        assert site["frames"] == 4 * 48
        assert {"frames", "embedding", "label", "label_probability", "cluster"} <= set(site["variables"])
    assert 3 <= summary["best_k"] <= 10
    for key in ("holdout_accuracy_simclr", "holdout_accuracy_random_init_encoder", "hour_cv_accuracy_simclr"):
        assert 0.0 <= summary[key] <= 1.0
    assert all(Path(p).stat().st_size > 0 for p in summary["plots"])
    assert (tmp_path / "demo" / "keogram_gako.png").stat().st_size > 0
    events = (tmp_path / "demo" / "events.csv").read_text().splitlines()
    assert summary["n_events"] >= 2 and len(events) == summary["n_events"] + 1 and events[0].startswith("site,")
    both = done.stdout + done.stderr
    assert both.count("held-out accuracy") == 1, both[-4000:]  # the summary is printed once
    assert done.stdout.count("hour-grouped cross-validated accuracy") == 1
