"""Tests of aurora_pipeline.classify.model: the linear classifier on embeddings."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from aurora_pipeline.classify.model import (
    ClassifierConfig,
    cross_validate,
    cross_validate_by_group,
    evaluate,
    fit_classifier,
    load_classifier,
    save_classifier,
)
from aurora_pipeline.errors import BadInputError, CheckpointError

NAMES = np.array(["arc", "diffuse", "discrete", "cloudy", "moon", "clear"])


def _data(n=360, d=12, n_classes=6, seed=0):
    """Overlapping Gaussian classes (so predictions are not all certain), features on unequal scales."""
    rng = np.random.default_rng(seed)
    codes = np.arange(n) % n_classes
    centers = rng.normal(scale=1.5, size=(n_classes, d))
    X = centers[codes] + rng.normal(size=(n, d))
    X *= np.linspace(0.1, 20.0, d)  # standardisation matters
    return X, NAMES[codes]


def _sklearn_pipeline(cfg):
    return make_pipeline(StandardScaler(), LogisticRegression(C=cfg.C, max_iter=cfg.max_iter))


def test_predict_proba_equals_sklearn_multiclass():
    X, y = _data()
    cfg = ClassifierConfig(C=0.5)
    clf = fit_classifier(X, y, cfg, encoder_id="enc-a")
    ref = _sklearn_pipeline(cfg).fit(X, y)
    assert clf.class_names == tuple(ref.classes_)
    proba = clf.predict_proba(X)
    assert proba.dtype == np.float32 and proba.shape == (len(X), 6)
    np.testing.assert_allclose(proba, ref.predict_proba(X), atol=1e-5)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert proba.max(axis=1).min() < 0.9  # some rows are uncertain: the comparison is not trivial
    np.testing.assert_array_equal(np.asarray(clf.class_names)[clf.predict(X)], ref.predict(X))


def test_predict_proba_equals_sklearn_binary_and_unstandardized():
    X, y = _data(n_classes=2)
    cfg = ClassifierConfig(standardize=False)
    clf = fit_classifier(X, y, cfg, encoder_id="enc-a")
    ref = LogisticRegression(C=cfg.C, max_iter=cfg.max_iter).fit(X, y)
    assert clf.coef.shape == (2, X.shape[1])  # sklearn's single row expanded to two classes
    np.testing.assert_allclose(clf.predict_proba(X), ref.predict_proba(X), atol=1e-5)
    np.testing.assert_array_equal(clf.mean, 0.0)


def test_class_names_fix_the_column_order():
    X, y = _data()
    order = ("moon", "arc", "clear", "cloudy", "diffuse", "discrete")
    by_name = fit_classifier(X, y, ClassifierConfig(), "enc-a", class_names=order)
    default = fit_classifier(X, y, ClassifierConfig(), "enc-a")
    assert by_name.class_names == order
    cols = [default.class_names.index(c) for c in order]
    np.testing.assert_allclose(by_name.predict_proba(X), default.predict_proba(X)[:, cols], atol=1e-4)


def test_cross_validate_matches_sklearn_and_counts_every_row():
    X, y = _data()
    cfg = ClassifierConfig(cv_folds=4, seed=3)
    m = cross_validate(X, y, cfg)
    folds = StratifiedKFold(n_splits=4, shuffle=True, random_state=3)
    scores = cross_val_score(_sklearn_pipeline(cfg), X, y, cv=folds)
    assert m["accuracy"] == pytest.approx(scores.mean(), abs=1e-9)
    assert m["accuracy_std"] == pytest.approx(scores.std(), abs=1e-9)
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (6, 6) and cm.sum() == len(X)
    assert dict(zip(m["class_names"], cm.sum(axis=1).tolist())) == {n: 60 for n in NAMES}  # rows = true class
    assert m["accuracy"] < 1.0 and m["n_samples"] == len(X)
    assert set(m["precision"]) == set(NAMES) and 0 < m["f1_macro"] <= 1
    json.dumps(m)  # JSON-ready as it is


def test_cross_validate_with_given_overlapping_splits():
    X, y = _data()
    rng = np.random.default_rng(0)
    perms = [rng.permutation(len(X)) for _ in range(3)]
    splits = [(p[:250], p[250:]) for p in perms]  # OATH style: first 70% train, rest test
    m = cross_validate(X, y, ClassifierConfig(), splits=splits)
    assert len(m["fold_accuracies"]) == 3
    assert m["n_samples"] == 3 * 110 and np.sum(m["confusion_matrix"]) == 330


def test_cross_validate_refuses_classes_smaller_than_folds():
    X, y = _data(n=40)
    y = y.copy()
    y[np.flatnonzero(y == "moon")[3:]] = "arc"  # moon keeps 3 rows
    with pytest.raises(BadInputError, match="moon"):
        cross_validate(X, y, ClassifierConfig(cv_folds=5))


def test_evaluate_on_held_out_rows():
    X, y = _data(seed=1)
    clf = fit_classifier(X[:300], y[:300], ClassifierConfig(), "enc-a")
    m = evaluate(clf, X[300:], y[300:])
    assert m["kind"] == "held_out" and m["n_samples"] == 60
    assert m["accuracy"] == pytest.approx(np.mean(np.asarray(clf.class_names)[clf.predict(X[300:])] == y[300:]))
    with pytest.raises(BadInputError, match="aurora"):
        evaluate(clf, X[:2], ["arc", "aurora"])


def test_bad_inputs_are_refused():
    X, y = _data()
    with pytest.raises(BadInputError, match="NaN"):
        Xn = X.copy()
        Xn[5, 2] = np.nan
        fit_classifier(Xn, y, ClassifierConfig(), "enc-a")
    with pytest.raises(BadInputError, match="one label per row"):
        fit_classifier(X, y[:-1], ClassifierConfig(), "enc-a")
    with pytest.raises(BadInputError, match="two classes"):
        fit_classifier(X, np.full(len(X), "arc"), ClassifierConfig(), "enc-a")
    with pytest.raises(BadInputError, match="encoder_id"):
        fit_classifier(X, y, ClassifierConfig(), "")
    clf = fit_classifier(X, y, ClassifierConfig(), "enc-a")
    with pytest.raises(BadInputError, match="features"):
        clf.predict_proba(X[:, :5])
    with pytest.raises(BadInputError, match="C"):
        ClassifierConfig(C=0)
    with pytest.raises(BadInputError, match="penalty"):
        ClassifierConfig.from_dict({"C": 1.0, "penalty": "l1"})
    assert ClassifierConfig.from_dict({"C": 2.0}).C == 2.0


# ------------------------------------------------------------------ saving


@pytest.fixture
def saved(tmp_path):
    X, y = _data()
    clf = fit_classifier(X, y, ClassifierConfig(), "enc-a")
    metrics = cross_validate(X, y, ClassifierConfig())
    save_classifier(clf, tmp_path / "clf", metrics=metrics)
    return clf, X, tmp_path / "clf"


def test_save_load_round_trip_without_pickle(saved):
    clf, X, out = saved
    assert sorted(p.name for p in out.iterdir()) == ["classifier.json", "classifier.npz"]
    with np.load(out / "classifier.npz", allow_pickle=False) as npz:
        assert set(npz.files) == {"coef", "intercept", "mean", "scale"}
    doc = json.loads((out / "classifier.json").read_text())
    assert doc["classifier_id"] == clf.classifier_id and doc["encoder_id"] == "enc-a"
    assert doc["metrics"]["kind"] == "cross_validation" and doc["config"]["C"] == 1.0
    for path in (out, out / "classifier.json", out / "classifier.npz"):
        back = load_classifier(path, expected_encoder_id="enc-a")
        assert back.classifier_id == clf.classifier_id and back.class_names == clf.class_names
        np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))


def test_saving_again_is_idempotent_but_another_classifier_is_refused(saved):
    clf, X, out = saved
    save_classifier(clf, out)  # same content: fine
    y2 = np.where(np.arange(len(X)) % 2, "arc", "moon")
    other = fit_classifier(X, y2, ClassifierConfig(), "enc-a")
    with pytest.raises(BadInputError, match="overwrite"):
        save_classifier(other, out)
    save_classifier(other, out, overwrite=True)
    assert load_classifier(out).classifier_id == other.classifier_id


def test_load_refuses_another_encoder(saved):
    _, _, out = saved
    with pytest.raises(CheckpointError) as err:
        load_classifier(out, expected_encoder_id="enc-b")
    text = str(err.value)
    assert "enc-a" in text and "enc-b" in text and "aurora-pipeline fit-classifier" in text and str(out) in text


def test_load_refuses_truncated_foreign_and_tampered_files(saved, tmp_path):
    _, _, out = saved
    npz = out / "classifier.npz"
    good = npz.read_bytes()
    npz.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_classifier(out)
    arrays = dict(np.load(io.BytesIO(good), allow_pickle=False))
    arrays["coef"] = arrays["coef"] * 1.01
    with open(npz, "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(CheckpointError, match="does not match"):
        load_classifier(out)
    npz.write_bytes(good)
    load_classifier(out)  # restored: fine again

    (out / "classifier.json").write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError, match="not a aurora-pipeline-classifier"):
        load_classifier(out)
    (out / "classifier.json").write_text('{"format": "aurora-pi')
    with pytest.raises(CheckpointError, match="truncated JSON"):
        load_classifier(out)
    with pytest.raises(CheckpointError, match="no such file"):
        load_classifier(tmp_path / "nowhere")


# --- cross-validation by whole site-hours, and what can be measured when it cannot run -------


def _hours(n: int, n_hours: int) -> np.ndarray:
    return np.array([f"gako/20110106T{4 + i * n_hours // n:02d}" for i in range(n)])


def test_grouped_cv_keeps_every_hour_whole_with_the_asked_folds():
    X, y = _data(n=240, n_classes=2)
    hours = _hours(len(y), 6)
    cv = cross_validate_by_group(X, y, hours, ClassifierConfig(cv_folds=3))
    assert cv["scheme"] == "hour_grouped" and cv["folds"] == 3 and cv["note"] is None
    assert len(cv["fold_accuracies"]) == 3 and cv["n_samples"] == 240


def test_grouped_cv_with_fewer_hours_than_folds_says_so():
    X, y = _data(n=120, n_classes=2)
    cv = cross_validate_by_group(X, y, _hours(len(y), 2), ClassifierConfig(cv_folds=5))
    assert cv["scheme"] == "hour_grouped" and cv["folds"] == 2
    assert cv["note"] == "2-fold instead of 5-fold: only 2 site-hours"


def test_one_hour_falls_back_to_frame_folds_and_says_they_are_optimistic():
    X, y = _data(n=60, n_classes=3)
    cv = cross_validate_by_group(X, y, _hours(len(y), 1), ClassifierConfig())
    assert cv["scheme"] == "frame_stratified" and cv["folds"] == 5
    assert "cannot run: 1 site-hour(s)" in cv["note"] and "optimistic" in cv["note"]
    assert 0.0 <= cv["accuracy"] <= 1.0


def test_a_class_with_one_frame_leaves_only_the_training_accuracy():
    X, y = _data(n=60, n_classes=2)
    y = y.copy()
    y[0] = "moon"
    cv = cross_validate_by_group(X, y, _hours(len(y), 1), ClassifierConfig())
    assert cv["scheme"] == "none" and cv["accuracy"] is None and cv["confusion_matrix"] is None
    assert "['moon'] have a single frame" in cv["note"] and 0.0 <= cv["training_accuracy"] <= 1.0


def test_too_few_frames_for_the_folds_names_the_command_line_option():
    X, y = _data(n=12, n_classes=3)
    with pytest.raises(BadInputError, match=r"lower cv_folds \(--cv-folds\)"):
        cross_validate(X, y, ClassifierConfig(cv_folds=5))
