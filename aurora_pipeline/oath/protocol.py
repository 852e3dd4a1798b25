"""The OATH reproduction protocol: Table I, Fig. 3 and the silhouette analysis of the paper.

Johnson et al. (2021) pre-train SimCLR on all 5,824 OATH images without labels, then,
on each of the release's five train/test split rows (first 70% = 4,077 images train,
the rest = 1,747 test), fit an l2 logistic regression to the 512-d representations and
report accuracy and macro precision, recall and F1, as mean and std over the splits.
They compare with a supervised ResNet18 and with the published Inception-v4 + ridge
result, show the confusion matrix of one split, and scan K-means on the
representations for k = 3..15 by mean silhouette.

``run_oath_benchmark`` does all of it; each stage is also a function of its own (the
Prefect flow ``oath-benchmark`` runs one task per stage):

    prepare_data        check the output folder, read labels and splits, load every image
    pretrain_encoder    SimCLR on all images (``train.pretrain``), checkpoint in out_dir/encoder/
    given_encoder       instead of pre-training: the encoder of ``checkpoint`` (e.g. the published one)
    embed_images        512-d representation of every image (embeddings.npz)
    evaluate_linear     l2 logistic regression on the representations, per split
    evaluate_supervised ResNet18 trained with labels per split (random init, or ImageNet weights)
    evaluate_pixels     l2 logistic regression on downsampled raw pixels (a floor)
    cluster_embeddings  K-means silhouette scan, and the labels' own silhouette
    report.finish_run   figures, results.json and report.md (``aurora_pipeline.oath.report``)

Std over splits is numpy's population std (ddof=0), as ``classify.cross_validate``.
Precision, recall and F1 are unweighted means over the six classes.

Example:
    >>> results = run_oath_benchmark("data/oath", "runs/oath-2024", OathBenchmarkConfig())
    >>> results["models"]["simclr_linear"]["mean"]["accuracy"]
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aurora_pipeline.atomic import atomic_path
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.oath.config import OathBenchmarkConfig, parse_splits, scaled_supervised_epochs  # noqa: F401 - re-exported
from aurora_pipeline.oath.dataset import OATH_CLASS_COUNTS, OathData, load_oath
from aurora_pipeline.classify.model import classification_metrics
from aurora_pipeline.classify.model import fit_classifier
from aurora_pipeline.cluster.model import assign_clusters, scan_k, silhouette_of_labels
from aurora_pipeline.oath.archive_classifier import encoder_setting, oath_frames
from aurora_pipeline.oath.report import finish_run

Progress = Callable[[str], None]
METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")


# ------------------------------------------------------------------ stage 1: data


def prepare_data(oath_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: OathBenchmarkConfig,
                 progress: Progress | None = None) -> OathData:
    """Check ``out_dir``, read the OATH labels and splits under ``oath_dir`` and load every image.

    A dataset whose class counts differ from the release's (a subset, a synthetic
    stand-in) is accepted and marked ``full_release: False``; the report says so.

    Raises:
        BadInputError: ``out_dir`` already holds a finished benchmark; OATH files missing
            or malformed; too few images for k_max or for every class to be in every
            training part.
    """
    tell = progress or (lambda message: None)
    start = time.perf_counter()
    results_file = Path(out_dir) / "results.json"
    if results_file.exists():
        raise BadInputError(results_file, "already holds a finished OATH benchmark; refusing to overwrite it.",
                            "choose a new output folder, or delete this one to run again.")
    full = load_oath(oath_dir, expected_counts=None)
    counts = dict(zip(full.class_names, np.bincount(full.labels, minlength=len(full.class_names)).tolist()))
    ds = full if cfg.max_images_per_class is None else full.subset(cfg.max_images_per_class, seed=cfg.seed)
    labels = ds.labels.astype(np.int64)
    if cfg.k_max >= len(ds):
        raise BadInputError("k_max", f"{cfg.k_max} clusters need more than {len(ds)} images.",
                            f"use k_max <= {len(ds) - 1} or more images per class.")
    splits = {i: ds.split(i, cfg.train_fraction) for i in cfg.splits}
    for i, (train, _) in splits.items():
        absent = [ds.class_names[c] for c in range(len(ds.class_names)) if not np.any(labels[train] == c)]
        if absent:
            raise BadInputError(f"split {i}", f"its training part holds no image of {absent}.",
                                "use more images per class (max_images_per_class).")
    if cfg.checkpoint is not None:  # the frames as a store of the encoder's setting holds them
        # torch (encoder.checkpoint): only with a checkpoint
        from aurora_pipeline.encoder.checkpoint import read_verified, resolve_checkpoint

        setting, _ = encoder_setting(read_verified(resolve_checkpoint(cfg.checkpoint), ())[0])
        tell(f"loading {len(ds)} OATH images as the encoder's frames ({setting['fov']} framing, "
             f"{setting['image_size']} px)")
        frames = oath_frames(ds, np.arange(len(ds)), setting)
    else:
        tell(f"loading {len(ds)} OATH images at {cfg.image_size} x {cfg.image_size} pixels")
        images = ds.load_images(np.arange(len(ds)), image_size=cfg.image_size)
        frames = np.rint(images * 255.0).astype(np.uint8)
        del images
    info = {
        "root": str(Path(oath_dir).resolve()),
        "image_folder": ds.image_folder,
        "n_images": len(ds),
        "n_images_in_label_file": len(full),
        "class_counts": dict(zip(ds.class_names, np.bincount(labels, minlength=len(ds.class_names)).tolist())),
        "full_release": counts == OATH_CLASS_COUNTS and cfg.max_images_per_class is None,
        "max_images_per_class": cfg.max_images_per_class,
        "checksums_sha256": full.checksums(),
        "split_sizes": {str(i): {"train": len(tr), "test": len(te)} for i, (tr, te) in splits.items()},
        "seconds": time.perf_counter() - start,
    }
    return OathData(ds, frames, labels, tuple(ds.class_names), splits, info)


# ------------------------------------------------------------------ stage 2, 3: SimCLR


def with_checkpoint(cfg: OathBenchmarkConfig) -> OathBenchmarkConfig:
    """``cfg`` for evaluating the encoder ``cfg.checkpoint``: ``image_size`` its input size, and no
    supervised baselines (the run measures the given encoder). Unchanged without a checkpoint.

    Raises:
        CheckpointError: not a valid checkpoint.
    """
    if cfg.checkpoint is None:
        return cfg
    # torch: only with a checkpoint
    from aurora_pipeline.encoder.checkpoint import check_embedding_settings, read_verified, resolve_checkpoint

    where = resolve_checkpoint(cfg.checkpoint)
    size = check_embedding_settings(read_verified(where, ())[0], where)["image_size"]
    return dataclasses.replace(cfg, image_size=int(size), supervised=False, imagenet_weights=None)


def given_encoder(cfg: OathBenchmarkConfig) -> dict[str, Any]:
    """The encoder ``cfg.checkpoint`` in the form ``pretrain_encoder`` returns (no pre-training was run)."""
    # torch: only when an encoder is loaded or trained
    from aurora_pipeline.encoder.backbone import resnet18_encoder
    from aurora_pipeline.encoder.checkpoint import load_encoder

    _, meta = load_encoder(cfg.checkpoint, "cpu")
    return {"checkpoint": meta["path"], "model_id": meta["model_id"], "epochs": meta.get("epoch"), "epoch_loss": [],
            "images_per_second": None, "device": cfg.device, "mixed_precision": False, "given": True,
            "provenance": meta.get("provenance"), "preprocess": meta.get("preprocess"),
            "n_parameters": sum(p.numel() for p in resnet18_encoder().parameters()), "seconds": 0.0}


def pretrain_encoder(data: OathData, cfg: OathBenchmarkConfig, out_dir: str | os.PathLike,
                     progress: Progress | None = None) -> dict[str, Any]:
    """SimCLR on all images, no labels, checkpointed in ``out_dir/encoder/``.

    An interrupted run in that folder is resumed (same settings and images only).

    Returns:
        checkpoint (path), model_id, epochs, epoch_loss, images_per_second, device,
        mixed_precision, n_parameters (encoder), seconds.
    Raises:
        CheckpointError: ``out_dir/encoder`` holds a run with other settings or images.
    """
    # torch: only when an encoder is loaded or trained
    from aurora_pipeline.encoder.backbone import resnet18_encoder
    from aurora_pipeline.encoder.train import pretrain

    tell = progress or (lambda message: None)

    def report(p) -> None:
        if p.epoch_loss is not None:
            tell(f"SimCLR epoch {p.epoch}/{p.epochs}: loss {p.epoch_loss:.4f}, {p.images_per_second:.1f} images/s")

    start = time.perf_counter()
    provenance = {"dataset": "OATH", "oath_root": data.info["root"], "n_images": data.info["n_images"],
                  "checksums_sha256": data.info["checksums_sha256"], "max_images_per_class": cfg.max_images_per_class}
    result = pretrain(data.frames, cfg.pretrain_config(), Path(out_dir) / "encoder", resume=True, progress=report,
                      provenance=provenance)
    return {
        "checkpoint": result.checkpoint,
        "model_id": result.model_id,
        "epochs": result.epochs,
        "epoch_loss": list(result.epoch_loss),
        "images_per_second": result.images_per_second,
        "device": result.device,
        "mixed_precision": result.mixed_precision,
        "n_parameters": sum(p.numel() for p in resnet18_encoder().parameters()),
        "seconds": time.perf_counter() - start,
    }


def embed_images(data: OathData, encoder: dict[str, Any], cfg: OathBenchmarkConfig,
                 out_dir: str | os.PathLike) -> np.ndarray:
    """The 512-d representation h of every image, (n, 512) float32; also saved with the
    labels as ``out_dir/embeddings.npz`` (arrays ``embedding``, ``label``)."""
    # torch: only when embedding
    from aurora_pipeline.encoder.checkpoint import load_encoder
    from aurora_pipeline.embed.model import EmbedConfig, embed_frames

    model, _ = load_encoder(encoder["checkpoint"], device=cfg.device)
    X = embed_frames(model, data.frames, EmbedConfig(device=cfg.device, mixed_precision=cfg.mixed_precision),
                     image_size=cfg.image_size)
    path = Path(out_dir) / "embeddings.npz"
    path.parent.mkdir(parents=True, exist_ok=True)  # with a given encoder, nothing wrote out_dir before
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, embedding=X, label=data.labels)
    return X


# ------------------------------------------------------------------ stage 4-6: classifiers


def split_metrics(true: np.ndarray, pred: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """accuracy, macro precision/recall/F1, per-class values and the confusion matrix
    (rows true, columns predicted) of one test set, as ``classify`` computes them."""
    out = classification_metrics(np.asarray(true), np.asarray(pred), tuple(class_names), kind="held_out")
    out.pop("kind")
    return out


def summarise(per_split: dict[str, dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and population std (ddof=0) over the splits of each of ``METRICS``."""
    values = {m: np.array([s[m] for s in per_split.values()], dtype=float) for m in METRICS}
    return ({m: float(v.mean()) for m, v in values.items()}, {m: float(v.std()) for m, v in values.items()})


