"""What one night of the archive costs, stage by stage, at the store's setting (128 px).

The nightly run (`label-archive`) ingests the new files, then embeds, classifies,
assigns clusters, records events and updates the similarity index for the new hours.
This script runs each stage's library call (the flow's task bodies) on ``--files``
synthetic 1,200-frame hours added to a store that already holds one labelled, indexed
hour (as a store does on any night but the first), times each, and prints seconds
per 1,000 frames and what a night of the real archive (about 26 sites x 12 hours x
1,200 frames = 375,000 frames) costs at those rates on this machine.

Models: a random-init encoder at 128 px (a forward pass costs the same whatever the
weights) and a classifier and centroids fitted on its embeddings of a small separate
archive (``scale.py``'s ``fit_models``). Ingest runs on a LocalCluster of one worker thread per
core (as the nightly run does), embedding in this process on the CPU (torch's threads).

A GPU worker: no GPU figure is measured in BENCHMARKS.md (no GPU was lent to any task
that ran ``gpu_check.sh``); the GPU line is therefore an ESTIMATE that replaces only the
embedding by the GPU check's goal rate (``--gpu-embed-rate``, default 30,000 frames/s,
a goal, not a measurement) and keeps every other stage at this machine's rate.

    .venv/bin/python benchmarks/night.py [--files 2] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from _common import CACHE, command_line, synthetic_archive
from scale import fit_models

from aurora_pipeline.classify.driver import classify_store
from aurora_pipeline.classify.model import load_classifier
from aurora_pipeline.cluster.driver import assign_store
from aurora_pipeline.cluster.model import load_centroids
from aurora_pipeline.dask_cluster import dask_client
from aurora_pipeline.embed.driver import embed_with_checkpoint
from aurora_pipeline.ingest.driver import ingest
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.nightly import hour_names, record_night_events
from aurora_pipeline.search.driver import build_index, update_index
from aurora_pipeline.source.archive import list_archive

NIGHT_FRAMES = 26 * 12 * 1200  # sites x dark hours x frames an hour
STAGES = ("ingest", "embed", "classify", "cluster assignment", "events", "index update")


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def one_night(files, first, store: Path, models, client) -> tuple[int, dict[str, float]]:
    """Seconds of each stage for ``files`` added to a store that already holds ``first``, labelled and indexed."""
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(f"{store}.index", ignore_errors=True)
    clf, cen = load_classifier(models.classifier), load_centroids(models.centroids)
    cfg = PreprocessConfig()  # the store's setting: 128 px, the inscribed circle
    ingest([first], store, cfg, client=client)
    embed_with_checkpoint(store, models.checkpoint, device="cpu")
    classify_store(store, clf)
    assign_store(store, cen)
    build_index(store)
    seconds = {}
    seconds["ingest"], report = timed(lambda: ingest(files, store, cfg, client=client))
    only = hour_names([o.file for o in report.ingested])
    seconds["embed"], _ = timed(lambda: embed_with_checkpoint(store, models.checkpoint, device="cpu", only=only))
    seconds["classify"], labels = timed(lambda: classify_store(store, clf, only=only))
    seconds["cluster assignment"], _ = timed(lambda: assign_store(store, cen, only=only))
    seconds["events"], _ = timed(lambda: record_night_events(store, labels["labelled"]))
    seconds["index update"], _ = timed(lambda: update_index(store))
    return report.frames, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2, help="new 1,200-frame hours per night (<= 9)")
    parser.add_argument("--rounds", type=int, default=1, help="nights run; the best of each stage is kept")
    parser.add_argument("--gpu-embed-rate", type=float, default=30_000.0,
                        help="frames/s assumed for embedding on one GPU worker (the GPU check's goal, unmeasured)")
    args = parser.parse_args()
    print(command_line())
    print(f"machine: {os.cpu_count()} cores, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} at the start")
    work = CACHE / "night"
    work.mkdir(parents=True, exist_ok=True)
    models = fit_models(work)
    files = list_archive(synthetic_archive("archive-12k", ["gako", "gill"], "2011-01-06T04", 5, 1200))
    first, new = files[0], files[1 : 1 + args.files]
    best: dict[str, float] = {}
    with dask_client(threads=True) as client:  # as the nightly run's ingest: worker threads
        client.run(lambda: None)
        for r in range(args.rounds):
            frames, seconds = one_night(new, first, work / "night.zarr", models, client)
            print(f"round {r + 1}: {frames} new frames: " + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()),
                  flush=True)
            best = {k: min(v, best.get(k, v)) for k, v in seconds.items()}
    per_1000 = {k: best[k] / frames * 1000 for k in STAGES}
    total = sum(per_1000.values())
    print(f"\nseconds per 1,000 frames at 128 px, best of {args.rounds} (this machine, {os.cpu_count()} cores):")
    for k in STAGES:
        print(f"  {k:<20} {per_1000[k]:8.2f} s   ({per_1000[k] / total:5.1%})")
    print(f"  {'all stages':<20} {total:8.2f} s")
    night_h = total * NIGHT_FRAMES / 1000 / 3600
    print(f"one night of the real archive ({NIGHT_FRAMES:,} frames): {night_h:.1f} hours on this machine")
    gpu_embed = 1000 / args.gpu_embed_rate
    gpu_total = total - per_1000["embed"] + gpu_embed
    print(f"ESTIMATE, one GPU worker (embedding at an assumed {args.gpu_embed_rate:,.0f} frames/s, not measured; "
          f"the other stages at this machine's rates): {gpu_total:.2f} s per 1,000 frames, "
          f"{gpu_total * NIGHT_FRAMES / 1000 / 3600:.1f} hours a night, ingest "
          f"{per_1000['ingest'] / gpu_total:.0%} of it")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
