"""Tests of aurora_pipeline.plots: each figure is written as a PNG of the documented size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from aurora_pipeline import plots
from aurora_pipeline.errors import BadInputError

NAMES = ["arc", "diffuse", "discrete", "cloudy", "moon", "clear"]


def _png_size(path):
    assert path.stat().st_size > 1000
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im.size


def _inches(size):
    return size[0] / plots.DPI, size[1] / plots.DPI


def test_confusion_matrix_png(tmp_path):
    cm = np.array([[50, 3, 2, 0, 0, 1]] * 6) + np.eye(6, dtype=int) * 40
    path = plots.confusion_matrix_png(cm, NAMES, tmp_path / "figs" / "cm.png", title="fold 1")
    assert path == tmp_path / "figs" / "cm.png"
    assert _inches(_png_size(path)) == pytest.approx((1.0 * 6 + 2.5, 0.8 * 6 + 1.8), abs=0.02)
    with pytest.raises(BadInputError, match=r"\(6, 6\)"):
        plots.confusion_matrix_png(cm[:5], NAMES, tmp_path / "bad.png")
    with pytest.raises(BadInputError):
        plots.confusion_matrix_png(-cm, NAMES, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_silhouette_png(tmp_path):
    ks = np.arange(3, 16)
    sil = 0.2 - 0.002 * (ks - 12) ** 2
    path = plots.silhouette_png(ks, sil, 12, tmp_path / "sil.png", ground_truth_silhouette=0.011,
                                reference=(12, 0.212))
    assert _inches(_png_size(path)) == pytest.approx((6.4, 4.0), abs=0.02)
    with pytest.raises(BadInputError, match="best_k"):
        plots.silhouette_png(ks, sil, 2, tmp_path / "bad.png")
    with pytest.raises(BadInputError, match="one length"):
        plots.silhouette_png(ks, sil[:-1], 12, tmp_path / "bad.png")


def test_montage_png_rows_per_group(tmp_path):
    rng = np.random.default_rng(0)
    groups = {"cluster 0": rng.random((20, 32, 32)), "cluster 1": rng.integers(0, 256, (3, 32, 32), dtype=np.uint8),
              "cluster 2": np.zeros((0, 32, 32))}
    wide = _png_size(plots.montage_png(groups, tmp_path / "wide.png", n_per_group=8, title="clusters"))
    assert _inches(wide) == pytest.approx((1.2 * 8 + 1.2, 1.2 * 3 + 0.5), abs=0.02)
    tall = _png_size(plots.montage_png({f"c{i}": rng.random((4, 16, 16)) for i in range(8)},
                                       tmp_path / "tall.png", n_per_group=2))
    assert tall[1] > tall[0]
    with pytest.raises(BadInputError, match="H, W"):
        plots.montage_png({"a": rng.random((4, 16))}, tmp_path / "bad.png")
    with pytest.raises(BadInputError, match="empty"):
        plots.montage_png({}, tmp_path / "bad.png")


@pytest.fixture
def drawn(monkeypatch):
    """The Figures the plot functions save, in order (to read their texts)."""
    figures = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    return figures


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_silhouette_png_says_when_the_best_k_is_the_search_limit(tmp_path, drawn):
    ks = np.arange(3, 11)
    plots.silhouette_png(ks, 0.1 + 0.01 * ks, 10, tmp_path / "edge.png")
    plots.silhouette_png(ks, 0.2 - 0.002 * (ks - 6) ** 2, 6, tmp_path / "inside.png")
    at_limit, inside = (" ".join(_legend_texts(fig)) for fig in drawn)
    assert "best k = 10" in at_limit and "search limit k_max" in at_limit and "larger k" in at_limit
    assert "best k = 6" in inside and "limit" not in inside


def test_montage_row_labels_say_which_number_is_what(tmp_path, drawn):
    rng = np.random.default_rng(0)
    groups = {"cluster 0": rng.random((8, 16, 16)), "cluster 1": rng.random((3, 16, 16))}
    plots.montage_png(groups, tmp_path / "m.png", group_sizes={"cluster 0": 120, "cluster 1": 3})
    plots.montage_png({"S=0": rng.random((20, 16, 16))}, tmp_path / "all.png", n_per_group=4)
    sampled, whole = drawn
    rows = [ax.get_ylabel() for ax in sampled.axes if ax.get_ylabel()]
    assert rows == ["cluster 0\n120 frames, 8 shown", "cluster 1\n3 frames"]
    assert [ax.get_ylabel() for ax in whole.axes if ax.get_ylabel()] == ["S=0\n20 frames, 4 shown"]


def test_labels_along_night_png(tmp_path):
    n = 1200
    times = np.datetime64("2011-01-06T04:00:00.053", "ms") + np.arange(n) * np.timedelta64(3, "s")
    times[600:] += np.timedelta64(2, "h")  # a gap in the night
    labels = (np.arange(n) // 150) % 6
    labels[:10] = -1  # unlabelled frames
    plain = _png_size(plots.labels_along_night_png(times, labels, NAMES, tmp_path / "night.png", title="gako"))
    assert _inches(plain) == pytest.approx((10.0, 0.35 * 6 + 1.5), abs=0.02)
    proba = np.random.default_rng(0).dirichlet(np.ones(6), size=n)
    order = np.random.default_rng(1).permutation(n)  # any order of frames is accepted
    with_p = _png_size(plots.labels_along_night_png(times[order], labels[order], NAMES, tmp_path / "night_p.png",
                                                    probabilities=proba[order]))
    assert _inches(with_p) == pytest.approx((10.0, 0.35 * 6 + 1.5 + 1.8), abs=0.02)
    with pytest.raises(BadInputError, match="labels"):
        plots.labels_along_night_png(times, labels + 1, NAMES, tmp_path / "bad.png")  # 6 is out of range
    with pytest.raises(BadInputError, match="probabilities"):
        plots.labels_along_night_png(times, labels, NAMES, tmp_path / "bad.png", probabilities=proba[:, :3])
    with pytest.raises(BadInputError, match="datetime64"):
        plots.labels_along_night_png(np.arange(n), labels, NAMES, tmp_path / "bad.png")
