"""The `aurora-pipeline` command: one subcommand per flow, plus the synthetic-data generators.

Each subcommand parses its options and calls one Prefect flow (or, for the
generators, one library function). Without PREFECT_API_URL the flows run in-process
on Prefect's ephemeral server: no server to start.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _sites(text: str | None) -> list[str] | None:
    return [s.strip().lower() for s in text.split(",") if s.strip()] if text else None


def _add_range(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sites", help="comma-separated four-letter site codes, e.g. gako,gill (default: all)")
    p.add_argument("--start", help="first hour, ISO 8601 UT, e.g. 2011-01-06T04")
    p.add_argument("--end", help="end (exclusive), ISO 8601 UT")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aurora-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth-archive", help="write a synthetic THEMIS ASI archive (real CDF files) and labels.csv")
    p.add_argument("dir")
    p.add_argument("--sites", default="gako,gill")
    p.add_argument("--start", default="2011-01-06T04")
    p.add_argument("--hours", type=int, default=3)
    p.add_argument("--frames-per-hour", type=int, default=120)
    p.add_argument("--layout", choices=["legacy", "v2024"], default="legacy")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("ingest", help="run the flow ingest-archive: CDF archive -> Zarr store")
    p.add_argument("--archive", required=True, help="local directory, https:// mirror root or s3://bucket/prefix")
    p.add_argument("--store", required=True, help="Zarr store path or s3:// URL")
    _add_range(p)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--dask-address", help="scheduler address of an existing Dask cluster (default: a LocalCluster)")

    p = sub.add_parser("pretrain", help="run the flow pretrain-encoder: SimCLR on the store's frames")
    p.add_argument("--store", required=True)
    p.add_argument("--checkpoint", required=True, help="output directory for checkpoints")
    _add_range(p)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    p.add_argument("--max-frames", type=int, help="train on a random sample of at most this many frames")
    p.add_argument("--no-mixed-precision", action="store_true", help="plain fp32 even where bf16 is available")

    p = sub.add_parser("embed", help="run the flow embed-frames: write `embedding` beside `frames`")
    p.add_argument("--store", required=True)
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or fsspec URL (s3://...)")
    _add_range(p)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--overwrite", action="store_true", help="replace another model's embeddings")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    p.add_argument("--dask-address")

    p = sub.add_parser("fit-classifier", help="fit the l2 logistic regression on labelled frames' embeddings")
    p.add_argument("--store", required=True)
    p.add_argument("--labels", required=True, help="CSV with columns site,time,class")
    p.add_argument("--out", required=True, help="output directory for the classifier")
    p.add_argument("--holdout-hours-fraction", type=float, default=0.0,
                   help="keep the last fraction of each site's hours out of the fit and report held-out metrics")
    p.add_argument("--C", type=float, default=1.0, help="inverse l2 regularisation strength")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("classify", help="run the flow classify-frames: write `label` and `label_probability`")
    p.add_argument("--store", required=True)
    p.add_argument("--classifier", required=True)
    _add_range(p)

    p = sub.add_parser("cluster", help="run the flow cluster-embeddings: K-means, best silhouette, `cluster`")
    p.add_argument("--store", required=True)
    p.add_argument("--out", help="where centroids and plots go (default: STORE's sibling STORE.clusters)")
    p.add_argument("--sites")
    p.add_argument("--k-min", type=int, default=3)
    p.add_argument("--k-max", type=int, default=15)
    p.add_argument("--silhouette-sample", type=int, default=10000)

    p = sub.add_parser("synth-oath", help="write a synthetic stand-in for the OATH release")
    p.add_argument("dir")
    p.add_argument("--n", type=int, default=5824)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", choices=["cropped_scaled", "rotated"], default="cropped_scaled")

    p = sub.add_parser("oath-benchmark", help="run the flow oath-benchmark: the paper's Table I on OATH")
    p.add_argument("--oath-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--download", action="store_true", help="fetch the release when the directory is absent")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--splits", default="0,1,2,3,4")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-images-per-class", type=int, help="a quick run on a subset")
    p.add_argument("--supervised-epochs", type=int, default=30)
    p.add_argument("--imagenet-weights", help="a torchvision ResNet18 ImageNet weights file you supply (none downloaded)")
    p.add_argument("--sha256", help="expected SHA256 of oath_v1.1_20181026.tgz (with --download)")
    p.add_argument("--sha256-url", help="where the release's SHA256 list is (with --download)")

    p = sub.add_parser("label-archive", help="run the flow label-archive: the nightly labelling of new files")
    p.add_argument("--archive", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--classifier", required=True)
    p.add_argument("--centroids", help="centroids directory from `cluster` (optional)")
    p.add_argument("--sites")
    p.add_argument("--lookback-days", type=int, default=30)
    p.add_argument("--reconcile", action="store_true", help="compare the whole archive, not only the look-back window")
    p.add_argument("--dask-address")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])

    p = sub.add_parser("demo", help="the whole chain on a synthetic archive, on this machine")
    p.add_argument("--workdir", default="demo_out")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    args = build_parser().parse_args(argv)
    handler = _HANDLERS[args.command]
    try:
        result = handler(args)
    except Exception as err:  # one clear line for errors we raise on purpose
        from aurora_pipeline.errors import AuroraError

        if isinstance(err, AuroraError):
            print(f"aurora-pipeline {args.command}: error: {err}", file=sys.stderr)
            return 2
        raise
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


def _synth_archive(args):
    from aurora_pipeline.synth.archive import write_synthetic_archive

    paths = write_synthetic_archive(
        args.dir, sites=_sites(args.sites), start=args.start, hours=args.hours,
        frames_per_hour=args.frames_per_hour, layout=args.layout, seed=args.seed,
    )
    return {"files": len(paths), "archive": args.dir, "labels": os.path.join(args.dir, "labels.csv")}


def _ingest(args):
    from flows.ingest import ingest_archive

    return ingest_archive(
        archive=args.archive, store=args.store, sites=_sites(args.sites), start=args.start, end=args.end,
        image_size=args.image_size, dask_address=args.dask_address,
    )


def _demo(args):
    from flows.demo import demo

    result = demo(workdir=args.workdir)
    print("\n" + "\n".join(result["lines"]))  # on stdout whatever Prefect's log level
    return None


def _pretrain(args):
    from flows.pretrain import pretrain_encoder

    return pretrain_encoder(
        store=args.store, checkpoint=args.checkpoint, sites=_sites(args.sites), start=args.start, end=args.end,
        epochs=args.epochs, batch_size=args.batch_size, device=args.device, seed=args.seed, resume=args.resume,
        max_frames=args.max_frames, image_size=args.image_size, mixed_precision=not args.no_mixed_precision,
    )


def _embed(args):
    from flows.embed import embed_frames

    return embed_frames(store=args.store, checkpoint=args.checkpoint, sites=_sites(args.sites), start=args.start,
                        end=args.end, device=args.device, overwrite=args.overwrite, dtype=args.dtype,
                        dask_address=args.dask_address)


def _fit_classifier(args):
    from flows.classify import fit_classifier_flow

    report = fit_classifier_flow(store=args.store, labels=args.labels, out=args.out,
                                 holdout_hours_fraction=args.holdout_hours_fraction, C=args.C, overwrite=args.overwrite)
    cv = report["cross_validation"]
    short = {"classifier": report["classifier_dir"], "classifier_id": report["classifier_id"],
             "encoder_id": report["encoder_id"], "labelled_frames": report["n_labelled"],
             "cv_accuracy": round(cv["accuracy"], 4), "cv_accuracy_std": round(cv["accuracy_std"], 4),
             "per_class": {c: {"precision": round(cv["precision"][i], 3), "recall": round(cv["recall"][i], 3),
                               "f1": round(cv["f1"][i], 3)} for i, c in enumerate(cv["class_names"])},
             "confusion_matrix_png": os.path.join(args.out, "confusion_matrix.png")}
    if report["holdout"]:
        short["holdout_accuracy"] = round(report["holdout"]["accuracy"], 4)
    return short


def _classify(args):
    from flows.classify import classify_frames

    return classify_frames(store=args.store, classifier=args.classifier, sites=_sites(args.sites),
                           start=args.start, end=args.end)


def _cluster(args):
    from flows.cluster import cluster_embeddings

    out = args.out or str(args.store).rstrip("/") + ".clusters"
    return cluster_embeddings(store=args.store, out=out, sites=_sites(args.sites), k_min=args.k_min,
                              k_max=args.k_max, silhouette_sample=args.silhouette_sample)


def _synth_oath(args):
    from aurora_pipeline.oath.synth import write_synthetic_oath

    write_synthetic_oath(args.dir, n=args.n, seed=args.seed, layout=args.layout)
    return {"oath_dir": args.dir, "images": args.n}


def _oath_benchmark(args):
    from flows.oath_benchmark import oath_benchmark

    return oath_benchmark(oath_dir=args.oath_dir, out=args.out, download=args.download, epochs=args.epochs,
                          batch_size=args.batch_size, image_size=args.image_size, splits=args.splits,
                          device=args.device, seed=args.seed, max_images_per_class=args.max_images_per_class,
                          supervised_epochs=args.supervised_epochs, imagenet_weights=args.imagenet_weights,
                          sha256=args.sha256, sha256_url=args.sha256_url)


def _label_archive(args):
    from flows.label_archive import label_archive

    return label_archive(archive=args.archive, store=args.store, checkpoint=args.checkpoint,
                         classifier=args.classifier, centroids=args.centroids, sites=_sites(args.sites),
                         lookback_days=args.lookback_days, reconcile=args.reconcile,
                         dask_address=args.dask_address, device=args.device)


_HANDLERS = {
    "synth-archive": _synth_archive, "ingest": _ingest, "pretrain": _pretrain, "embed": _embed,
    "fit-classifier": _fit_classifier, "classify": _classify, "cluster": _cluster, "synth-oath": _synth_oath,
    "oath-benchmark": _oath_benchmark, "label-archive": _label_archive, "demo": _demo,
}

if __name__ == "__main__":
    sys.exit(main())