def _model_result(name: str, per_split: dict, n_parameters: int, start: float, **details) -> dict[str, Any]:
    mean, std = summarise(per_split)
    return {"name": name, "n_parameters": int(n_parameters), "per_split": per_split, "mean": mean, "std": std,
            "seconds": time.perf_counter() - start, **details}


def _linear_per_split(X: np.ndarray, data: OathData, cfg: OathBenchmarkConfig, feature_id: str) -> dict[str, Any]:
    names = np.asarray(data.class_names)
    per_split = {}
    for i, (train, test) in data.splits.items():
        clf = fit_classifier(X[train], names[data.labels[train]], cfg.classifier_config(), encoder_id=feature_id,
                             class_names=data.class_names)
        per_split[str(i)] = {**split_metrics(data.labels[test], clf.predict(X[test]), data.class_names),
                             "n_train": len(train), "n_test": len(test)}
    return per_split


def evaluate_linear(X: np.ndarray, data: OathData, cfg: OathBenchmarkConfig, encoder: dict[str, Any]) -> dict[str, Any]:
    """The paper's SimCLR row: l2 logistic regression on the representations, per split."""
    start = time.perf_counter()
    per_split = _linear_per_split(X, data, cfg, encoder["model_id"])
    k = len(data.class_names)
    return _model_result("simclr_linear", per_split, encoder["n_parameters"] + X.shape[1] * k + k, start,
                         features=f"SimCLR representation h ({X.shape[1]}-d), encoder {encoder['model_id']}")


