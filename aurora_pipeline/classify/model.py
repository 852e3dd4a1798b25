"""Linear classifier on frozen SimCLR embeddings (paper section III.D).

The paper fits an l2-regularised logistic regression (scikit-learn) to the encoder's
representations and reports 5-fold cross-validated accuracy, precision, recall and F1
(Table I) and a confusion matrix (Fig. 3). This module does the same on arrays:

    X  (n, d) float   embeddings, one row per frame
    y  (n,)   str     class names ("arc", "diffuse", ...)

The fitted model is kept as plain arrays (``LinearClassifier``) so that applying it
to a billion frames needs only numpy, and so that it can be saved without pickle:
``classifier.json`` (class names, ids, config, metrics, versions) next to
``classifier.npz`` (coef, intercept, scaler mean and scale; ``allow_pickle=False``).
Its ``classifier_id`` is a hash of everything that decides its predictions, checked on
every load.

Example:
    >>> clf = fit_classifier(X, y, ClassifierConfig(), encoder_id="simclr-3f2a...")
    >>> metrics = cross_validate(X, y, ClassifierConfig())
    >>> save_classifier(clf, "out/classifier", metrics=metrics)
    >>> clf = load_classifier("out/classifier", expected_encoder_id="simclr-3f2a...")
    >>> proba = clf.predict_proba(X_new)        # (m, k) float32, rows sum to 1
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from aurora_pipeline.artifact import SavedModel, read_artifact
from aurora_pipeline.classify.config import ClassifierConfig  # the settings live there (light); re-exported
from aurora_pipeline.errors import BadInputError, CheckpointError
import warnings

CLASSIFIER_FORMAT = "aurora-pipeline-classifier"


@dataclass(frozen=True, eq=False)
class LinearClassifier(SavedModel):
    """A fitted softmax classifier, as plain arrays.

    Attributes:
        coef: (k, d) float64 weights on standardised features. A two-class model from
            scikit-learn (one weight row) is stored expanded as rows [0, w].
        intercept: (k,) float64.
        class_names: the k class names; column j of ``predict_proba`` is class_names[j].
        mean, scale: (d,) float64; features are ``(X - mean) / scale`` before ``coef``
            (zeros and ones when the config has ``standardize=False``).
        encoder_id: id of the encoder whose embeddings the model was fitted on.
        config: the ClassifierConfig it was fitted with.
        classifier_id: content hash of all of the above (computed, not given).
    """

    coef: np.ndarray
    intercept: np.ndarray
    class_names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    encoder_id: str
    config: ClassifierConfig
    classifier_id: str = field(init=False)
    ID_PREFIX, ID_FIELD, STEM, FORMAT = "clf", "classifier_id", "classifier", CLASSIFIER_FORMAT

    @property
    def n_features(self) -> int:
        return int(self.coef.shape[1])

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef, "intercept": self.intercept, "mean": self.mean, "scale": self.scale}

    def _hashed_meta(self) -> dict:
        return {"class_names": list(self.class_names), "encoder_id": self.encoder_id,
                "config": dataclasses.asdict(self.config)}

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits, (n, k) float64. Raises BadInputError on a wrong shape or non-finite values."""
        X = check_features(X, "X", self.n_features)
        return ((X - self.mean) / self.scale) @ self.coef.T + self.intercept

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, (n, k) float32, each row sums to 1 (softmax of the logits)."""
        z = self.decision_function(X)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z.astype(np.float32)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Index into ``class_names`` of the most probable class, (n,) int64."""
        return np.argmax(self.decision_function(X), axis=1)


# --------------------------------------------------------------------------- fitting


def fit_classifier(
    X: np.ndarray,
    y: Sequence[str],
    cfg: ClassifierConfig = ClassifierConfig(),
    encoder_id: str = "",
    class_names: Sequence[str] | None = None,
) -> LinearClassifier:
    """Fit the l2 logistic regression on all rows.

    Args:
        X: (n, d) embeddings. y: (n,) class names.
        encoder_id: id of the encoder that made X; required, it travels with the model.
        class_names: order of the classes (columns of predict_proba); default sorted names
            in y. Every listed class needs at least one row.
    Raises:
        BadInputError: shapes disagree, non-finite X, fewer than two classes, a class with
            no rows, labels outside ``class_names``, or no encoder_id.
    """
    if not isinstance(encoder_id, str) or not encoder_id:
        raise BadInputError("encoder_id", "is empty", "pass the id of the encoder that made these embeddings")
    X = check_features(X, "X")
    codes, names = _encode_labels(y, len(X), class_names)
    return _fit_codes(X, codes, names, cfg, encoder_id)


