"""The demo: the whole chain on a synthetic archive, in-process, on CPU.

`make demo` runs this: synth-archive, ingest, pretrain (a few epochs), embed, fit the
classifier on the first hours' synthetic labels, classify, cluster; then it prints
where the store and the plots are, the held-out accuracy beside a randomly
initialised encoder's, and the best k. Everything is written under ``workdir``;
nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from aurora_pipeline.classify.evaluation import compare_with_random_init
from aurora_pipeline.events import store_events, write_events
from aurora_pipeline.keograms import keogram
from aurora_pipeline.plots import keogram_png, labels_along_night_png
from aurora_pipeline.store import StoreLike, open_site, open_store
from aurora_pipeline.summary import describe_store
from aurora_pipeline.synth.archive import write_synthetic_archive
from aurora_pipeline.synth.demo import DemoConfig
from flows.classify import classify_frames, fit_classifier_flow
from flows.cluster import cluster_embeddings_flow
from flows.embed import embed_frames_flow
from flows.ingest import ingest_archive
from flows.pretrain import pretrain_encoder_flow

DEMO = dict(sites=["gako", "gill"], start="2011-01-06T04", hours=4)
HOLDOUT = DemoConfig.holdout_hours_fraction
K_MIN, K_MAX = DemoConfig.k_min, DemoConfig.k_max


@task(cache_policy=NO_CACHE)
def make_archive(archive: Path, frames_per_hour: int):
    write_synthetic_archive(archive, layout="legacy", seed=0, frames_per_hour=frames_per_hour, **DEMO)


@task(cache_policy=NO_CACHE)
def compare(store: StoreLike, labels, checkpoint):
    return compare_with_random_init(store, labels, checkpoint, holdout_hours_fraction=HOLDOUT,
                                    progress=get_run_logger().info)


@task(cache_policy=NO_CACHE)
def night_plot(store: StoreLike, site, path):
    ds = open_site(store, site)
    codes = ds.label.values
    codes = np.where(np.isnan(codes), -1, codes).astype(np.int8) if codes.dtype.kind == "f" else codes  # NaN: none
    labels_along_night_png(ds.time.values, codes, ds.label.attrs["flag_meanings"].split(), path,
                           probabilities=ds.label_probability.values, title=f"{site}: labels along the night")


@task(cache_policy=NO_CACHE)
def where_and_when(store: StoreLike, site, root):
    """The keogram of one site with its label strip, and the event catalogue of the store."""
    keogram_png(keogram(store, site), root / f"keogram_{site}.png")  # the title `aurora-pipeline keogram` gives
    events = store_events(store)
    write_events(events, root / "events.csv")
    return events


@flow(name="demo")
def demo(workdir: str = DemoConfig.workdir, epochs: int = DemoConfig.epochs, image_size: int = DemoConfig.image_size,
         frames_per_hour: int = DemoConfig.frames_per_hour) -> dict:
    """The whole chain under ``workdir``; ``epochs``, ``image_size`` and ``frames_per_hour`` make
    a quicker run (the README's figures are from the defaults). The summary is returned and
    published as the markdown artifact ``demo-summary``; the command line prints it."""
    root = Path(workdir).resolve()
    archive, store, labels = root / "archive", str(root / "store.zarr"), str(root / "archive" / "labels.csv")
    checkpoint, classifier, clusters = str(root / "encoder"), str(root / "classifier"), str(root / "clusters")
    make_archive(archive, frames_per_hour)
    ingest_archive(archive=str(archive), store=store, image_size=image_size)
    pretrain_encoder_flow(store=store, checkpoint=checkpoint, epochs=epochs, resume=True)
    embed_frames_flow(store=store, checkpoint=checkpoint)
    fit = fit_classifier_flow(store=store, labels=labels, out=classifier, holdout_hours_fraction=HOLDOUT, overwrite=True)
    classify_frames(store=store, classifier=classifier)
    clustered = cluster_embeddings_flow(store=store, out=clusters, k_min=K_MIN, k_max=K_MAX)
    st = open_store(store)  # the subflows take its path (a flow's parameters are stored); the tasks share one Store
    versus = compare(st, labels, checkpoint)
    night_plot(st, "gako", root / "labels_along_night_gako.png")
    events = where_and_when(st, "gako", root)
    summary = describe_store(st)
    result = {
        "store": store,
        "plots": sorted(str(p) for p in root.glob("**/*.png") if "archive" not in p.parts),
        # two hour-grouped cross-validations, named for the frames they use: the classifier's fit
        # (fit-classifier's log line) sees only the fitted hours; the comparison uses all labelled hours
        "hour_cv_accuracy_fitted_hours_simclr": round(fit["cross_validation"]["accuracy"], 4),
        "holdout_accuracy_simclr": versus["simclr"]["holdout_accuracy"],
        "holdout_accuracy_random_init_encoder": versus["random_init"]["holdout_accuracy"],
        "hour_cv_accuracy_all_hours_simclr": versus["simclr"]["hour_cv_accuracy"],
        "hour_cv_accuracy_all_hours_random_init_encoder": versus["random_init"]["hour_cv_accuracy"],
        "best_k": clustered["best_k"],
        "k_max": K_MAX,
        "events": str(root / "events.csv"),
        "n_events": int(len(events)),
    }
    (root / "demo_summary.json").write_text(json.dumps({**result, "store_summary": summary}, indent=2, default=str))
    result["lines"] = summary["lines"] + [
        f"store: {store}",
        "plots:", *(f"  {p}" for p in result["plots"]),
        f"held-out accuracy on the synthetic labels (last hour of each site): SimCLR "
        f"{result['holdout_accuracy_simclr']:.3f}, random-init encoder {result['holdout_accuracy_random_init_encoder']:.3f}",
        f"hour-grouped cross-validated accuracy on all labelled hours (fitted and held-out): SimCLR "
        f"{result['hour_cv_accuracy_all_hours_simclr']:.3f}, random-init encoder "
        f"{result['hour_cv_accuracy_all_hours_random_init_encoder']:.3f}",
        f"hour-grouped cross-validated accuracy on the fitted hours only (the classifier's fit, as fit-classifier "
        f"logs it): SimCLR {result['hour_cv_accuracy_fitted_hours_simclr']:.3f}",
        f"best k = {result['best_k']} (silhouette over k = {K_MIN}..{K_MAX}"
        + (": the search limit, a larger k may score higher)" if result["best_k"] == K_MAX else ")"),
        f"events: {len(events)} labelled intervals in {root / 'events.csv'} (keogram: {root / 'keogram_gako.png'})",
    ]
    create_markdown_artifact(key="demo-summary", markdown="\n".join(["```", *result["lines"], "```"]),
                             description=f"the demo's summary, {root}")
    get_run_logger().info("demo finished: summary in %s", root / "demo_summary.json")
    return result
