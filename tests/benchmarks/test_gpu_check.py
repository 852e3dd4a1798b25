"""The prepared GPU check (benchmarks/gpu_check.py) at its tiny CPU setting: every step runs
and the JSON and markdown say what was measured; a budget too short skips steps, saying so."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
STEPS = ["environment", "correctness", "bare_model", "embed_store", "pretrain_epoch", "oath"]


def cpu_has_native_bf16() -> bool:
    """What the kernel says of this CPU: bf16 dot products in hardware (AVX512-BF16 or AMX tiles)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from (not Linux)")
    flags = {flag for line in cpuinfo.read_text().splitlines() if line.startswith("flags")
             for flag in line.split(":", 1)[1].split()}
    return bool(flags & {"avx512_bf16", "amx_tile"})


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_tiny_cpu_run_writes_every_step(gpu_check, tmp_path, one_thread):
    out, work = tmp_path / "out", tmp_path / "work"
    rc = gpu_check.main(["--out", str(out), "--work", str(work), "--device", "cpu", "--setting", "tiny", "--threads", "1"])
    results = json.loads((out / "results.json").read_text())
    assert results["format"] == "aurora-pipeline gpu check" and results["finished"]
    assert results["setting"]["name"] == "tiny" and results["device"] == "cpu"
    steps = results["steps"]
    assert list(steps) == STEPS
    assert {name: s["status"] for name, s in steps.items()} == dict.fromkeys(STEPS, "ok"), steps
    assert rc == 0
    assert steps["environment"]["result"]["native_bf16"] is cpu_has_native_bf16(), steps["environment"]

    checks = steps["correctness"]["result"]["checks"]
    assert len(checks) == 3 and all(c["passed"] for c in checks)
    cosine = checks[0]
    # float32 on both sides agrees to rounding; bf16 autocast (the default where the CPU has native bf16) to ~1e-4
    floor = 0.999 if cosine["name"].startswith("embedding cosine, bf16 autocast") else 0.99999
    assert cosine["frames"] == 8 and floor <= cosine["worst"] <= cosine["mean"] <= 1.0 + 1e-6, cosine
    assert checks[2]["loss_after"] < checks[2]["loss_before"]

    bare = steps["bare_model"]["result"]
    assert len(bare["forward_frames_per_second"]) >= 4 and all(v > 0 for v in bare["forward_frames_per_second"].values())
    assert len(bare["train_frames_per_second"]) == 2

    embed = steps["embed_store"]["result"]
    assert embed["frames"] == 2 * 16 and embed["files"] == 2  # 1 site x 2 hours x 16 frames, all embedded
    assert embed["runs"][0]["driver_summary"]["frames"] == 32 and embed["vs_bare"] > 0
    assert (work / "store.zarr").exists()

    pre = steps["pretrain_epoch"]["result"]
    assert pre["frames"] == 3 * 8 and pre["frames_per_second"] > 0 and pre["vs_bare"] > 0

    oath = steps["oath"]["result"]
    assert oath["images"] == 60 and oath["epochs_run"] == 1 and oath["splits"] == [0, 1]
    assert oath["extrapolated_100_epochs_seconds"] > oath["total_seconds"] > oath["timings_seconds"]["pretrain"] > 0
    assert 0.0 <= oath["simclr_linear_accuracy_mean"] <= 1.0

    goals = results["goals"]
    assert goals["embed_vs_bare"]["measured"] == pytest.approx(embed["vs_bare"])
    assert goals["applies"].startswith("no: this was the tiny CPU setting")

    report = (out / "report.md").read_text()
    for heading in ("# GPU check (tiny setting)", "## Correctness", "## The bare model", "## Throughput", "## Goals"):
        assert heading in report
    assert "embedding from a Zarr store, 32 frames" in report and "extrapolated to 100 epochs" in report
    assert "| oath | ok |" in report


def test_budget_too_short_skips_every_step_and_says_why(gpu_check, tmp_path):
    out = tmp_path / "out"
    rc = gpu_check.main(["--out", str(out), "--device", "cpu", "--budget-s", "0"])
    results = json.loads((out / "results.json").read_text())
    assert rc == 0 and results["finished"]
    assert [s["status"] for s in results["steps"].values()] == ["skipped"] * len(STEPS)
    assert "s of the budget left" in results["steps"]["oath"]["reason"]
    assert all(g["measured"] is None for name, g in results["goals"].items() if name != "applies")
    assert "| embed_store | skipped |" in (out / "report.md").read_text()


def test_unknown_step_is_refused(gpu_check, tmp_path):
    with pytest.raises(SystemExit):
        gpu_check.main(["--out", str(tmp_path), "--device", "cpu", "--steps", "environment,warp"])