def _fit_codes(X: np.ndarray, codes: np.ndarray, names: tuple[str, ...], cfg: ClassifierConfig,
               encoder_id: str) -> LinearClassifier:
    # sklearn: only when fitting (the config and saved-model readers stay light)
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(codes, minlength=len(names))
    if (counts == 0).any():
        empty = [n for n, c in zip(names, counts) if c == 0]
        raise BadInputError("y", f"classes {empty} have no training rows", "drop them from class_names or add rows")
    if cfg.standardize:
        scaler = StandardScaler().fit(X)
        mean, scale = scaler.mean_.astype(np.float64), scaler.scale_.astype(np.float64)
    else:
        mean, scale = np.zeros(X.shape[1]), np.ones(X.shape[1])
    # penalty is l2 by default (l1_ratio=0); `penalty=` itself is deprecated in scikit-learn 1.8+.
    model = LogisticRegression(C=cfg.C, solver="lbfgs", max_iter=cfg.max_iter, random_state=cfg.seed)
    model.fit((X - mean) / scale, codes)
    coef, intercept = model.coef_.astype(np.float64), model.intercept_.astype(np.float64)
    if coef.shape[0] == 1:  # binary: P(class 1) = sigmoid(w.x + b) == softmax([0, w.x + b])[1]
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    return LinearClassifier(coef=coef, intercept=intercept, class_names=names, mean=mean, scale=scale,
                            encoder_id=encoder_id, config=cfg)


# --------------------------------------------------------------------------- metrics


def cross_validate(
    X: np.ndarray,
    y: Sequence[str],
    cfg: ClassifierConfig = ClassifierConfig(),
    class_names: Sequence[str] | None = None,
    splits: Iterable[tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict:
    """Cross-validated metrics of the classifier, as in Table I of the paper.

    By default ``cfg.cv_folds`` stratified, shuffled (``cfg.seed``) folds. ``splits`` may
    instead give explicit (train_index, test_index) pairs, e.g. OATH's published
    train/test permutations; their test sets may overlap.

    Returns the metrics dict described in ``classification_metrics``: ``accuracy`` is the mean of the
    per-fold accuracies and ``accuracy_std`` their standard deviation (ddof=0, as
    ``cross_val_score(...).std()``); precision, recall, F1 and the confusion matrix are
    computed from the test predictions of all folds pooled (the same as
    ``cross_val_predict`` for stratified folds).
    Raises:
        BadInputError: as fit_classifier, or a class with fewer rows than folds.
    """
    X = check_features(X, "X")
    codes, names = _encode_labels(y, len(X), class_names)
    if splits is None:
        # sklearn: only when cross-validating
        from sklearn.model_selection import StratifiedKFold

        counts = np.bincount(codes, minlength=len(names))
        if counts.min() < cfg.cv_folds:
            few = {n: int(c) for n, c in zip(names, counts) if c < cfg.cv_folds}
            raise BadInputError("y", f"classes with fewer rows than the {cfg.cv_folds} folds: {few}",
                                "label more frames of those classes or lower cv_folds (--cv-folds)")
        folder = StratifiedKFold(n_splits=cfg.cv_folds, shuffle=True, random_state=cfg.seed)
        splits = folder.split(np.zeros(len(codes)), codes)
    fold_acc, all_true, all_pred = [], [], []
    for train, test in splits:
        train, test = np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)
        model = _fit_codes(X[train], codes[train], names, cfg, encoder_id="cross-validation")
        pred = model.predict(X[test])
        fold_acc.append(float(np.mean(pred == codes[test])))
        all_true.append(codes[test])
        all_pred.append(pred)
    if not fold_acc:
        raise BadInputError("splits", "is empty", "pass at least one (train_index, test_index) pair")
    out = classification_metrics(np.concatenate(all_true), np.concatenate(all_pred), names, kind="cross_validation")
    out.update(accuracy=float(np.mean(fold_acc)), accuracy_std=float(np.std(fold_acc)), fold_accuracies=fold_acc)
    return out


def group_folds(y: np.ndarray, groups: np.ndarray, cfg: ClassifierConfig) -> list | None:
    """Cross-validation folds that keep each group (a site-hour) whole, stratified by class as
    far as possible: ``cfg.cv_folds`` of them, or fewer when there are fewer groups or a class
    lives in too few groups; None when no split into whole groups (of at least 2 folds) leaves
    every class in every training part."""
    # sklearn: only when cross-validating
    from sklearn.model_selection import StratifiedGroupKFold

    y, groups = np.asarray(y), np.asarray(groups)
    classes = set(y.tolist())
    for n_splits in range(min(cfg.cv_folds, len(set(groups.tolist()))), 1, -1):
        folder = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=cfg.seed)
        with warnings.catch_warnings():  # "the least populated class has only n members": handled below
            warnings.simplefilter("ignore", UserWarning)
            folds = list(folder.split(np.zeros(len(y)), y, groups=groups))
        if all(set(y[train].tolist()) == classes for train, _ in folds):  # every fold can learn every class
            return folds
    return None


