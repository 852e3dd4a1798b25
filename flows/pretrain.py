"""Prefect flow `pretrain-encoder`: SimCLR pretraining on the store's frames (the paper's recipe by default)."""

from __future__ import annotations

import dataclasses
import math

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from aurora_pipeline.encoder.training_frames import load_training_frames
from aurora_pipeline.encoder.train import PretrainConfig, pretrain
from aurora_pipeline.errors import BadInputError

MIN_IMAGE_SIZE = 32  # ResNet18's five stride-2 stages leave 1 x 1 at 32 pixels


@task(cache_policy=NO_CACHE)
def load_frames(store: str, sites, start, end, max_frames, seed):
    return load_training_frames(store, sites, start, end, max_frames=max_frames, seed=seed)


@task(cache_policy=NO_CACHE)
def train(frames, provenance: dict, checkpoint: str, cfg: PretrainConfig, resume: bool) -> dict:
    logger = get_run_logger()

    def report(p):
        logger.info("epoch %d/%d step %d/%d loss %.4f %.1f images/s", p.epoch, p.epochs, p.step,
                    p.steps_per_epoch, p.loss, p.images_per_second)

    result = pretrain(frames, cfg, checkpoint, resume=resume, progress=report, provenance=provenance,
                      preprocess=provenance.get("preprocess"))
    speed = result.images_per_second
    return {"checkpoint": result.checkpoint, "model_id": result.model_id, "epochs": result.epochs,
            "image_size": cfg.image_size,
            "final_loss": result.epoch_loss[-1] if result.epoch_loss else None,
            "images_per_second": None if speed is None or math.isnan(speed) else speed,  # None: nothing trained
            "device": result.device, "mixed_precision": result.mixed_precision}


def encoder_input_size(frames, image_size: int | None) -> int:
    """The encoder's input side: ``image_size`` when asked, else the store's frame side."""
    if image_size is not None:
        return image_size
    side = int(frames.shape[-1])
    if side < MIN_IMAGE_SIZE:
        raise BadInputError("--image-size", f"not given, and the store's frames are {side} x {side} pixels, "
                            f"below the {MIN_IMAGE_SIZE} pixels ResNet18 needs",
                            f"pass --image-size {MIN_IMAGE_SIZE} (frames are upsampled on the device), "
                            f"or ingest at --image-size {MIN_IMAGE_SIZE} or more")
    return side


@flow(name="pretrain-encoder", log_prints=True)
def pretrain_encoder_flow(
    store: str,
    checkpoint: str,
    sites: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    epochs: int = PretrainConfig.epochs,
    batch_size: int = PretrainConfig.batch_size,
    device: str = PretrainConfig.device,
    seed: int = PretrainConfig.seed,
    resume: bool = False,
    max_frames: int | None = None,
    image_size: int | None = None,
    mixed_precision: bool = PretrainConfig.mixed_precision,
) -> dict:
    """Pretrain the SimCLR encoder on the stored frames and checkpoint it under ``checkpoint``.

    ``image_size`` None trains at the side of the store's frames (no resizing)."""
    # bad settings are refused before any frame is read
    cfg = PretrainConfig(epochs=epochs, batch_size=batch_size, device=device, seed=seed,
                         image_size=PretrainConfig.image_size if image_size is None else image_size, mixed_precision=mixed_precision)
    frames, provenance = load_frames(store, sites, start, end, max_frames, seed)
    cfg = dataclasses.replace(cfg, image_size=encoder_input_size(frames, image_size))
    get_run_logger().info("training at %d x %d pixels (%s) on %d frames", cfg.image_size, cfg.image_size,
                          "asked" if image_size is not None else "the store's frame size", len(frames))
    return train(frames, provenance, checkpoint, cfg, resume)
