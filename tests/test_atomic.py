"""aurora_pipeline.atomic: the one atomic-write helper, and the writers that use it."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from aurora_pipeline.atomic import atomic_file, atomic_path, atomic_write
from aurora_pipeline.pngio import write_png16

PACKAGE = Path(__file__).resolve().parents[1] / "aurora_pipeline"


def test_atomic_write_replaces_the_whole_file(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    atomic_write(target, "new")
    assert target.read_text() == "new"
    atomic_write(target, b"bytes")
    assert target.read_bytes() == b"bytes"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary left


def test_an_error_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as fh:
        fh.write(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_two_writers_of_one_file_get_different_temporaries(tmp_path):
    target = tmp_path / "f.png"
    with atomic_path(target) as one, atomic_path(target) as two:
        assert one != two and one.parent == two.parent == tmp_path
        assert one.name.startswith(".f.png.") and one.name.endswith(".tmp")
        one.write_bytes(b"1")
        two.write_bytes(b"2")
    assert target.read_bytes() == b"1"  # the outer block renamed last
    with atomic_path(tmp_path / "x.npz", suffix=".npz") as tmp:
        assert tmp.name.endswith(".tmp.npz")
        np.savez(tmp, a=np.arange(3))
    assert np.load(tmp_path / "x.npz")["a"].tolist() == [0, 1, 2]


def test_png_writer_leaves_nothing_behind_on_error(tmp_path):
    """The PNG writer used a fixed NAME.tmp (shared by concurrent writers, left behind on error)."""
    target = tmp_path / "sky.png"
    write_png16(target, np.zeros((4, 4, 3), np.uint16))
    assert [p.name for p in tmp_path.iterdir()] == ["sky.png"]
    (tmp_path / "sky.png.tmp").mkdir()  # a fixed temporary name is taken: the write must not depend on it
    write_png16(target, np.full((4, 4, 3), 7, np.uint16))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sky.png", "sky.png.tmp"]


def test_no_module_renames_files_by_hand():
    """os.replace / Path.replace appear only in the helper (and the resumable download, the
    unpacked folder's rename, whose fixed .part name is what lets a rerun resume)."""
    allowed = {"atomic.py", "oath/download.py"}
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("replace", "rename") \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "os" and name not in allowed:
                offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


def test_the_classifier_and_the_centroids_share_one_saved_model_base(tmp_path):
    from aurora_pipeline.artifact import SavedModel
    from aurora_pipeline.classify.model import ClassifierConfig, LinearClassifier, load_classifier
    from aurora_pipeline.cluster.model import Centroids, ClusterConfig, load_centroids

    clf = LinearClassifier(coef=np.ones((2, 3)), intercept=np.zeros(2), class_names=("arc", "diffuse"),
                           mean=np.zeros(3), scale=np.ones(3), encoder_id="simclr-x", config=ClassifierConfig())
    cl = Centroids(centroids=np.eye(3), encoder_id="simclr-x", config=ClusterConfig())
    assert isinstance(clf, SavedModel) and isinstance(cl, SavedModel)
    assert clf.classifier_id.startswith("clf-") and cl.centroids_id.startswith("kmeans-")
    clf.write(tmp_path / "c", {}, overwrite=False)
    cl.write(tmp_path / "k", {}, overwrite=False)
    assert load_classifier(tmp_path / "c").classifier_id == clf.classifier_id
    assert load_centroids(tmp_path / "k", expected_encoder_id="simclr-x").centroids_id == cl.centroids_id