def cross_validate_by_group(X: np.ndarray, y: Sequence[str], groups: Sequence[str],
                            cfg: ClassifierConfig = ClassifierConfig(),
                            class_names: Sequence[str] | None = None) -> dict:
    """Cross-validated metrics with folds of whole groups (site-hours), or what can be measured.

    Frames seconds apart are near copies, so folds that split an hour score the classifier on
    frames it has practically seen. The result is ``cross_validate``'s dict plus ``scheme``,
    ``folds`` and ``note``:

    - ``"hour_grouped"``: ``folds`` folds of whole groups; ``note`` says why when fewer than
      ``cfg.cv_folds`` (fewer groups than folds, or a class in too few groups);
    - ``"frame_stratified"``: no split into whole groups leaves every class in every training
      part (e.g. one site-hour), so stratified folds over frames; optimistic, and ``note`` says so;
    - ``"none"``: not even that (a class has a single frame): the metrics are None and
      ``training_accuracy`` is the accuracy on the fitted rows themselves (optimistic).

    Raises:
        BadInputError: as fit_classifier.
    """
    X = check_features(X, "X")
    y, groups = np.asarray(y).astype(str), np.asarray(groups).astype(str)
    codes, names = _encode_labels(y, len(X), class_names)
    n_groups, asked = len(set(groups.tolist())), cfg.cv_folds
    folds = group_folds(y, groups, cfg)
    if folds is not None:
        out = cross_validate(X, y, cfg, class_names=names, splits=folds)
        note = None
        if len(folds) < asked:
            note = (f"{len(folds)}-fold instead of {asked}-fold: " + (
                f"only {n_groups} site-hours" if n_groups < asked else
                "a class lives in too few site-hours for more whole-hour folds"))
        return {**out, "scheme": "hour_grouped", "folds": len(folds), "note": note}
    counts = np.bincount(codes, minlength=len(names))
    k = int(min(asked, counts.min()))
    why = (f"hour-grouped cross-validation cannot run: {n_groups} site-hour(s), and no split into "
           f"at least 2 folds of whole hours leaves every class in every training part")
    if k >= 2:
        folder_cfg = dataclasses.replace(cfg, cv_folds=k)
        out = cross_validate(X, y, folder_cfg, class_names=names)
        return {**out, "scheme": "frame_stratified", "folds": k,
                "note": why + f"; {k}-fold stratified over frames instead, optimistic (frames of one hour "
                              "fall in both the fitted and the scored part)"}
    model = _fit_codes(X, codes, names, cfg, encoder_id="training-accuracy")
    few = [n for n, c in zip(names, counts) if c < 2]
    return {"kind": "cross_validation", "scheme": "none", "folds": 0, "class_names": list(names),
            "n_samples": int(len(y)), "accuracy": None, "accuracy_std": None, "fold_accuracies": [],
            "precision": None, "recall": None, "f1": None, "confusion_matrix": None,
            "training_accuracy": float(np.mean(model.predict(X) == codes)),
            "note": why + f"; nor can frame-level folds (class(es) {few} have a single frame): "
                          "only the accuracy on the fitted frames themselves is reported (optimistic). "
                          "Label more frames and hours for a real estimate"}


def evaluate(clf: LinearClassifier, X: np.ndarray, y: Sequence[str]) -> dict:
    """Metrics of a fitted classifier on a held-out set; the same dict as cross_validate,
    with ``accuracy_std`` None and one entry in ``fold_accuracies``.

    Raises:
        BadInputError: shapes disagree, or y holds names the classifier does not know.
    """
    X = check_features(X, "X", clf.n_features)
    codes, _ = _encode_labels(y, len(X), clf.class_names)
    out = classification_metrics(codes, clf.predict(X), clf.class_names, kind="held_out")
    out.update(accuracy_std=None, fold_accuracies=[out["accuracy"]])
    return out


def classification_metrics(true: np.ndarray, pred: np.ndarray, names: tuple[str, ...], kind: str) -> dict:
    """JSON-ready metrics: kind, class_names, n_samples, accuracy, precision/recall/f1/support
    per class ({name: value}), their unweighted means (*_macro, as in Table I), and
    confusion_matrix (list of k rows: row = true class, column = predicted class)."""
    # sklearn: only when scoring
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = np.arange(len(names))
    p, r, f, s = precision_recall_fscore_support(true, pred, labels=labels, zero_division=0)
    cm = confusion_matrix(true, pred, labels=labels)
    per_class = lambda values, cast=float: {n: cast(v) for n, v in zip(names, values)}  # noqa: E731
    return {
        "kind": kind,
        "class_names": list(names),
        "n_samples": int(len(true)),
        "accuracy": float(np.mean(true == pred)),
        "precision": per_class(p), "recall": per_class(r), "f1": per_class(f), "support": per_class(s, int),
        "precision_macro": float(np.mean(p)), "recall_macro": float(np.mean(r)), "f1_macro": float(np.mean(f)),
        "confusion_matrix": cm.astype(int).tolist(),
    }


