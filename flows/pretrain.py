"""Prefect flow `pretrain-encoder`: SimCLR pretraining on the store's frames (the paper's recipe by default)."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from aurora_pipeline.encoder.training_frames import load_training_frames
from aurora_pipeline.encoder.train import PretrainConfig, pretrain


@task(cache_policy=NO_CACHE)
def load_frames(store: str, sites, start, end, max_frames, seed):
    return load_training_frames(store, sites, start, end, max_frames=max_frames, seed=seed)


@task(cache_policy=NO_CACHE)
def train(frames, provenance: dict, checkpoint: str, cfg: PretrainConfig, resume: bool) -> dict:
    logger = get_run_logger()

    def report(p):
        logger.info("epoch %d/%d step %d/%d loss %.4f %.1f images/s", p.epoch, p.epochs, p.step,
                    p.steps_per_epoch, p.loss, p.images_per_second)

    result = pretrain(frames, cfg, checkpoint, resume=resume, progress=report, provenance=provenance)
    return {"checkpoint": result.checkpoint, "model_id": result.model_id, "epochs": result.epochs,
            "final_loss": result.epoch_loss[-1] if result.epoch_loss else None,
            "images_per_second": result.images_per_second, "device": result.device,
            "mixed_precision": result.mixed_precision}


@flow(name="pretrain-encoder", log_prints=True)
def pretrain_encoder(
    store: str,
    checkpoint: str,
    sites: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    epochs: int = 100,
    batch_size: int = 128,
    device: str = "auto",
    seed: int = 0,
    resume: bool = False,
    max_frames: int | None = None,
    image_size: int = 128,
    mixed_precision: bool = True,
) -> dict:
    """Pretrain the SimCLR encoder on the stored frames and checkpoint it under ``checkpoint``."""
    cfg = PretrainConfig(epochs=epochs, batch_size=batch_size, device=device, seed=seed,
                         image_size=image_size, mixed_precision=mixed_precision)
    frames, provenance = load_frames(store, sites, start, end, max_frames, seed)
    return train(frames, provenance, checkpoint, cfg, resume)
