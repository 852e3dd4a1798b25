"""A classifier for the archive, fitted on OATH's labels: ``fit_oath_classifier``.

OATH (5,824 THEMIS frames labelled with six classes) is the one labelled set of THEMIS
frames. Here its images are embedded with a given encoder exactly as a store of that
encoder's preprocessing setting holds its frames (:func:`oath_frames`), the paper's l2
logistic regression is scored on OATH's reference splits (train on the first 70% of each
row, test on the rest) and then fitted on every image, and saved bound to the encoder's
model id: ``classify`` and the nightly run apply it to any store embedded by that encoder.

Example:
    >>> report = fit_oath_classifier("data/oath", "encoders/aurora-fm", "classifiers/oath")
    >>> report["splits"]["accuracy"], report["classifier_id"]
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from aurora_pipeline.classify.model import ClassifierConfig, cross_validate, fit_classifier, save_classifier
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.ingest.config import recorded_setting
from aurora_pipeline.ingest.preprocess import PreprocessConfig, fov_geometry, oath_images_to_frames, resize, to_uint8
from aurora_pipeline.oath.dataset import load_oath

_CHUNK = 256  # images decoded and converted at once (bounds the float copies)


def oath_frames(ds, indices: np.ndarray, setting: dict) -> np.ndarray:
    """OATH images as a store of ``setting`` (``PreprocessConfig.setting()``) holds frames: uint8 (n, s, s).

    OATH's images are already stretched and framed by the release (the sky in the circle of
    radius ~108 px, zero outside), so only the framing and size of the setting are applied:
    ``fov="oath"``: the whole image, uint8 by truncation, resized (:func:`oath_images_to_frames`);
    ``fov="circle"``: cropped to the setting's circle and its bounding square, resized, rounded.

    Raises:
        BadInputError: ``fov="elevation"`` (OATH's images carry no skymap).
    """
    cfg = PreprocessConfig(**recorded_setting(setting))
    if cfg.fov == "elevation":
        raise BadInputError("preprocess", "the encoder's frames were cut by a skymap's elevation (fov=elevation); "
                            "OATH's images carry no skymap", "use an encoder of a store without skymaps")
    out = np.empty((len(indices), cfg.image_size, cfg.image_size), np.uint8)
    for start in range(0, len(indices), _CHUNK):
        unit = ds.load_images(indices[start : start + _CHUNK], image_size=None)  # green / 65535, float32
        if cfg.fov == "oath":
            green = np.rint(unit.astype(np.float64) * 65535.0).astype(np.uint16)
            frames = oath_images_to_frames(green, cfg.image_size, cfg.oath_resize)
        else:
            rows, cols, mask = fov_geometry(unit.shape[1:], cfg)
            frames = to_uint8(resize(unit[:, rows, cols] * mask, cfg.image_size))
        out[start : start + len(frames)] = frames
    return out


def encoder_setting(meta: dict) -> tuple[dict, str | None]:
    """The preprocessing setting the checkpoint's frames are in, and a note when it had to be assumed."""
    if meta.get("preprocess") is not None:
        return meta["preprocess"], None
    size = int(meta["config"]["image_size"])
    return (PreprocessConfig(image_size=size).setting(),
            f"the checkpoint records no preprocessing setting; OATH framing at {size} px assumed")


def fit_oath_classifier(
    oath_dir: str | os.PathLike,
    checkpoint: str,
    out_dir: str | os.PathLike,
    cfg=None,
    *,
    splits: Sequence[int] = (0, 1, 2, 3, 4),
    train_fraction: float = 0.7,
    max_images_per_class: int | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress=None,
) -> dict[str, Any]:
    """Embed OATH with ``checkpoint``'s encoder, score the l2 logistic regression on the reference
    splits, fit it on all images and save it in ``out_dir`` bound to the encoder's model id.

    Args:
        cfg: a ``ClassifierConfig`` (None: the paper's, C = 1).
        splits: rows of ``train_test_split.csv`` scored (train on the first ``train_fraction``).
        max_images_per_class: a quick run on a subset (None: every image).

    Returns:
        JSON-ready: classifier_dir, classifier_id, encoder_id, n_images, class_names, the
        preprocessing setting used, ``splits`` (mean accuracy, std, per split, macro
        precision/recall/F1, confusion matrix pooled over the splits), embedding seconds and rate.

    Raises:
        BadInputError: OATH files missing or malformed, a split whose training part lacks a class,
            ``out_dir`` holding another classifier (without ``overwrite``).
        CheckpointError: the checkpoint is not a valid encoder checkpoint.
    """
    # torch: only when fitting (flows.classify imports this module without torch)
    from aurora_pipeline.embed.model import EmbedConfig, embed_frames
    from aurora_pipeline.encoder.checkpoint import load_encoder

    tell = progress or (lambda message: None)
    cfg = cfg or ClassifierConfig()
    model, meta = load_encoder(checkpoint, device)
    setting, note = encoder_setting(meta)
    ds = load_oath(oath_dir, expected_counts=None)
    if max_images_per_class is not None:
        ds = ds.subset(max_images_per_class, seed=cfg.seed)
    names = np.asarray(ds.class_names)
    y = names[ds.labels]
    pairs = [ds.split(int(i), train_fraction) for i in splits]
    for i, (train, _) in zip(splits, pairs):
        absent = sorted(set(ds.class_names) - set(y[train].tolist()))
        if absent:
            raise BadInputError(f"split {i}", f"its training part holds no image of {absent}",
                                "use more images per class (--max-images-per-class), or the whole release")
    tell(f"embedding {len(ds)} OATH images with {meta['model_id']} ({setting['fov']} framing, "
         f"{setting['image_size']} px frames, {meta['config']['image_size']} px input)")
    started = time.perf_counter()
    frames = oath_frames(ds, np.arange(len(ds)), setting)
    X = embed_frames(model, frames, EmbedConfig(device=device), image_size=int(meta["config"]["image_size"]))
    seconds = time.perf_counter() - started
    scored = cross_validate(X, y, cfg, class_names=ds.class_names, splits=pairs)
    clf = fit_classifier(X, y, cfg, encoder_id=meta["model_id"], class_names=ds.class_names)
    metrics = {**scored, "kind": "oath_reference_splits", "splits": list(map(int, splits)),
               "train_fraction": train_fraction, "oath": {"root": str(Path(oath_dir).resolve()), "n_images": len(ds),
                                  "max_images_per_class": max_images_per_class, "checksums_sha256": ds.checksums()},
               "preprocess": setting, "note": note}
    save_classifier(clf, out_dir, metrics=metrics, overwrite=overwrite)
    return {"classifier_dir": str(out_dir), "classifier_id": clf.classifier_id, "encoder_id": meta["model_id"],
            "n_images": len(ds), "class_names": list(ds.class_names), "preprocess": setting, "note": note,
            "splits": {k: scored[k] for k in ("accuracy", "accuracy_std", "fold_accuracies", "precision_macro",
                                              "recall_macro", "f1_macro", "confusion_matrix")},
            "embedding_seconds": round(seconds, 2), "images_per_second": round(len(ds) / seconds, 1) if seconds else None}