# --------------------------------------------------------------------------- saving


def save_classifier(clf: LinearClassifier, out_dir: str | os.PathLike, metrics: dict | None = None,
                    *, overwrite: bool = False) -> Path:
    """Write ``classifier.npz`` then ``classifier.json`` into ``out_dir`` (each atomically).

    Saving the same classifier again is allowed (a rerun rewrites the same files); a
    different classifier already there is refused unless ``overwrite``.
    Returns the path of classifier.json. Raises BadInputError when refusing to overwrite.
    """
    # sklearn (for its version): only when saving
    import sklearn

    return clf.write(out_dir, {"n_features": clf.n_features, "metrics": metrics,
                               "scikit_learn_version": sklearn.__version__}, overwrite)


def load_classifier(path: str | os.PathLike, expected_encoder_id: str | None = None) -> LinearClassifier:
    """Load a classifier saved by save_classifier (``path``: its directory or either file).

    Raises:
        CheckpointError: missing, truncated or foreign files; content hash mismatch; or
            fitted on another encoder than ``expected_encoder_id``.
    """
    meta, arrays, json_path = read_artifact(Path(path), "classifier", CLASSIFIER_FORMAT,
                                             ("coef", "intercept", "mean", "scale"))
    fix = "refit with `aurora-pipeline fit-classifier` and save again"
    try:
        cfg = ClassifierConfig(**meta["config"])
        clf = LinearClassifier(coef=arrays["coef"], intercept=arrays["intercept"],
                               class_names=tuple(str(n) for n in meta["class_names"]),
                               mean=arrays["mean"], scale=arrays["scale"],
                               encoder_id=str(meta["encoder_id"]), config=cfg)
        k, d = clf.coef.shape
        if clf.intercept.shape != (k,) or clf.mean.shape != (d,) or clf.scale.shape != (d,) \
                or len(clf.class_names) != k:
            raise ValueError("array shapes disagree")
    except (KeyError, TypeError, ValueError, BadInputError) as exc:
        raise CheckpointError(f"{json_path}: not a valid classifier ({exc}). Fix: {fix}.") from exc
    clf.check_loaded(json_path, meta, expected_encoder_id, "refit with `aurora-pipeline fit-classifier` on this store")
    return clf


# ------------------------------------------------- shared by classify and cluster


def check_features(X: Any, name: str, n_features: int | None = None) -> np.ndarray:
    """X as a finite (n, d) float64 array; BadInputError otherwise."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0 or X.dtype.kind not in "fiu":
        raise BadInputError(name, f"must be a non-empty (n, d) numeric array, got shape {X.shape} dtype {X.dtype}",
                            "pass one embedding row per frame")
    if n_features is not None and X.shape[1] != n_features:
        raise BadInputError(name, f"has {X.shape[1]} features, the model expects {n_features}",
                            "use embeddings from the encoder the model was fitted on")
    X = X.astype(np.float64, copy=False)
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise BadInputError(name, f"{int(bad.sum())} rows hold NaN or inf (first row {int(np.argmax(bad))})",
                            "re-embed those frames or drop them")
    return X


def _encode_labels(y: Sequence[str], n: int, class_names: Sequence[str] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class-name labels -> (codes (n,) int64 into names, names)."""
    y = np.asarray(y)
    if y.shape != (n,):
        raise BadInputError("y", f"must have one label per row of X ({n}), got shape {y.shape}", "align y with X")
    y = y.astype(str)
    names = tuple(sorted(set(y.tolist()))) if class_names is None else tuple(str(c) for c in class_names)
    if len(names) < 2:
        raise BadInputError("y", f"needs at least two classes, got {list(names)}", "label frames of other classes")
    if len(set(names)) != len(names):
        raise BadInputError("class_names", f"has duplicates: {list(names)}", "list each class once")
    lookup = {c: i for i, c in enumerate(names)}
    unknown = sorted(set(y.tolist()) - set(lookup))
    if unknown:
        raise BadInputError("y", f"holds classes {unknown} that are not among {list(names)}",
                            "fix the labels or use a classifier fitted with those classes")
    return np.fromiter((lookup[c] for c in y.tolist()), dtype=np.int64, count=n), names


