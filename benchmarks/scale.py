"""Scaling of ingest + embed over Dask workers, and the nightly flow's orchestration overhead.

Run from the repository root (the full run takes about 15-20 minutes on 2 CPU cores):

    .venv/bin/python benchmarks/scale.py              # the figures of issue 6
    .venv/bin/python benchmarks/scale.py --small      # a tiny run that checks the script works

(a) Throughput (frames/s) of ingest (read, preprocess, write) plus embed (ResNet18
    forward at 128x128 of every stored frame) on a Dask LocalCluster of one and of two
    single-threaded worker processes, on 8 site-hours of 600 frames (2 sites x 4
    hours; embed spreads work by site, so two sites keep two workers busy).
    Goal: two workers at least 1.7x one. The clusters are started and their workers
    have imported torch before the clock starts, as a long-lived cluster's would.
(b) The nightly flow ``label-archive`` run in-process, against the same library calls
    (find, ingest on a LocalCluster, embed, classify, assign clusters, record the
    run) made directly on the same files, each into a fresh store. Goal: the flow
    costs under 10% more on a 12,000-frame night (2 sites x 5 hours x 1,200 frames).
    Prefect's temporary API server is started before the clock starts.

The encoder is a random-init checkpoint (speed does not depend on the weights); the
classifier and centroids are fitted on its embeddings of a small separate archive.
Everything is written under bench_out/ (or $AURORA_BENCH_DIR); archives are cached.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, command_line, synthetic_archive  # noqa: E402

# Prefect reads its settings on import: keep its state under bench_out and its log quiet.
os.environ.setdefault("PREFECT_HOME", str(CACHE / "prefect-home"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry from the temporary server

import pandas as pd  # noqa: E402

from aurora_pipeline.source.archive import list_archive  # noqa: E402
from aurora_pipeline.classify.model import ClassifierConfig, load_classifier  # noqa: E402
from aurora_pipeline.cluster.model import ClusterConfig, load_centroids  # noqa: E402
from aurora_pipeline.cluster.driver import assign_store, cluster_store  # noqa: E402
from aurora_pipeline.dask_cluster import dask_client  # noqa: E402
from aurora_pipeline.embed.driver import embed_with_checkpoint  # noqa: E402
from aurora_pipeline.ingest.driver import ingest  # noqa: E402
from aurora_pipeline.classify.driver import classify_store, fit_from_store  # noqa: E402
from aurora_pipeline.nightly import find_new_files, hour_names, record_run  # noqa: E402
from aurora_pipeline.ingest.preprocess import PreprocessConfig  # noqa: E402

IMAGE_SIZE = 128
SITES = ["gako", "gill"]
START = "2011-01-06T04"


@dataclass(frozen=True)
class Sizes:
    scale_hours: int        # hours per site of (a)
    scale_frames: int       # frames per hour of (a)
    night_hours: int        # hours per site of (b)
    night_frames: int       # frames per hour of (b)

    def suffix(self) -> str:
        return f"{self.scale_hours}x{self.scale_frames}-{self.night_hours}x{self.night_frames}"


FULL = Sizes(scale_hours=4, scale_frames=600, night_hours=5, night_frames=1200)
SMALL = Sizes(scale_hours=2, scale_frames=40, night_hours=2, night_frames=40)


@dataclass(frozen=True)
class Models:
    checkpoint: str
    classifier: str
    centroids: str


def random_init_checkpoint(directory: Path) -> str:
    """An untrained encoder saved as a checkpoint (the speed of a forward pass does not depend on weights)."""
    from aurora_pipeline.encoder.checkpoint import FINAL_DIR, SIDECAR_FILE, save_checkpoint
    from aurora_pipeline.encoder.train import PretrainConfig, build_model

    final = directory / FINAL_DIR
    if not (final / SIDECAR_FILE).exists():
        import torch

        cfg = PretrainConfig(image_size=IMAGE_SIZE, epochs=1)
        encoder, head = build_model(cfg, torch.device("cpu"), channels_last=False)
        save_checkpoint(final, encoder=encoder, head=head, training_state={},
                        meta={"config": cfg.to_dict(), "epoch": 0,
                              "provenance": {"note": "random initial weights, never trained (benchmarks/scale.py)"}})
    return str(final)


def fit_models(work: Path) -> Models:
    """Random-init encoder; classifier and centroids on its embeddings of a small separate archive."""
    checkpoint = random_init_checkpoint(work / "encoder")
    archive = synthetic_archive("scale-train-archive", SITES, START, 1, 200)
    store = work / "train.zarr"
    shutil.rmtree(store, ignore_errors=True)
    ingest(list_archive(archive), store, PreprocessConfig(image_size=IMAGE_SIZE))
    embed_with_checkpoint(store, checkpoint)
    labels = pd.read_csv(archive / "labels.csv")
    labels = labels[labels["class"].map(labels["class"].value_counts()) >= 5]  # cross-validation needs a few of each
    labels.to_csv(work / "labels_fit.csv", index=False)
    for out in ("classifier", "centroids"):
        shutil.rmtree(work / out, ignore_errors=True)
    fit_from_store(store, work / "labels_fit.csv", work / "classifier", ClassifierConfig(cv_folds=2))
    cluster_store(store, work / "centroids", ClusterConfig(k_min=2, k_max=4))
    return Models(checkpoint, str(work / "classifier"), str(work / "centroids"))


def _warm_worker() -> None:
    import torch  # noqa: F401  (a long-lived worker has done this before the first night)

    import aurora_pipeline.embed.driver  # noqa: F401
    import aurora_pipeline.ingest.driver  # noqa: F401


def ingest_and_embed(files, store: Path, checkpoint: str, n_workers: int) -> dict:
    """Seconds of ingest and of embed of ``files`` on a warm LocalCluster of ``n_workers``."""
    shutil.rmtree(store, ignore_errors=True)
    with dask_client(n_workers=n_workers) as client:
        client.run(_warm_worker)
        t0 = time.perf_counter()
        report = ingest(files, store, PreprocessConfig(image_size=IMAGE_SIZE), client=client)
        t1 = time.perf_counter()
        embedded = embed_with_checkpoint(store, checkpoint, device="cpu", dask_address=client.scheduler.address)
        t2 = time.perf_counter()
    if report.failed or embedded["frames"] != report.frames:
        raise RuntimeError(f"ingest failures {report.summary()['failures']} or embedded {embedded['frames']} "
                           f"of {report.frames} frames")
    return {"frames": report.frames, "ingest": t1 - t0, "embed": t2 - t1}


def scaling(sizes: Sizes, models: Models, work: Path) -> None:
    archive = synthetic_archive(f"scale-archive-{sizes.scale_hours}x{sizes.scale_frames}", SITES, START,
                                sizes.scale_hours, sizes.scale_frames)
    files = list_archive(archive)
    print(f"\n(a) ingest + embed, {len(files)} site-hours ({len(SITES)} sites x {sizes.scale_hours} hours x "
          f"{sizes.scale_frames} frames), {IMAGE_SIZE}x{IMAGE_SIZE}, LocalCluster of single-threaded workers")
    rates = {}
    for n in (1, 2):
        r = ingest_and_embed(files, work / f"scale-{n}.zarr", models.checkpoint, n)
        total = r["ingest"] + r["embed"]
        rates[n] = r["frames"] / total
        print(f"  {n} worker(s): {r['frames']} frames | ingest {r['ingest']:.1f} s ({r['frames'] / r['ingest']:.0f} "
              f"frames/s) | embed {r['embed']:.1f} s ({r['frames'] / r['embed']:.1f} frames/s) | "
              f"ingest + embed {total:.1f} s = {rates[n]:.1f} frames/s")
    print(f"  speed-up, 2 workers / 1 worker: {rates[2] / rates[1]:.2f}x (goal >= 1.7x)")


def direct_night(archive: str, store: str, models: Models) -> dict:
    """What the flow does, as plain library calls (the flow's task bodies in its order)."""
    started = time.perf_counter()
    todo, stored = find_new_files(archive, store, start=None, end=None, sites=SITES)  # reconcile: the whole archive
    with dask_client() as client:
        report = ingest(todo, store, PreprocessConfig(image_size=IMAGE_SIZE), client=client, skip_stored=False)
    only = hour_names([o.file for o in report.ingested])
    embed_with_checkpoint(store, models.checkpoint, only=only)
    labels = classify_store(store, load_classifier(models.classifier), only=only)
    assign_store(store, load_centroids(models.centroids), only=only)
    summary = {"files_new": len(todo), "files_already_stored": len(stored), "frames": report.frames,
               "label_counts": labels["label_counts"], "total_seconds": round(time.perf_counter() - started, 3)}
    record_run(store, summary)
    return summary


def overhead(sizes: Sizes, models: Models, work: Path, repeats: int) -> None:
    from prefect import flow

    from flows.label_archive import label_archive

    archive = str(synthetic_archive(f"scale-night-{sizes.night_hours}x{sizes.night_frames}", SITES, START,
                                    sizes.night_hours, sizes.night_frames))
    frames = len(SITES) * sizes.night_hours * sizes.night_frames
    print(f"\n(b) nightly flow against direct library calls, {frames} frames ({len(SITES)} sites x "
          f"{sizes.night_hours} hours x {sizes.night_frames} frames), {IMAGE_SIZE}x{IMAGE_SIZE}, "
          f"device auto, each into a fresh store")

    @flow(name="scale-benchmark-warm-up")
    def warm_up() -> None:
        pass

    t = time.perf_counter()
    warm_up()
    api = os.environ.get("PREFECT_API_URL") or "Prefect's temporary in-process server"
    print(f"  warm-up: {api} up and a first flow run done in {time.perf_counter() - t:.1f} s (not counted)")
    timings = {"direct": [], "flow": []}
    for r in range(repeats):
        order = ("direct", "flow") if r % 2 == 0 else ("flow", "direct")  # alternate to spread machine noise
        for kind in order:
            store = str(work / f"night-{kind}.zarr")
            shutil.rmtree(store, ignore_errors=True)
            t = time.perf_counter()
            if kind == "flow":
                summary = label_archive(archive=archive, store=store, checkpoint=models.checkpoint,
                                        classifier=models.classifier, centroids=models.centroids, sites=SITES,
                                        reconcile=True, image_size=IMAGE_SIZE)
            else:
                summary = direct_night(archive, store, models)
            seconds = time.perf_counter() - t
            if summary["frames"] != frames:
                raise RuntimeError(f"{kind} run labelled {summary['frames']} frames, expected {frames}")
            timings[kind].append(seconds)
            print(f"  round {r + 1} {kind:>6}: {seconds:.1f} s ({frames / seconds:.0f} frames/s)")
    direct, flowed = min(timings["direct"]), min(timings["flow"])
    print(f"  best of {repeats}: direct {direct:.1f} s, flow {flowed:.1f} s; orchestration overhead "
          f"{100 * (flowed - direct) / direct:+.1f}% (goal < 10%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes: checks that the script works, nothing more")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of (b), alternating which path goes first")
    parser.add_argument("--skip", choices=["a", "b"], help="leave out part (a) or (b)")
    args = parser.parse_args()
    sizes = SMALL if args.small else FULL
    print(command_line())
    print(f"machine: {os.cpu_count()} CPU cores" + ("; --small: the figures below say nothing about scale" if args.small else ""))
    work = CACHE / f"scale-{sizes.suffix()}"
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    models = fit_models(work)
    print(f"models (random-init encoder, classifier, centroids) ready in {time.perf_counter() - t:.1f} s")
    if args.skip != "a":
        scaling(sizes, models, work)
    if args.skip != "b":
        overhead(sizes, models, work, args.repeats)


if __name__ == "__main__":
    main()
