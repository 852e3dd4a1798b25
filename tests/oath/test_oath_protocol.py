"""The OATH reproduction protocol end to end on a tiny synthetic release: the library
function writes a complete run directory; plus the split bookkeeping, the report's quoted
rows and the refusals. The Prefect flow `oath-benchmark` runs as its deployment, through a
worker, in tests/flows/test_deployments.py (and from the command line in tests/cli/test_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aurora_pipeline._torchvision_compat import import_torchvision
from aurora_pipeline.encoder.checkpoint import load_encoder
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.oath.protocol import OathBenchmarkConfig, parse_splits, prepare_data, run_oath_benchmark
from aurora_pipeline.oath.report import render_report, table_markdown
from aurora_pipeline.oath.synth import write_synthetic_oath

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Tiny but complete: 1 SimCLR epoch, 1 supervised epoch, 32 x 32 frames, 2 split rows.
# float32: bf16 autocast is emulated, and slow, on many CPUs.
TINY = dict(epochs=1, batch_size=16, image_size=32, splits="0,1", supervised_epochs=1, mixed_precision=False,
            device="cpu", pixel_size=16, k_max=8, kmeans_n_init=2)


@pytest.fixture(scope="module")
def oath_dir(tmp_path_factory) -> Path:
    return write_synthetic_oath(tmp_path_factory.mktemp("oath") / "oath", n=60, seed=0)


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory) -> Path:
    """Stands in for torchvision's resnet18 ImageNet weights file (random values, same layout)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(import_torchvision().models.resnet18(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def library_run(oath_dir, imagenet_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    messages: list[str] = []
    cfg = OathBenchmarkConfig(**TINY, imagenet_weights=str(imagenet_file))
    results = run_oath_benchmark(oath_dir, out, cfg, progress=messages.append)
    return out, results, messages


def test_library_run_writes_every_file_of_the_run_directory(library_run):
    out, results, messages = library_run
    for name in ("report.md", "results.json", "embeddings.npz", "confusion_matrix_split0.png", "silhouette.png",
                 "montage_clusters.png", "montage_discrete_by_cluster.png"):
        assert (out / name).is_file(), f"{name} missing from the run directory"
    for name in results["figures"].values():
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE
    encoder, meta = load_encoder(out / "encoder")
    assert meta["model_id"] == results["encoder"]["model_id"]
    assert encoder(torch.rand(2, 1, 32, 32)).shape == (2, 512)
    assert any("SimCLR epoch 1/1" in m for m in messages)
    assert json.loads((out / "results.json").read_text()) == results  # the returned dict is the file


def test_results_hold_every_model_per_split_and_the_quoted_rows(library_run):
    _, results, _ = library_run
    models = results["models"]
    assert set(models) == {"simclr_linear", "supervised_resnet18", "supervised_resnet18_imagenet", "raw_pixels_linear"}
    for name, m in models.items():
        assert set(m["per_split"]) == {"0", "1"}, name
        for s, metrics in m["per_split"].items():
            assert metrics["n_train"] == 42 and metrics["n_test"] == 18  # round(0.7 * 60) / the rest
            cm = np.array(metrics["confusion_matrix"])
            assert cm.shape == (6, 6) and cm.sum() == 18
            assert metrics["accuracy"] == pytest.approx(np.trace(cm) / 18)
            assert 0.0 <= metrics["f1_macro"] <= 1.0
        accs = [m["per_split"][s]["accuracy"] for s in ("0", "1")]
        assert m["mean"]["accuracy"] == pytest.approx(np.mean(accs))
        assert m["std"]["accuracy"] == pytest.approx(np.std(accs))
    assert results["quoted"]["inception_v4_ridge"]["mean"]["accuracy"] == 0.8174
    assert results["quoted"]["inception_v4_ridge"]["std"]["accuracy"] == 0.0103
    assert results["data"]["full_release"] is False
    assert set(results["data"]["checksums_sha256"]) == {"classifications/classifications.csv",
                                                        "classifications/train_test_split.csv"}
    assert {"torch", "torchvision", "scikit_learn", "numpy", "aurora_pipeline"} <= set(results["versions"])
    assert results["device"]["type"] == "cpu"
    c = results["clustering"]
    assert c["ks"] == list(range(3, 9)) and c["best_k"] in c["ks"]
    assert c["best_silhouette"] == max(c["silhouettes"])
    assert np.array(c["cluster_by_class"]).sum() == 60 and len(c["cluster"]) == 60


def test_test_sets_are_the_rest_of_each_split_row(oath_dir, library_run):
    """The protocol's test labels for split s are those of row s of train_test_split.csv after
    its first 42 entries: their class counts must be the confusion matrix's row sums."""
    _, results, _ = library_run
    rows = np.loadtxt(oath_dir / "classifications" / "train_test_split.csv", delimiter=",").astype(int)
    table = (oath_dir / "classifications" / "classifications.csv").read_text().splitlines()
    header = table.index("class2,class6,picNum,picType,rotAng")
    class6 = np.array([int(line.split(",")[1]) for line in table[header + 1:]])
    for s in (0, 1):
        expected = np.bincount(class6[rows[s][42:]], minlength=6)
        cm = np.array(results["models"]["simclr_linear"]["per_split"][str(s)]["confusion_matrix"])
        assert cm.sum(axis=1).tolist() == expected.tolist()