def evaluate_pixels(data: OathData, cfg: OathBenchmarkConfig) -> dict[str, Any]:
    """A floor: the same logistic regression on the images downsampled to
    ``pixel_size`` x ``pixel_size`` (antialiased), each pixel standardised."""
    # torch: only for the pixel baseline
    import torch

    from aurora_pipeline.encoder.backbone import frames_to_input

    start = time.perf_counter()
    small = frames_to_input(torch.from_numpy(data.frames), cfg.pixel_size).reshape(len(data.frames), -1).numpy()
    per_split = _linear_per_split(small.astype(np.float64), data, cfg, f"raw-pixels-{cfg.pixel_size}x{cfg.pixel_size}")
    k = len(data.class_names)
    return _model_result("raw_pixels_linear", per_split, small.shape[1] * k + k, start,
                         features=f"raw pixels at {cfg.pixel_size} x {cfg.pixel_size}, standardised")


def evaluate_supervised(data: OathData, cfg: OathBenchmarkConfig, *, imagenet: bool = False,
                        progress: Progress | None = None) -> dict[str, Any]:
    """A ResNet18 trained with labels on each split's training part, tested on the rest.

    ``imagenet=True`` starts from ``cfg.imagenet_weights`` (BadInputError when None).
    """
    # torch: only for the supervised baseline
    from aurora_pipeline.oath.supervised import predict_supervised, train_supervised

    if imagenet and cfg.imagenet_weights is None:
        raise BadInputError("imagenet_weights", "is not set, so there is no ImageNet-initialised model to train.",
                            "pass the path of torchvision's resnet18 weights file.")
    tell = progress or (lambda message: None)
    name = "supervised_resnet18_imagenet" if imagenet else "supervised_resnet18"
    scfg = cfg.supervised_config(imagenet)
    start = time.perf_counter()
    per_split, n_parameters, training = {}, 0, {}
    for i, (train, test) in data.splits.items():
        def report(p, i=i) -> None:
            tell(f"{name} split {i} epoch {p.epoch}/{p.epochs}: loss {p.loss:.4f}, {p.images_per_second:.1f} images/s")

        result = train_supervised(data.frames[train], data.labels[train], len(data.class_names), scfg, progress=report)
        pred = predict_supervised(result.model, data.frames[test], scfg)
        per_split[str(i)] = {**split_metrics(data.labels[test], pred, data.class_names),
                             "n_train": len(train), "n_test": len(test)}
        training[str(i)] = {"epoch_loss": result.epoch_loss, "seconds": result.seconds,
                            "images_per_second": result.images_per_second}
        n_parameters = result.n_parameters
        del result
    return _model_result(name, per_split, n_parameters, start, config=scfg.to_dict(), training=training)


