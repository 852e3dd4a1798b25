"""Prefect flow `oath-benchmark`: the paper's Table I, Fig. 3 and silhouette analysis on OATH.

One task per stage of ``aurora_pipeline.oath.protocol``; the table is published as the
markdown artifact ``oath-table``. Everything is written under ``out``.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from aurora_pipeline.oath import protocol
from aurora_pipeline.oath.download import download_oath
from aurora_pipeline.oath.protocol import OathBenchmarkConfig
from aurora_pipeline.oath.report import finish_run, table_markdown
from flows._retry import RETRY


def _log(message: str) -> None:
    get_run_logger().info(message)


@task(name="fetch", **{**RETRY, "retries": 2, "retry_delay_seconds": [30, 120]})  # a refused tarball is not retried
def fetch_release(oath_dir: str, sha256: str | None, sha256_url: str | None) -> str:
    # does nothing when oath_dir already holds the release
    return str(download_oath(oath_dir, sha256=sha256, sha256_url=sha256_url))


@task(cache_policy=NO_CACHE)
def prepare(oath_dir: str, out: str, cfg: OathBenchmarkConfig) -> protocol.OathData:
    return protocol.prepare_data(oath_dir, out, cfg, _log)


@task(name="pretrain", cache_policy=NO_CACHE)
def pretrain_simclr(data: protocol.OathData, cfg: OathBenchmarkConfig, out: str) -> dict:
    return protocol.pretrain_encoder(data, cfg, out, _log)


@task(cache_policy=NO_CACHE)
def given(cfg: OathBenchmarkConfig) -> dict:
    return protocol.given_encoder(cfg)


@task(cache_policy=NO_CACHE)
def embed(data: protocol.OathData, encoder: dict, cfg: OathBenchmarkConfig, out: str):
    return protocol.embed_images(data, encoder, cfg, out)


@task(cache_policy=NO_CACHE)
def linear(X, data: protocol.OathData, cfg: OathBenchmarkConfig, encoder: dict) -> dict:
    return protocol.evaluate_linear(X, data, cfg, encoder)


@task(cache_policy=NO_CACHE)
def supervised(data: protocol.OathData, cfg: OathBenchmarkConfig, imagenet: bool) -> dict:
    return protocol.evaluate_supervised(data, cfg, imagenet=imagenet, progress=_log)


@task(cache_policy=NO_CACHE)
def pixels(data: protocol.OathData, cfg: OathBenchmarkConfig) -> dict:
    return protocol.evaluate_pixels(data, cfg)


@task(cache_policy=NO_CACHE)
def cluster(X, data: protocol.OathData, cfg: OathBenchmarkConfig) -> dict:
    return protocol.cluster_embeddings(X, data, cfg)


@task(cache_policy=NO_CACHE)
def report(data: protocol.OathData, encoder: dict, models: dict, clustering: dict, cfg: OathBenchmarkConfig,
           out: str) -> dict:
    return finish_run(cfg, data, encoder, models, clustering, out)


@flow(name="oath-benchmark", log_prints=True)
def oath_benchmark(
    oath_dir: str,
    out: str,
    download: bool = False,
    epochs: int = OathBenchmarkConfig.epochs,
    batch_size: int = OathBenchmarkConfig.batch_size,
    image_size: int = OathBenchmarkConfig.image_size,
    splits: str | list[int] = ",".join(map(str, OathBenchmarkConfig.splits)),
    device: str = OathBenchmarkConfig.device,
    seed: int = OathBenchmarkConfig.seed,
    max_images_per_class: int | None = OathBenchmarkConfig.max_images_per_class,
    supervised_epochs: int | None = OathBenchmarkConfig.supervised_epochs,
    imagenet_weights: str | None = OathBenchmarkConfig.imagenet_weights,
    mixed_precision: bool = OathBenchmarkConfig.mixed_precision,
    sha256: str | None = None,
    sha256_url: str | None = None,
    checkpoint: str | None = None,
) -> dict:
    """Reproduce Table I (SimCLR + logistic regression, supervised ResNet18, raw pixels, quoted
    Inception-v4), Fig. 3 and the K-means silhouette scan on OATH; write report.md and
    results.json under ``out``. ``download`` fetches the release into ``oath_dir`` first.
    ``supervised_epochs`` None trains the supervised baseline 30 epochs at 100 epochs of
    pre-training, scaled with ``epochs`` (so ``epochs=2`` gives 1); report.md lists every
    setting that is not the paper run's. ``checkpoint``: evaluate that encoder (e.g. the published one,
    from ``import-encoder``) instead of pre-training: linear probe, raw-pixel floor and silhouettes at its
    input size and preprocessing, no supervised baselines."""
    cfg = OathBenchmarkConfig(epochs=epochs, batch_size=batch_size, image_size=image_size, splits=splits,
                              device=device, seed=seed, max_images_per_class=max_images_per_class,
                              supervised_epochs=supervised_epochs, imagenet_weights=imagenet_weights,
                              mixed_precision=mixed_precision, checkpoint=checkpoint)
    cfg = protocol.with_checkpoint(cfg)
    if download:
        fetch_release(oath_dir, sha256, sha256_url)
    data = prepare(oath_dir, out, cfg)
    encoder = given(cfg) if cfg.checkpoint else pretrain_simclr(data, cfg, out)
    X = embed(data, encoder, cfg, out)
    models = {"simclr_linear": linear(X, data, cfg, encoder)}
    if cfg.supervised:
        models["supervised_resnet18"] = supervised(data, cfg, imagenet=False)
    if cfg.imagenet_weights is not None:
        models["supervised_resnet18_imagenet"] = supervised(data, cfg, imagenet=True)
    models["raw_pixels_linear"] = pixels(data, cfg)
    clustering = cluster(X, data, cfg)
    results = report(data, encoder, models, clustering, cfg, out)
    create_markdown_artifact(key="oath-table", markdown=table_markdown(results),
                             description=f"OATH Table I reproduction, {out}")
    return results
