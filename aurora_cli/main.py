"""The `aurora-pipeline` command: one subcommand per flow, plus the synthetic-data generators.

Each subcommand parses its options and calls one Prefect flow (or, for the
generators, one library function). The flows need a Prefect API: the one
PREFECT_API_URL names, else the local server of `aurora-pipeline server start`
when it is up, else a temporary server that Prefect starts for the one command
(see aurora_cli/local_server.py). An error the user can fix is printed once, as one
line, with exit code 2; `--debug` adds its traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from aurora_cli import keogram_events, occurrence, search
from aurora_cli.heartbeats import command_heartbeats
from aurora_cli.options import add_range, config_option

# Only the standard library and aurora_cli's argparse helpers at the top: a command that the warm runner
# takes imports this module and hands over before any parsing, and `import aurora_cli.main` costs ~0.07 s here.
# The library's modules (the configs, the checks: ~40 ms with aurora_pipeline's version look-up), the
# local server (~160 ms: urllib, http), the flows (prefect: seconds) are imported in the functions that
# use them (python -X importtime -c 'import aurora_cli.main, aurora_cli.local_server').

DRAIN_TIMEOUT_S = 30.0  # at most this long waiting for Prefect to send its last events after an error


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    # the stage configs (light: no numpy) are imported here, not at the top, like every library module in this
    # file: `import aurora_cli.main` stays free of the aurora_pipeline package (its version look-up), see the top
    from aurora_pipeline.classify.config import ClassifierConfig
    from aurora_pipeline.cluster.config import ClusterConfig
    from aurora_pipeline.config import DEVICE_CHOICES
    from aurora_pipeline.embed.config import OUTPUT_DTYPES, EmbedConfig
    from aurora_pipeline.encoder.config import PretrainConfig
    from aurora_pipeline.ingest.config import PreprocessConfig
    from aurora_pipeline.oath.config import OathBenchmarkConfig
    from aurora_pipeline.source.sites import ALTITUDES_KM
    from aurora_pipeline.synth.demo import DemoConfig

    parser = argparse.ArgumentParser(prog="aurora-pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (and Prefect's own log records of it)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error (and Prefect's own log records of it)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_parser = sub.add_parser
    sub.add_parser = lambda *a, **k: _add_parser(*a, parents=[common], **k)  # --debug after the subcommand too

    p = sub.add_parser("server", help="start, stop or show the local Prefect server the other commands use")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--port", type=int, default=None, help="TCP port on 127.0.0.1 for `start` (default 4200)")

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
    add_range(p)
    config_option(p, PreprocessConfig, "image_size", default=None, help="side in pixels of the stored frames "
                  f"(8..512; default: the store's own setting, {PreprocessConfig.image_size} for a new store)")
    p.add_argument("--dask-address", help="scheduler address of an existing Dask cluster (default: a LocalCluster)")
    p.add_argument("--skymaps", help="UCalgary skymap tree (folder, https:// mirror or s3://): field of view by "
                   "elevation, el/az/lat/lon stored beside the frames (default: the inscribed circle)")
    config_option(p, PreprocessConfig, "min_elevation",
                  help="with --skymaps: pixels below this elevation (degrees) are outside the field of view")
    config_option(p, PreprocessConfig, "map_altitude_km", "--map-altitude", choices=[float(a) for a in ALTITUDES_KM],
                  help="with --skymaps: altitude (km) of the stored lat/lon")
    p.add_argument("--checkpoint", help="an encoder checkpoint: a new store gets its preprocessing setting and "
                   "size (the imported Aurora-FM: OATH framing at 224 px); a store of another setting is refused")

    p = sub.add_parser("import-encoder", help="the published encoder (Aurora-FM state dict) -> a project checkpoint")
    p.add_argument("file", help="aurora-fm-no-finetune.tar, or any torch.save state dict of its layout")
    p.add_argument("--out", required=True, help="the checkpoint directory to write")
    p.add_argument("--sha256", help="the file's SHA-256 (default: the release's own, "
                   "f9c97e90...2c64e33); any other file needs its digest here")

    p = sub.add_parser("pretrain", help="run the flow pretrain-encoder: SimCLR on the store's frames")
    p.add_argument("--store", required=True)
    p.add_argument("--checkpoint", required=True, help="output directory for checkpoints")
    add_range(p)
    config_option(p, PretrainConfig, "epochs")
    config_option(p, PretrainConfig, "batch_size")
    config_option(p, PretrainConfig, "image_size", default=None,
                  help="encoder input side in pixels (default: the store's frame size; frames are resized to it)")
    config_option(p, PretrainConfig, "device", choices=DEVICE_CHOICES)
    config_option(p, PretrainConfig, "seed")
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    p.add_argument("--max-frames", type=int, help="train on a random sample of at most this many frames")
    config_option(p, PretrainConfig, "mixed_precision", help="plain fp32 even where bf16 is available")

    p = sub.add_parser("embed", help="run the flow embed-frames: write `embedding` beside `frames`")
    p.add_argument("--store", required=True)
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or fsspec URL (s3://...)")
    add_range(p)
    config_option(p, EmbedConfig, "device", choices=DEVICE_CHOICES)
    p.add_argument("--overwrite", action="store_true", help="replace another model's embeddings")
    config_option(p, EmbedConfig, "dtype", choices=OUTPUT_DTYPES)
    p.add_argument("--dask-address")

    p = sub.add_parser("fit-classifier", help="fit the l2 logistic regression on labelled frames' embeddings "
                       "(--store + --labels), or on OATH embedded by an encoder (--oath-dir + --checkpoint)")
    p.add_argument("--store")
    p.add_argument("--labels", help="CSV with columns site,time,class")
    p.add_argument("--oath-dir", help="the OATH release (classifications/, images/): fit on its six classes")
    p.add_argument("--checkpoint", help="with --oath-dir: the encoder that embeds OATH (and the stores to label)")
    p.add_argument("--splits", default="0,1,2,3,4", help="with --oath-dir: reference split rows scored")
    p.add_argument("--max-images-per-class", type=int, help="with --oath-dir: a quick run on a subset")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="with --oath-dir")
    p.add_argument("--out", required=True, help="output directory for the classifier")
    p.add_argument("--holdout-hours-fraction", type=float, default=0.0,
                   help="keep the last fraction of each site's hours out of the fit and report held-out metrics")
    config_option(p, ClassifierConfig, "C", "--C", help="inverse l2 regularisation strength")
    config_option(p, ClassifierConfig, "cv_folds",
                  help="cross-validation folds of whole site-hours (fewer when there are fewer site-hours)")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("classify", help="run the flow classify-frames: write `label` and `label_probability`")
    p.add_argument("--store", required=True)
    p.add_argument("--classifier", required=True)
    add_range(p)

    p = sub.add_parser("cluster", help="run the flow cluster-embeddings: K-means, best silhouette, `cluster`")
    p.add_argument("--store", required=True)
    p.add_argument("--out", help="where centroids and plots go (default: STORE's sibling STORE.clusters)")
    p.add_argument("--sites")
    config_option(p, ClusterConfig, "k_min")
    config_option(p, ClusterConfig, "k_max")
    config_option(p, ClusterConfig, "silhouette_sample")

    p = sub.add_parser("synth-oath", help="write a synthetic stand-in for the OATH release")
    p.add_argument("dir")
    p.add_argument("--n", type=int, default=5824)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", choices=["cropped_scaled", "rotated"], default="cropped_scaled")

    p = sub.add_parser("oath-benchmark", help="run the flow oath-benchmark: the paper's Table I on OATH")
    p.add_argument("--oath-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--download", action="store_true", help="fetch the release when the directory is absent")
    for name in ("epochs", "batch_size", "image_size"):
        config_option(p, OathBenchmarkConfig, name)
    splits = ",".join(map(str, OathBenchmarkConfig.splits))
    config_option(p, OathBenchmarkConfig, "splits", default=splits, help=f"rows of train_test_split.csv to evaluate "
                  f"on, comma-separated (default {splits})")
    config_option(p, OathBenchmarkConfig, "device", choices=DEVICE_CHOICES)
    config_option(p, OathBenchmarkConfig, "seed")
    config_option(p, OathBenchmarkConfig, "max_images_per_class", help="a quick run on a subset")
    config_option(p, OathBenchmarkConfig, "supervised_epochs", help="epochs of the supervised ResNet18 baseline "
                  "(default: 30 at 100 epochs, scaled with --epochs)", default=None)
    config_option(p, OathBenchmarkConfig, "imagenet_weights",
                  help="a torchvision ResNet18 ImageNet weights file you supply (none downloaded)", default=None)
    config_option(p, OathBenchmarkConfig, "mixed_precision", help="plain fp32 even where bf16 is available")
    p.add_argument("--sha256", help="expected SHA256 of oath_v1.1_20181026.tgz (with --download)")
    p.add_argument("--checkpoint", help="evaluate this encoder (e.g. import-encoder's) instead of pretraining one: "
                   "linear probe and silhouettes, at its input size and preprocessing")
    p.add_argument("--sha256-url", help="where the release's SHA256 list is (with --download)")

    # label-archive: the options are aurora_pipeline.nightly.NightlyConfig's fields, with its defaults
    # (tests/flows/test_label_archive.py checks they agree)
    p = sub.add_parser("label-archive", help="run the flow label-archive: the nightly labelling of new files")
    p.add_argument("--archive", required=True, help="local directory, https:// mirror root or s3://bucket/prefix")
    p.add_argument("--store", required=True, help="Zarr store path or s3:// URL")
    p.add_argument("--checkpoint", required=True, help="encoder checkpoint (pretrain's run directory or a .pt file)")
    p.add_argument("--classifier", required=True, help="classifier directory from `fit-classifier`")
    p.add_argument("--centroids", help="centroids directory from `cluster` (optional)")
    p.add_argument("--sites", help="comma-separated four-letter site codes, e.g. gako,gill (default: all)")
    p.add_argument("--lookback-days", type=int, default=30,
                   help="the window reaches this many days back from the run's hour (30)")
    p.add_argument("--reconcile", action="store_true", help="compare the whole archive, not only the look-back window")
    p.add_argument("--image-size", type=int, help="side in pixels of the stored frames (default: the store's own "
                   "setting, 128 for a new store)")
    p.add_argument("--skymaps", help="UCalgary skymap tree (folder, https:// mirror or s3://) (default: the one the "
                   "store recorded when it was ingested with --skymaps; none: the inscribed circle)")
    p.add_argument("--min-elevation", type=float,
                   help="with skymaps: elevation cut in degrees (default: the store's own, 13.5 for a new store)")
    p.add_argument("--map-altitude", dest="map_altitude_km", type=float, choices=[float(a) for a in ALTITUDES_KM],
                   help="with skymaps: altitude (km) of the stored lat/lon (default: the store's own, 110 for a new "
                   "store)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="torch device of the embedding")
    p.add_argument("--embed-batch-size", type=int, default=512, help="frames per forward pass of the encoder (512)")
    p.add_argument("--dask-address", help="scheduler address of an existing Dask cluster (default: a LocalCluster)")

    p = sub.add_parser("demo", help="the whole chain on a synthetic archive, on this machine")
    config_option(p, DemoConfig, "workdir")
    config_option(p, DemoConfig, "epochs", type=_positive, help="pretraining epochs (fewer for a quicker run)")
    config_option(p, DemoConfig, "image_size", help="side of the stored frames in pixels")
    config_option(p, DemoConfig, "frames_per_hour", type=_positive,
                  help="frames in each of the synthetic archive's 8 site-hours (fewer for a quicker run)")
    keogram_events.add_parsers(sub)  # keogram, events: figures and tables from the store, no flow
    search.add_parsers(sub)  # index (flow build-index), similar (no flow)
    occurrence.add_parsers(sub)  # occurrence (no flow)

    p = sub.add_parser("convert-store", help="copy a store of the old per-hour layout (format 1) into a new store")
    p.add_argument("old", help="the format-1 store")
    p.add_argument("new", help="the new (format-2) store to write")
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the `aurora-pipeline` command itself: the warm runner, when one is up, runs it
        argv = sys.argv[1:]
        code = _run_in_warm_runner(argv)
        if code is not None:
            return code
    args = build_parser().parse_args(argv)
    handler = _HANDLERS[args.command]
    try:
        check_values(args)  # at the edge, before any flow starts
        if args.command in _NO_FLOW:
            result = handler(args)
        else:
            _prepare_prefect(args.debug)
            with command_heartbeats():  # the command's own runs wait for no heartbeat thread (see the module)
                result = handler(args)
    except Exception as err:
        # the library: off `import aurora_cli.main` (see the top); loaded by the parse already
        from aurora_pipeline.errors import AuroraError

        err = _named_damage(err, args)
        if not isinstance(err, AuroraError) or args.debug:
            raise  # a bug, or --debug: the whole traceback
        _drain_prefect()  # Prefect's last log lines come before ours, not after
        print(f"aurora-pipeline {args.command}: error: {err}", file=sys.stderr)  # once, one line
        return 2
    if isinstance(result, int):
        return result
    if result is not None:
        print(json.dumps(_json_ready(result), indent=2, default=str, allow_nan=False))
    return 0


def check_values(args: argparse.Namespace) -> None:
    """Check (and normalise in place) the values of a parsed command with the library's own checks:
    the time range (``hours.time_range``, offsets converted to UT), site codes (``sites.parse_sites``),
    and the counts and sizes a flow would otherwise refuse only after it started."""
    from aurora_pipeline.source.sites import check_site, parse_sites  # light, as in build_parser
    from aurora_pipeline.values import optional_positive_int

    given = vars(args)
    if "start" in given and "end" in given:
        from aurora_pipeline.hours import range_text  # numpy: only for a command with a time range

        args.start, args.end = range_text(args.start, args.end)
    if given.get("sites") is not None:
        args.sites = parse_sites(args.sites, "--sites")
    if given.get("site") is not None:
        args.site = check_site(args.site, "--site")
    if args.command == "ingest" and args.image_size is not None:
        from aurora_pipeline.ingest.config import PreprocessConfig  # light, as in build_parser

        PreprocessConfig(image_size=args.image_size)
    if args.command == "pretrain":
        from aurora_pipeline.encoder.config import PretrainConfig  # light, as in build_parser

        optional_positive_int(args.max_frames, "--max-frames", "give --max-frames 1 or more, or leave it out for all")
        PretrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device, seed=args.seed,
                       **({} if args.image_size is None else {"image_size": args.image_size}))


def _named_damage(err: Exception, args: argparse.Namespace) -> Exception:
    """A metadata file of the store that is not JSON is the user's damaged store, named; else ``err``."""
    if not isinstance(err, (json.JSONDecodeError, UnicodeDecodeError)) or not getattr(args, "store", None):
        return err
    # the store (xarray, zarr): only to name a damaged store after an error
    from aurora_pipeline.store.damage import damage_error

    return damage_error(args.store) or err