# ------------------------------------------------------------------ stage 7: clustering


def cluster_embeddings(X: np.ndarray, data: OathData, cfg: OathBenchmarkConfig) -> dict[str, Any]:
    """K-means on the representations for k in k_min..k_max, mean silhouette of each,
    and the silhouette of the class labels used as clusters (section III.E).

    Returns:
        ks, silhouettes, inertias, best_k, best_silhouette, ground_truth_silhouette,
        sample_size, cluster (n,) cluster of each image at best_k, cluster_by_class
        ((best_k, 6) counts), seconds.
    """
    start = time.perf_counter()
    ccfg = cfg.cluster_config()
    scan = scan_k(X, ccfg)
    truth = silhouette_of_labels(X, data.labels, ccfg)
    cluster = assign_clusters(X, scan.centroids).astype(np.int64)
    table = np.zeros((scan.best_k, len(data.class_names)), dtype=np.int64)
    np.add.at(table, (cluster, data.labels), 1)
    best = int(np.flatnonzero(scan.ks == scan.best_k)[0])
    return {
        "ks": scan.ks.tolist(),
        "silhouettes": scan.silhouettes.tolist(),
        "inertias": scan.inertias.tolist(),
        "best_k": int(scan.best_k),
        "best_silhouette": float(scan.silhouettes[best]),
        "ground_truth_silhouette": float(truth),
        "sample_size": int(scan.sample_size),
        "cluster": cluster.tolist(),
        "cluster_by_class": table.tolist(),
        "seconds": time.perf_counter() - start,
    }


def run_oath_benchmark(oath_dir: str | os.PathLike, out_dir: str | os.PathLike,
                       cfg: OathBenchmarkConfig | None = None, *,
                       progress: Progress | None = None) -> dict[str, Any]:
    """Run the whole protocol and write ``out_dir``: report.md, results.json, encoder/,
    embeddings.npz and the figures. Returns the results dict (as in results.json).
    ``cfg`` None means ``OathBenchmarkConfig()``, the paper's settings.

    Raises:
        BadInputError: bad inputs or settings (see the stages); ``out_dir`` already
            holds a finished benchmark.
        CheckpointError: ``out_dir/encoder`` holds an unfinished run with other settings.
    """
    cfg = with_checkpoint(OathBenchmarkConfig() if cfg is None else cfg)
    tell = progress or (lambda message: None)
    out_dir = Path(out_dir)
    data = prepare_data(oath_dir, out_dir, cfg, tell)
    if cfg.checkpoint is not None:
        encoder = given_encoder(cfg)
    else:
        tell(f"pre-training SimCLR for {cfg.epochs} epochs on {len(data.frames)} images")
        encoder = pretrain_encoder(data, cfg, out_dir, tell)
    X = embed_images(data, encoder, cfg, out_dir)
    tell("fitting the logistic regressions")
    models = {"simclr_linear": evaluate_linear(X, data, cfg, encoder)}
    if cfg.supervised:
        models["supervised_resnet18"] = evaluate_supervised(data, cfg, imagenet=False, progress=tell)
    if cfg.imagenet_weights is not None:
        models["supervised_resnet18_imagenet"] = evaluate_supervised(data, cfg, imagenet=True, progress=tell)
    models["raw_pixels_linear"] = evaluate_pixels(data, cfg)
    tell(f"K-means for k = {cfg.k_min}..{cfg.k_max}")
    clustering = cluster_embeddings(X, data, cfg)
    return finish_run(cfg, data, encoder, models, clustering, out_dir)