def test_report_sets_ours_beside_the_papers_numbers(library_run):
    out, results, _ = library_run
    report = (out / "report.md").read_text()
    assert report == render_report(results)
    table = table_markdown(results)
    for quoted in ("| 81.7 | 1.0 | 83.0* | 84.3* | 83.6* | quoted |", "| 84.7 | 0.7 | 85.6 | 85.2 | 85.3 | paper |",
                   "| 90.9 | 0.7 | 91.6 | 91.5 | 91.5 | paper |"):
        assert quoted in table
    ours = results["models"]["simclr_linear"]
    assert f"| {100 * ours['mean']['accuracy']:.1f} | {100 * ours['std']['accuracy']:.1f} |" in table
    assert table in report
    assert "Not the full OATH release" in report and "epochs=1 (paper: 100)" in report
    assert "![confusion matrix](confusion_matrix_split0.png)" in report
    assert "| best k (highest mean silhouette) |" in report and "| 12 |" in report


def test_a_finished_run_directory_is_not_overwritten(library_run, oath_dir):
    out, _, _ = library_run
    before = (out / "results.json").read_bytes()
    with pytest.raises(BadInputError, match="refusing to overwrite"):
        run_oath_benchmark(oath_dir, out, OathBenchmarkConfig(**TINY))
    assert (out / "results.json").read_bytes() == before


def test_bad_settings_fail_before_any_work(oath_dir, tmp_path):
    with pytest.raises(BadInputError, match="unknown setting"):
        OathBenchmarkConfig.from_dict({"epochs": 1, "folds": 5})
    with pytest.raises(BadInputError, match="splits"):
        parse_splits("0,5")
    with pytest.raises(BadInputError, match="splits"):
        parse_splits("0,0")
    assert parse_splits(" 3, 1 ") == (3, 1)
    with pytest.raises(BadInputError, match="confusion_split"):
        OathBenchmarkConfig(splits="0,1", confusion_split=2)
    with pytest.raises(BadInputError, match="pixel_size"):
        OathBenchmarkConfig(image_size=32, pixel_size=64)
    with pytest.raises(BadInputError, match="k_max"):  # 60 images cannot hold 70 clusters: refused before loading
        prepare_data(oath_dir, tmp_path / "out", OathBenchmarkConfig(**{**TINY, "k_max": 70}))
    assert not (tmp_path / "out").exists()


def test_a_quick_run_is_quick_throughout_and_its_report_lists_what_is_not_the_papers():
    from aurora_pipeline.oath.protocol import OathBenchmarkConfig
    from aurora_pipeline.oath.report import changed_settings

    assert OathBenchmarkConfig().supervised_epochs == 30
    quick = OathBenchmarkConfig(epochs=2, image_size=32, device="cpu")
    assert quick.supervised_epochs == 1  # scaled with epochs
    assert OathBenchmarkConfig(epochs=2, supervised_epochs=5).supervised_epochs == 5
    assert OathBenchmarkConfig.from_dict(quick.to_dict()) == quick
    assert changed_settings(quick.to_dict()) == [
        "epochs=2 (paper: 100)", "image_size=32 (paper run: 128)", "supervised_epochs=1 (paper run: 30)"]
    assert changed_settings(OathBenchmarkConfig().to_dict()) == []


def test_a_given_checkpoint_is_evaluated_without_pretraining(library_run, oath_dir, tmp_path):
    from aurora_pipeline.embed.model import EmbedConfig, embed_frames
    from aurora_pipeline.oath.archive_classifier import oath_frames
    from aurora_pipeline.oath.dataset import load_oath
    from aurora_pipeline.ingest.preprocess import PreprocessConfig

    trained, _, _ = library_run
    messages: list[str] = []
    cfg = OathBenchmarkConfig(**{**TINY, "image_size": 64}, checkpoint=str(trained / "encoder"))
    results = run_oath_benchmark(oath_dir, tmp_path / "out", cfg, progress=messages.append)
    encoder, meta = load_encoder(trained / "encoder")
    assert results["encoder"]["model_id"] == meta["model_id"] and results["encoder"]["given"] is True
    assert not any("SimCLR epoch" in m for m in messages) and not (tmp_path / "out" / "encoder").exists()
    assert results["config"]["image_size"] == 32  # the encoder's input size, not the asked 64
    assert set(results["models"]) == {"simclr_linear", "raw_pixels_linear"}  # no supervised baselines
    assert len(results["models"]["simclr_linear"]["per_split"]) == 2 and results["clustering"]["best_k"] >= 3
    # the probe saw the OATH images framed as the encoder's frames (OATH framing at 32 px assumed: the
    # checkpoint predates recording a setting), embedded by that encoder
    ds = load_oath(oath_dir, expected_counts=None)
    frames = oath_frames(ds, np.arange(len(ds)), PreprocessConfig(image_size=32).setting())
    X = embed_frames(encoder, frames, EmbedConfig(device="cpu", mixed_precision=False), image_size=32)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "embeddings.npz")["embedding"], X, rtol=1e-4, atol=1e-5)
    assert "not pre-trained here" in (tmp_path / "out" / "report.md").read_text()