def _drain_prefect() -> None:
    """Let Prefect's background services (events, logs) finish, so their last words come before ours."""
    if "prefect" not in sys.modules:
        return
    # prefect: only when a flow ran (checked above)
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (EventsWorker, APILogWorker):  # what Prefect itself drains at exit, after our line
        worker.drain_all(timeout=DRAIN_TIMEOUT_S)


def _run_in_warm_runner(argv: list[str]) -> int | None:
    """The exit code of ``argv`` run by the warm runner of `aurora-pipeline server start`, or None
    when there is none or it would not run it as this process would (see aurora_cli/command_runner.py)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in (None, "server"):
        return None
    # the local server (urllib, http: ~160 ms): off `import aurora_cli.main` and --help (see the top)
    from aurora_cli.command_runner import run_in_runner
    from aurora_cli.local_server import choose_api

    env, debug = dict(os.environ), "--debug" in argv
    api = choose_api(env)
    if api != "local-server":
        if debug:
            # as above
            from aurora_cli.local_server import prefect_home

            why = ("PREFECT_API_URL (or the Prefect profile) names a server" if api == "configured" else
                   f"no `aurora-pipeline server start` server is running for the Prefect home {prefect_home(env)} "
                   "(PREFECT_HOME); a runner serves only the Prefect home it was started with")
            print(f"aurora-pipeline: the warm runner is not used: {why}; running here", file=sys.stderr)
        return None
    return run_in_runner(argv, env, debug=debug)


def _prepare_prefect(debug: bool) -> None:
    """Pick the Prefect API before Prefect is imported; keep user errors off the console."""
    # the local server, the terminal filter: off `import aurora_cli.main`, as above
    from aurora_cli.local_server import choose_api

    if choose_api() == "temporary":
        print("aurora-pipeline: no Prefect server is running, so Prefect starts a temporary one for this "
              "command (the first start on a new PREFECT_HOME creates its database and can take minutes). "
              "`aurora-pipeline server start` keeps one up for the next commands.", file=sys.stderr)
    if not debug:
        # as above
        from aurora_cli.terminal import hide_user_errors_on_console

        hide_user_errors_on_console()


def _json_ready(value):
    """``value`` with NaN and infinities as None, so the output is JSON (``null``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def _server(args):
    # as above
    from aurora_cli import local_server

    if args.action == "start":
        state, started = local_server.start_server(port=args.port or local_server.DEFAULT_PORT,
                                                   progress=lambda m: print(m, file=sys.stderr))
        if not started and args.port not in (None, state.port):
            print(f"aurora-pipeline server: already running on port {state.port}, not {args.port}", file=sys.stderr)
        print(json.dumps({"running": True, "started_now": started, "api_url": state.api_url,
                          "ui": state.api_url.removesuffix("/api"), "pid": state.pid, "log": state.log,
                          "runner": local_server.server_status()["runner"]}, indent=2))
        return 0
    if args.action == "stop":
        state = local_server.stop_server()
        print(json.dumps({"running": False, "stopped": state is not None}, indent=2))
        return 0
    status = local_server.server_status()
    print(json.dumps(status, indent=2))
    return 0 if status["running"] else 1


def _synth_archive(args):
    # scipy: only for the command that runs it
    from aurora_pipeline.synth.archive import write_synthetic_archive

    paths = write_synthetic_archive(
        args.dir, sites=args.sites, start=args.start, hours=args.hours,
        frames_per_hour=args.frames_per_hour, layout=args.layout, seed=args.seed,
    )
    return {"files": len(paths), "archive": args.dir, "labels": os.path.join(args.dir, "labels.csv")}


def _ingest(args):
    # the flows (prefect, the store, dask): only for the command that runs one, so --help stays fast
    from flows.ingest import ingest_archive

    return ingest_archive(
        archive=args.archive, store=args.store, sites=args.sites, start=args.start, end=args.end,
        image_size=args.image_size, dask_address=args.dask_address, skymaps=args.skymaps,
        min_elevation=args.min_elevation, map_altitude_km=args.map_altitude_km, checkpoint=args.checkpoint,
    )


def _import_encoder(args):
    # torch: only for the command that runs it
    from aurora_pipeline.encoder.release import import_encoder

    meta = import_encoder(args.file, args.out, sha256=args.sha256)
    return {"checkpoint": meta["path"], "model_id": meta["model_id"], "image_size": meta["config"]["image_size"],
            "preprocess": meta["preprocess"], "source": meta["provenance"]["imported_from"],
            "is_the_release": meta["provenance"]["is_the_release"]}


def _demo(args):
    # the flows: only for the command that runs one, as above
    from flows.demo import demo

    result = demo(workdir=args.workdir, epochs=args.epochs, image_size=args.image_size,
                  frames_per_hour=args.frames_per_hour)
    print("\n" + "\n".join(result["lines"]))  # once, on stdout, whatever Prefect's log level
    return None


def _pretrain(args):
    # the flows: only for the command that runs one, as above
    from flows.pretrain import pretrain_encoder_flow

    return pretrain_encoder_flow(
        store=args.store, checkpoint=args.checkpoint, sites=args.sites, start=args.start, end=args.end,
        epochs=args.epochs, batch_size=args.batch_size, device=args.device, seed=args.seed, resume=args.resume,
        max_frames=args.max_frames, image_size=args.image_size, mixed_precision=args.mixed_precision,
    )


def _embed(args):
    # the flows: only for the command that runs one, as above
    from flows.embed import embed_frames_flow

    return embed_frames_flow(store=args.store, checkpoint=args.checkpoint, sites=args.sites, start=args.start,
                        end=args.end, device=args.device, overwrite=args.overwrite, dtype=args.dtype,
                        dask_address=args.dask_address)


def _fit_classifier(args):
    # the flows: only for the command that runs one, as above
    from aurora_pipeline.errors import BadInputError
    from flows.classify import fit_classifier_flow, fit_oath_classifier_flow

    if args.oath_dir or args.checkpoint:
        if not (args.oath_dir and args.checkpoint) or args.store or args.labels:
            raise BadInputError("fit-classifier", "--oath-dir and --checkpoint go together, without --store/--labels",
                                "pass --oath-dir DIR --checkpoint CKPT, or --store STORE --labels LABELS.csv")
        report = fit_oath_classifier_flow(oath_dir=args.oath_dir, checkpoint=args.checkpoint, out=args.out, C=args.C,
                                          splits=args.splits, max_images_per_class=args.max_images_per_class,
                                          device=args.device, overwrite=args.overwrite)
        s = report["splits"]
        return {"classifier": report["classifier_dir"], "classifier_id": report["classifier_id"],
                "encoder_id": report["encoder_id"], "oath_images": report["n_images"],
                "oath_split_accuracy": _rounded(s["accuracy"], 4), "oath_split_accuracy_std": _rounded(s["accuracy_std"], 4),
                "oath_split_accuracies": [_rounded(a, 4) for a in s["fold_accuracies"]],
                "f1_macro": _rounded(s["f1_macro"], 4), "images_per_second": report["images_per_second"],
                **({"note": report["note"]} if report["note"] else {})}
    if not (args.store and args.labels):
        raise BadInputError("fit-classifier", "needs --store and --labels (or --oath-dir and --checkpoint)",
                            "pass --store STORE --labels LABELS.csv, or --oath-dir DIR --checkpoint CKPT")

    report = fit_classifier_flow(store=args.store, labels=args.labels, out=args.out,
                                 holdout_hours_fraction=args.holdout_hours_fraction, C=args.C,
                                 overwrite=args.overwrite, cv_folds=args.cv_folds)
    return fit_summary(report, args.out)


def fit_summary(report: dict, out: str) -> dict:
    """The command's short account of a fit: ids, cross-validation (or why it could not run), per class."""
    cv = report["cross_validation"]
    names = cv["class_names"]
    short = {"classifier": report["classifier_dir"], "classifier_id": report["classifier_id"],
             "encoder_id": report["encoder_id"], "labelled_frames": report["n_labelled"],
             "cv_scheme": cv["scheme"], "cv_folds": cv["folds"],
             "cv_accuracy": _rounded(cv["accuracy"], 4), "cv_accuracy_std": _rounded(cv["accuracy_std"], 4)}
    if cv["note"]:
        short["cv_note"] = cv["note"]
    if cv["accuracy"] is None:
        short["training_accuracy"] = _rounded(cv.get("training_accuracy"), 4)
    else:  # per-class metrics are keyed by class name
        short["per_class"] = {c: {k: _rounded(cv[k][c], 3) for k in ("precision", "recall", "f1")} for c in names}
        short["confusion_matrix_png"] = os.path.join(out, "confusion_matrix.png")
    if report["holdout"]:
        short["holdout_accuracy"] = _rounded(report["holdout"]["accuracy"], 4)
    return short


def _rounded(value, digits: int):
    return None if value is None else round(float(value), digits)


def _classify(args):
    # the flows: only for the command that runs one, as above
    from flows.classify import classify_frames

    return classify_frames(store=args.store, classifier=args.classifier, sites=args.sites,
                           start=args.start, end=args.end)


def _cluster(args):
    # the flows: only for the command that runs one, as above
    from flows.cluster import cluster_embeddings_flow

    out = args.out or str(args.store).rstrip("/") + ".clusters"
    return cluster_embeddings_flow(store=args.store, out=out, sites=args.sites, k_min=args.k_min,
                                   k_max=args.k_max, silhouette_sample=args.silhouette_sample)


def _synth_oath(args):
    # pandas, scipy: only for the command that runs it
    from aurora_pipeline.oath.synth import write_synthetic_oath

    write_synthetic_oath(args.dir, n=args.n, seed=args.seed, layout=args.layout)
    return {"oath_dir": args.dir, "images": args.n}


def _oath_benchmark(args):
    # the flows: only for the command that runs one, as above
    from flows.oath_benchmark import oath_benchmark

    return oath_benchmark(oath_dir=args.oath_dir, out=args.out, download=args.download, epochs=args.epochs,
                          batch_size=args.batch_size, image_size=args.image_size, splits=args.splits,
                          device=args.device, seed=args.seed, max_images_per_class=args.max_images_per_class,
                          supervised_epochs=args.supervised_epochs, imagenet_weights=args.imagenet_weights,
                          sha256=args.sha256, sha256_url=args.sha256_url, mixed_precision=args.mixed_precision,
                          checkpoint=args.checkpoint)


def _convert_store(args):
    # the store: only for the command that runs it
    from aurora_pipeline.store.legacy import convert_store

    return convert_store(args.old, args.new)


def _label_archive(args):
    # the flows: only for the command that runs one, as above
    from flows.label_archive import label_archive

    return label_archive(archive=args.archive, store=args.store, checkpoint=args.checkpoint,
                         classifier=args.classifier, centroids=args.centroids, sites=args.sites,
                         lookback_days=args.lookback_days, reconcile=args.reconcile, image_size=args.image_size,
                         skymaps=args.skymaps, min_elevation=args.min_elevation, map_altitude_km=args.map_altitude_km,
                         device=args.device, embed_batch_size=args.embed_batch_size, dask_address=args.dask_address)


_NO_FLOW = {"server", "synth-archive", "synth-oath", "keogram", "events", "convert-store", "import-encoder"}  # no flow: no Prefect API
_HANDLERS = {
    "server": _server, "synth-archive": _synth_archive, "ingest": _ingest, "pretrain": _pretrain, "embed": _embed,
    "fit-classifier": _fit_classifier, "classify": _classify, "cluster": _cluster, "synth-oath": _synth_oath,
    "oath-benchmark": _oath_benchmark, "label-archive": _label_archive, "demo": _demo,
}
_HANDLERS["convert-store"] = _convert_store
_HANDLERS["import-encoder"] = _import_encoder
_HANDLERS.update(keogram_events.HANDLERS)
_HANDLERS.update(search.HANDLERS)
_NO_FLOW |= search.NO_FLOW
_HANDLERS.update(occurrence.HANDLERS)
_NO_FLOW |= occurrence.NO_FLOW

if __name__ == "__main__":
    sys.exit(main())
