"""The encoder on this machine's accelerator: correctness first, then throughput, in one command.

On a CUDA machine (the lent H200; see benchmarks/README.md for how to run it there):

    bash benchmarks/gpu_check.sh                       # results under $OUT/gpu_check
    python3 benchmarks/gpu_check.py --out DIR [--budget-s 420]

Anywhere else the same steps run on the CPU at a tiny setting (``tests/benchmarks/test_gpu_check.py``
runs it), so the check cannot rot before a GPU is lent:

    .venv/bin/python benchmarks/gpu_check.py --out gpu_check_out

Steps, in order; each has a time budget, and one that no longer fits in what is left of
``--budget-s`` is skipped, saying so (the whole run stops well inside 8 minutes: a
watchdog ends it ``--grace-s`` after the budget whatever a step is doing):

1. ``environment``: device, torch, CUDA and cuDNN versions, whether bf16 is native.
2. ``correctness``: the encoder's embeddings on the device in the project's default
   precision and memory format against float32 on the CPU for the same frames (cosine
   per frame, worst and mean); NT-Xent on the device against float64 on the CPU; one
   pretraining step (``train.train_step``) lowers the loss on its own batch.
3. ``bare_model``: the model alone on synthetic tensors already on the device: the
   forward pass in the default path and its variants (memory format, float32), and
   the SimCLR step in both memory formats.
4. ``embed_store``: end to end from a Zarr store: synthetic CDF archive ->
   ``list_archive`` -> ``ingest`` at ``image_size`` -> ``embed_with_checkpoint``,
   frames/s beside the bare forward pass.
5. ``pretrain_epoch``: one ``pretrain`` epoch at batch 128 and 128 px beside the bare
   SimCLR loop.
6. ``oath``: the OATH protocol (``run_oath_benchmark``) on the synthetic stand-in of
   5,824 images (``synth-oath --n 5824``) at as many SimCLR epochs as fit (stated),
   the time extrapolated to the paper's 100 epochs.

Output: ``DIR/results.json`` and ``DIR/report.md``, rewritten after every step, so a
run cut short still leaves what it measured. Scratch data go to ``--work`` (a
temporary folder by default, removed at the end). Exit status: 0 when every check
passed and no step failed (skipped steps do not fail the run), 1 otherwise, 3 when
the watchdog stopped it. Needs no network.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

RESULTS_FORMAT = "aurora-pipeline gpu check"
PAPER_EPOCHS = 100
GOALS = {  # issue 13, for one H100 or H200
    "embed_frames_per_second": 30000,
    "embed_vs_bare": 0.85,
    "pretrain_vs_bare": 0.90,
    "oath_100_epochs_seconds": 600,
}


@dataclass(frozen=True)
class Setting:
    """Sizes of every step. ``full`` is for a GPU; ``tiny`` keeps a 2-core CPU under a minute."""

    name: str
    image_size: int          # side of the stored frames and of the model's input
    batch_size: int          # SimCLR frames per step (the paper: 128)
    embed_batch: int         # frames per forward pass when embedding (EmbedConfig's default: 512)
    check_frames: int        # frames compared in the correctness step
    sites: tuple[str, ...]   # synthetic archive: sites x hours x frames_per_hour frames
    hours: int
    frames_per_hour: int
    archive_frame_size: int  # side of the synthetic CDF frames (THEMIS: 256)
    embed_repeats: int       # end-to-end embedding runs (the first includes cuDNN's warm-up)
    train_steps: int         # steps of the pretrain epoch (epoch = train_steps x batch_size frames)
    bare_batches: int        # timed batches/steps of the bare loops
    oath_n: int              # images of the synthetic OATH stand-in
    oath_image_size: int     # side of its PNGs (the release: 256)
    oath_splits: str         # split rows evaluated
    oath_max_epochs: int     # SimCLR epochs at most (the paper: 100)
    oath_extra: dict = dataclasses.field(default_factory=dict)  # further OathBenchmarkConfig settings
    budgets: dict = dataclasses.field(default_factory=dict)     # step -> (seconds needed to start, seconds planned)


FULL = Setting(
    name="full", image_size=128, batch_size=128, embed_batch=512, check_frames=256,
    sites=("gako", "gill", "fsmi", "inuv", "rank", "whit"), hours=4, frames_per_hour=1200, archive_frame_size=256,
    embed_repeats=3, train_steps=80, bare_batches=20, oath_n=5824, oath_image_size=256, oath_splits="0,1,2,3,4",
    oath_max_epochs=PAPER_EPOCHS, oath_extra={"supervised": False},
    budgets={"environment": (1, 10), "correctness": (20, 40), "bare_model": (15, 40), "embed_store": (60, 150),
             "pretrain_epoch": (20, 45), "oath": (90, 10_000)},
)
TINY = Setting(
    name="tiny", image_size=32, batch_size=8, embed_batch=32, check_frames=8,
    sites=("gako",), hours=2, frames_per_hour=16, archive_frame_size=64,
    embed_repeats=1, train_steps=3, bare_batches=1, oath_n=60, oath_image_size=64, oath_splits="0,1",
    oath_max_epochs=1,
    oath_extra={"supervised": False, "pixel_size": 16, "k_max": 5, "kmeans_n_init": 1, "classifier_max_iter": 200},
    budgets={"environment": (1, 10), "correctness": (2, 20), "bare_model": (2, 20), "embed_store": (5, 40),
             "pretrain_epoch": (2, 20), "oath": (5, 60)},
)


# ------------------------------------------------------------------ the run: steps, budget, output


class Run:
    """Holds the results, the deadline and the shared facts between steps; writes the output."""

    def __init__(self, out: Path, work: Path, setting: Setting, device: torch.device, budget_s: float, argv: list[str]):
        self.out, self.work, self.setting, self.device = out, work, setting, device
        self.start = time.monotonic()
        self.deadline = self.start + budget_s
        self.facts: dict[str, Any] = {}   # shared between steps: checkpoint, rates
        self.results: dict[str, Any] = {
            "format": RESULTS_FORMAT, "format_version": 1,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *argv]),
            "setting": dataclasses.asdict(setting), "budget_s": budget_s, "device": str(device),
            "steps": {}, "goals": {}, "finished": False,
        }
        self.lock = threading.Lock()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def step(self, name: str, fn: Callable[["Run"], dict]) -> None:
        need, planned = self.setting.budgets[name]
        entry: dict[str, Any] = {"status": "running", "planned_s": planned}
        left = self.left()
        if left < need:
            entry.update(status="skipped", reason=f"needs at least {need:.0f} s to start, {max(left, 0):.0f} s of the budget left")
            self._record(name, entry)
            print(f"[{name}] skipped: {entry['reason']}", flush=True)
            return
        self._record(name, entry)
        print(f"[{name}] started, {left:.0f} s of the budget left", flush=True)
        t = time.monotonic()
        try:
            entry["result"] = fn(self)
            entry["status"] = "ok" if all(c.get("passed", True) for c in entry["result"].get("checks", [])) else "check failed"
        except Exception as err:  # recorded and reported; the next steps still run
            entry.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(limit=8))
        entry["seconds"] = round(time.monotonic() - t, 2)
        self._record(name, entry)
        print(f"[{name}] {entry['status']} in {entry['seconds']:.1f} s" + (f": {entry['error']}" if "error" in entry else ""), flush=True)

    def _record(self, name: str, entry: dict) -> None:
        with self.lock:
            self.results["steps"][name] = entry
            self.results["elapsed_s"] = round(time.monotonic() - self.start, 1)
            self.write()

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.results["goals"] = evaluate_goals(self.results)
        for name, text in (("results.json", json.dumps(jsonable(self.results), indent=1, allow_nan=False)),
                           ("report.md", render_markdown(self.results))):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text + "\n")
            os.replace(tmp, self.out / name)


def jsonable(value: Any) -> Any:
    """Plain JSON types; NaN and inf become None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _mixed(device: torch.device) -> bool:
    from aurora_pipeline.device import use_mixed_precision

    return use_mixed_precision(device, True)  # the project's default: mixed_precision=True


def _precision(device: torch.device) -> str:
    return "bf16 autocast" if _mixed(device) else "float32"


# ------------------------------------------------------------------ step 1: environment


def step_environment(run: Run) -> dict:
    import aurora_pipeline
    from aurora_pipeline._torchvision_compat import import_torchvision
    from aurora_pipeline.device import memory_format_for, supports_bf16

    device = run.device
    out = {
        "python": platform.python_version(), "torch": torch.__version__, "torchvision": import_torchvision().__version__,
        "numpy": np.__version__, "aurora_pipeline": aurora_pipeline.__version__, "git_commit": _git_commit(),
        "cuda_runtime": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads(),
        "device": str(device), "native_bf16": supports_bf16(device), "default_precision": _precision(device),
        "memory_format_embed": str(memory_format_for(device, _mixed(device), "embed")),
        "memory_format_train": str(memory_format_for(device, _mixed(device), "train")),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(gpu=props.name, compute_capability=f"{props.major}.{props.minor}", gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   multiprocessors=props.multi_processor_count, driver=_nvidia_smi("driver_version"),
                   bf16_including_emulation=torch.cuda.is_bf16_supported(including_emulation=True),
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32,
                   cudnn_benchmark=torch.backends.cudnn.benchmark)
    return out


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _nvidia_smi(field: str) -> str | None:
    try:
        text = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout
        return text.strip().splitlines()[0] if text.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


# ------------------------------------------------------------------ step 2: correctness


def step_correctness(run: Run) -> dict:
    from aurora_pipeline.embed.model import EmbedConfig, embed_frames
    from aurora_pipeline.encoder.backbone import frames_to_input
    from aurora_pipeline.encoder.checkpoint import load_encoder
    from aurora_pipeline.encoder.loss import nt_xent_loss
    from aurora_pipeline.encoder.train import PretrainConfig, build_model, train_step
    from aurora_pipeline.encoder.augment import sample_params
    from aurora_pipeline.device import memory_format_for
    from train import synthetic_frames

    s, device, mixed = run.setting, run.device, _mixed(run.device)
    frames = synthetic_frames(max(s.check_frames, 2 * s.batch_size), size=s.image_size, seed=3)
    checkpoint = make_checkpoint(run, frames)
    checks = []

    # embeddings: the device's default path (folded batch norms, its memory format, bf16 where native) vs float32 on the CPU
    model, _ = load_encoder(checkpoint, "cpu")
    with torch.no_grad():
        reference = model.eval()(frames_to_input(torch.from_numpy(frames[: s.check_frames]))).numpy()
    got = embed_frames(model, frames[: s.check_frames], EmbedConfig(device=str(device), batch_size=s.embed_batch))
    cosine = (reference * got).sum(1) / np.linalg.norm(reference, axis=1) / np.linalg.norm(got, axis=1)
    floor = 0.99 if mixed else (0.999 if device.type == "cuda" else 0.99999)  # bf16 ~1% relative; TF32 convolutions on GPUs
    checks.append({"name": f"embedding cosine, {_precision(device)} on {device} vs float32 on cpu", "frames": len(cosine),
                   "worst": float(cosine.min()), "mean": float(cosine.mean()), "goal": f"worst >= {floor}",
                   "passed": bool(np.isfinite(got).all() and cosine.min() >= floor)})

    # NT-Xent: float32 on the device vs float64 on the CPU, value and gradient
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2 * s.batch_size, 128, generator=g, dtype=torch.float64)
    z_ref = z.clone().requires_grad_(True)
    loss_ref = nt_xent_loss(z_ref, 0.5)
    loss_ref.backward()
    z_dev = z.to(device, torch.float32).requires_grad_(True)
    loss_dev = nt_xent_loss(z_dev, 0.5)
    loss_dev.backward()
    loss_err = abs(float(loss_dev.detach()) - float(loss_ref.detach())) / abs(float(loss_ref.detach()))
    grad_err = float((z_dev.grad.double().cpu() - z_ref.grad).norm() / z_ref.grad.norm())
    checks.append({"name": f"NT-Xent float32 on {device} vs float64 on cpu", "loss_cpu": float(loss_ref.detach()), "loss_device": float(loss_dev.detach()),
                   "loss_relative_error": loss_err, "grad_relative_error": grad_err, "goal": "both <= 1e-4",
                   "passed": loss_err <= 1e-4 and grad_err <= 1e-4})

    # one pretraining step on a fixed batch and augmentation lowers that batch's loss
    cfg = PretrainConfig(batch_size=s.batch_size, image_size=s.image_size, device=str(device))
    encoder, head = build_model(cfg, device, memory_format_for(device, mixed, "train") == torch.channels_last)
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=cfg.lr)
    batch = torch.from_numpy(frames[: s.batch_size])
    params = sample_params(2 * s.batch_size, cfg.augment, torch.Generator().manual_seed(1), (s.image_size, s.image_size))
    encoder.train(), head.train()
    before = float(train_step(encoder, head, optimizer, batch, params, cfg, device, mixed))
    after = float(train_step(encoder, head, optimizer, batch, params, cfg, device, mixed))  # the loss after step 1
    checks.append({"name": f"one pretraining step ({_precision(device)}) lowers the loss of its batch", "loss_before": before,
                   "loss_after": after, "goal": "after < before", "passed": bool(math.isfinite(after) and after < before)})
    return {"checks": checks}


def make_checkpoint(run: Run, frames: np.ndarray, seed: int = 0) -> str:
    """A real checkpoint on the device (one short epoch), for the correctness and store steps."""
    from aurora_pipeline.encoder.train import PretrainConfig, pretrain

    s = run.setting
    key = f"checkpoint-{seed}"
    if key not in run.facts:
        path = run.work / f"encoder-{seed}"
        shutil.rmtree(path, ignore_errors=True)
        cfg = PretrainConfig(epochs=1, batch_size=s.batch_size, image_size=s.image_size, device=str(run.device), seed=seed)
        run.facts[key] = pretrain(frames[: 2 * s.batch_size], cfg, path).checkpoint
    return run.facts[key]


# ------------------------------------------------------------------ step 3: the bare model


def step_bare_model(run: Run) -> dict:
    from bare_model import bare_forward_rate, bare_train_step_seconds
    from aurora_pipeline.device import memory_format_for

    s, device, mixed = run.setting, run.device, _mixed(run.device)
    other = {torch.channels_last: torch.contiguous_format, torch.contiguous_format: torch.channels_last}
    fmt_embed, fmt_train = memory_format_for(device, mixed, "embed"), memory_format_for(device, mixed, "train")
    forward = [("default: " + _precision(device) + f", {_fmt(fmt_embed)}, batch norms folded", dict(mixed=mixed)),
               (f"{_precision(device)}, {_fmt(other[fmt_embed])}, folded", dict(mixed=mixed, fmt=other[fmt_embed])),
               (f"{_precision(device)}, {_fmt(fmt_embed)}, not folded", dict(mixed=mixed, fmt=fmt_embed, fold=False)),
               ("old float32 path: contiguous, not folded", dict(mixed=False, fmt=torch.contiguous_format, fold=False))]
    if mixed:
        forward.append(("float32, channels_last, folded", dict(mixed=False, fmt=torch.channels_last)))
    rates = {}
    for name, kwargs in forward:
        if run.left() < 5:
            break
        rates[name] = bare_forward_rate(device, batch_size=s.embed_batch, image_size=s.image_size, batches=s.bare_batches,
                                        warmup=3 if device.type == "cuda" else 1, **kwargs)
    train = {}
    for fmt in (fmt_train, other[fmt_train]):
        if run.left() < 5:
            break
        seconds = bare_train_step_seconds(device, mixed, s.batch_size, s.image_size, steps=s.bare_batches,
                                          warmup=3 if device.type == "cuda" else 1, fmt=fmt)
        train[f"{_precision(device)}, {_fmt(fmt)}" + (" (default)" if fmt == fmt_train else "")] = s.batch_size * len(seconds) / sum(seconds)
    run.facts["bare_forward"] = next(iter(rates.values()), None)
    run.facts["bare_train"] = next(iter(train.values()), None)
    return {"forward_frames_per_second": rates, "train_frames_per_second": train,
            "batch_forward": s.embed_batch, "batch_train": s.batch_size, "image_size": s.image_size}


def _fmt(fmt: torch.memory_format) -> str:
    return "channels_last" if fmt == torch.channels_last else "contiguous"


# ------------------------------------------------------------------ step 4: embedding from a Zarr store


def _write_archive_part(job: tuple[str, str, str, int, int, int]) -> float:
    from aurora_pipeline.synth.archive import write_synthetic_archive

    root, site, start, hours, frames_per_hour, size = job
    t = time.perf_counter()
    write_synthetic_archive(root, sites=(site,), start=start, hours=hours, frames_per_hour=frames_per_hour, size=size)
    return time.perf_counter() - t


def step_embed_store(run: Run) -> dict:
    from aurora_pipeline.embed.driver import embed_with_checkpoint
    from aurora_pipeline.ingest.driver import ingest
    from aurora_pipeline.ingest.preprocess import PreprocessConfig
    from aurora_pipeline.source.archive import list_archive
    from train import synthetic_frames

    s = run.setting
    frames = synthetic_frames(2 * s.batch_size, size=s.image_size, seed=3)
    # two encoders, used in turn: the driver skips hours that the same model already embedded
    checkpoints = [make_checkpoint(run, frames, seed) for seed in ((0, 1) if s.embed_repeats > 1 else (0,))]
    # one archive root per site-hour, so parallel writers never share a labels.csv
    t = time.perf_counter()
    jobs = []
    for site in s.sites:
        for h in range(s.hours):
            hour = np.datetime64("2011-01-06T04", "h") + np.timedelta64(h, "h")
            jobs.append((str(run.work / "archive" / f"{site}-{h}"), site, str(hour), 1, s.frames_per_hour, s.archive_frame_size))
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers > 1 and len(jobs) > 2:
        import multiprocessing

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_write_archive_part, jobs))
    else:
        for job in jobs:
            _write_archive_part(job)
    archive_s = time.perf_counter() - t
    files = sorted((f for job in jobs for f in list_archive(job[0])), key=lambda f: (f.site, f.hour_code))

    store = run.work / "store.zarr"
    t = time.perf_counter()
    report = ingest(files, str(store), PreprocessConfig(image_size=s.image_size))
    ingest_s = time.perf_counter() - t
    if report.failed:
        raise RuntimeError(f"ingest failed for {len(report.failed)} file(s): {report.summary()['failures'][:3]}")
    n = report.frames

    runs = []
    for r in range(s.embed_repeats):
        if r and run.left() < 10:
            break
        t = time.perf_counter()
        summary = embed_with_checkpoint(str(store), checkpoints[r % len(checkpoints)], device=str(run.device), overwrite=True,
                                        batch_size=s.embed_batch)
        seconds = time.perf_counter() - t
        if summary.get("frames") != n:
            raise RuntimeError(f"embedded {summary.get('frames')} frames, the store holds {n}")
        runs.append({"seconds": seconds, "frames_per_second": n / seconds, "driver_summary": summary})
    best = max(r["frames_per_second"] for r in runs)
    bare = run.facts.get("bare_forward")
    return {"frames": n, "files": len(files), "archive_seconds": archive_s, "archive_workers": workers,
            "ingest_seconds": ingest_s, "ingest_frames_per_second": n / ingest_s, "runs": runs,
            "best_frames_per_second": best, "bare_forward_frames_per_second": bare,
            "vs_bare": best / bare if bare else None,
            "note": "end to end: checkpoint load, Zarr reads, embedding, Zarr writes; the first run includes warm-up"}


# ------------------------------------------------------------------ step 5: one pretraining epoch


def step_pretrain_epoch(run: Run) -> dict:
    from aurora_pipeline.encoder.train import PretrainConfig, pretrain
    from train import synthetic_frames

    s = run.setting
    frames = synthetic_frames(s.train_steps * s.batch_size, size=s.image_size, seed=5)
    cfg = PretrainConfig(epochs=1, batch_size=s.batch_size, image_size=s.image_size, device=str(run.device),
                         log_every=min(10, max(1, s.train_steps - 1)))
    t = time.perf_counter()
    result = pretrain(frames, cfg, run.work / "pretrain-epoch")
    seconds = time.perf_counter() - t
    rate = result.images_per_second
    run.facts["pretrain_rate"] = rate
    bare = run.facts.get("bare_train")
    return {"frames": len(frames), "steps": s.train_steps, "batch_size": s.batch_size, "image_size": s.image_size,
            "seconds_with_checkpoint": seconds, "frames_per_second": rate, "bare_train_frames_per_second": bare,
            "vs_bare": rate / bare if bare and rate == rate else None, "mixed_precision": result.mixed_precision,
            "note": f"rate over the steps after the first {cfg.log_every} (warm-up), as pretrain reports it"}


# ------------------------------------------------------------------ step 6: the OATH protocol


def step_oath(run: Run) -> dict:
    from aurora_pipeline.oath.protocol import OathBenchmarkConfig, run_oath_benchmark
    from aurora_pipeline.oath.synth import write_synthetic_oath

    s = run.setting
    t = time.perf_counter()
    root = write_synthetic_oath(run.work / "oath", n=s.oath_n, seed=0, image_size=s.oath_image_size)
    synth_s = time.perf_counter() - t
    rate = run.facts.get("pretrain_rate") or run.facts.get("bare_train")
    epoch_s = s.oath_n / rate if rate and rate == rate else None
    # what is not SimCLR (loading 5,824 PNGs, embedding, 10 logistic regressions, the K-means scan, figures):
    # an estimate, not a measurement: nothing of it has run on the GPU machine yet
    overhead_s = 120.0 if s.name == "full" else 5.0
    if epoch_s:
        epochs = int(max(1, min(s.oath_max_epochs, (run.left() - overhead_s - 10) // epoch_s)))
    else:
        epochs = 1
    cfg = OathBenchmarkConfig(epochs=epochs, batch_size=s.batch_size, image_size=s.image_size, device=str(run.device),
                              splits=s.oath_splits, **s.oath_extra)
    log = []
    t = time.perf_counter()
    results = run_oath_benchmark(root, run.work / "oath-run", cfg, progress=lambda m: (log.append(m), print("  oath:", m, flush=True)))
    total_s = time.perf_counter() - t
    timings = results["timings_seconds"]
    simclr_s = timings["pretrain"]
    per_epoch = simclr_s / epochs
    steady = results["encoder"].get("images_per_second")
    extrapolated = total_s + (PAPER_EPOCHS - epochs) * per_epoch
    linear = results["models"]["simclr_linear"]
    return {"images": s.oath_n, "synth_oath_seconds": synth_s, "epochs_run": epochs, "epochs_chosen_from": {
                "planned_epoch_seconds": epoch_s, "overhead_guess_seconds": overhead_s, "max_epochs": s.oath_max_epochs},
            "config": cfg.to_dict(), "total_seconds": total_s, "timings_seconds": timings,
            "simclr_seconds_per_epoch": per_epoch, "simclr_images_per_second": steady,
            "extrapolated_100_epochs_seconds": extrapolated,
            "extrapolation": f"measured total + ({PAPER_EPOCHS} - {epochs}) x measured SimCLR seconds per epoch "
                             "(the first epoch's warm-up included, so slightly pessimistic)",
            "simclr_linear_accuracy_mean": linear["mean"]["accuracy"], "splits": list(cfg.splits),
            "supervised_resnet18": bool(cfg.supervised), "log_tail": log[-5:]}


# ------------------------------------------------------------------ goals and the markdown report


def evaluate_goals(results: dict) -> dict:
    """Each goal of the issue against what was measured (None: not measured)."""
    steps = results["steps"]

    def value(step: str, key: str):
        entry = steps.get(step, {})
        return entry.get("result", {}).get(key) if entry.get("status") in ("ok", "check failed") else None

    measured = {
        "embed_frames_per_second": value("embed_store", "best_frames_per_second"),
        "embed_vs_bare": value("embed_store", "vs_bare"),
        "pretrain_vs_bare": value("pretrain_epoch", "vs_bare"),
        "oath_100_epochs_seconds": value("oath", "extrapolated_100_epochs_seconds"),
    }
    out = {}
    for name, goal in GOALS.items():
        got = measured[name]
        met = None if got is None else (got <= goal if name == "oath_100_epochs_seconds" else got >= goal)
        out[name] = {"goal": goal, "measured": got, "met": met}
    out["applies"] = "one H100 or H200 at 128 px" if results["setting"]["name"] == "full" else \
        "no: this was the tiny CPU setting; the goals are for one H100 or H200"
    return out


def _num(value, digits=0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def render_markdown(results: dict) -> str:
    steps = results["steps"]
    env = steps.get("environment", {}).get("result", {})
    lines = [f"# GPU check ({results['setting']['name']} setting) on {env.get('gpu') or env.get('cpu') or results['device']}", "",
             f"Run {results['created']}, `{results['command']}`, budget {results['budget_s']:.0f} s, "
             f"elapsed {results.get('elapsed_s', 0):.0f} s{'' if results.get('finished') else ' (not finished)'}.", ""]
    if env:
        lines += [f"- torch {env.get('torch')} (CUDA {env.get('cuda_runtime')}, cuDNN {env.get('cudnn')}), torchvision {env.get('torchvision')}, "
                  f"Python {env.get('python')}, aurora-pipeline {env.get('aurora_pipeline')} at {env.get('git_commit') or 'unknown commit'}",
                  f"- device {env.get('device')}" + (f": {env.get('gpu')}, compute capability {env.get('compute_capability')}, "
                                                     f"{env.get('gpu_memory_gib')} GiB, driver {env.get('driver')}" if env.get("gpu") else
                                                     f": {env.get('cpu')}, {env.get('cpu_count')} cores, {env.get('cpu_capability')}, {env.get('torch_threads')} torch threads"),
                  f"- native bf16: {env.get('native_bf16')}; default precision: {env.get('default_precision')}; "
                  f"memory format: embedding {env.get('memory_format_embed')}, training {env.get('memory_format_train')}", ""]
    lines += ["## Steps", "", "| step | status | seconds | note |", "|---|---|---|---|"]
    for name, entry in steps.items():
        note = entry.get("reason") or entry.get("error") or ""
        lines.append(f"| {name} | {entry['status']} | {_num(entry.get('seconds'), 1)} | {note} |")
    checks = steps.get("correctness", {}).get("result", {}).get("checks", [])
    if checks:
        lines += ["", "## Correctness", "", "| check | result | goal | passed |", "|---|---|---|---|"]
        for c in checks:
            shown = {k: v for k, v in c.items() if k not in ("name", "goal", "passed")}
            text = ", ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
            lines.append(f"| {c['name']} | {text} | {c['goal']} | {'yes' if c['passed'] else '**no**'} |")
    bare = steps.get("bare_model", {}).get("result")
    if bare:
        lines += ["", f"## The bare model (synthetic tensors on the device, {bare['image_size']} px)", "",
                  "| forward pass, batch " + str(bare["batch_forward"]) + " | frames/s |", "|---|---|"]
        lines += [f"| {k} | {_num(v, 1)} |" for k, v in bare["forward_frames_per_second"].items()]
        lines += ["", "| SimCLR step, batch " + str(bare["batch_train"]) + " | frames/s |", "|---|---|"]
        lines += [f"| {k} | {_num(v, 1)} |" for k, v in bare["train_frames_per_second"].items()]
    lines += ["", "## Throughput against the bare model and the goals", "", "| measurement | measured | bare | ratio | goal |", "|---|---|---|---|---|"]
    emb = steps.get("embed_store", {}).get("result")
    if emb:
        lines.append(f"| embedding from a Zarr store, {emb['frames']:,} frames (best of {len(emb['runs'])}; runs "
                     f"{', '.join(_num(r['frames_per_second']) for r in emb['runs'])}) | {_num(emb['best_frames_per_second'])} frames/s | "
                     f"{_num(emb['bare_forward_frames_per_second'])} | {_num(emb['vs_bare'], 2)} | >= 30,000 frames/s, >= 0.85 of bare |")
        lines.append(f"| (setup) synthetic archive {_num(emb['archive_seconds'], 1)} s on {emb['archive_workers']} processes; ingest "
                     f"{_num(emb['ingest_seconds'], 1)} s = {_num(emb['ingest_frames_per_second'])} frames/s | | | | |")
    pre = steps.get("pretrain_epoch", {}).get("result")
    if pre:
        lines.append(f"| one pretrain epoch, {pre['frames']:,} frames, batch {pre['batch_size']}, {pre['image_size']} px | "
                     f"{_num(pre['frames_per_second'], 1)} frames/s | {_num(pre['bare_train_frames_per_second'], 1)} | {_num(pre['vs_bare'], 2)} | >= 0.90 of bare |")
    oath = steps.get("oath", {}).get("result")
    if oath:
        lines.append(f"| OATH protocol, {oath['images']:,} synthetic images, {oath['epochs_run']} SimCLR epoch(s), linear evaluation on splits "
                     f"{oath['splits']}, supervised ResNet18 {'on' if oath['supervised_resnet18'] else 'off'} | {_num(oath['total_seconds'], 1)} s "
                     f"({_num(oath['simclr_seconds_per_epoch'], 2)} s per SimCLR epoch); extrapolated to 100 epochs: "
                     f"**{_num(oath['extrapolated_100_epochs_seconds'])} s** | | | < 600 s |")
        lines.append(f"| (setup) synth-oath --n {oath['images']}: {_num(oath['synth_oath_seconds'], 1)} s; linear accuracy (synthetic data) "
                     f"{_num(oath['simclr_linear_accuracy_mean'], 3)} | | | | |")
    goals = results.get("goals", {})
    lines += ["", f"## Goals (apply: {goals.get('applies')})", "", "| goal | target | measured | met |", "|---|---|---|---|"]
    for name in GOALS:
        g = goals.get(name, {})
        met = g.get("met")
        lines.append(f"| {name} | {g.get('goal')} | {_num(g.get('measured'), 2)} | {'–' if met is None else ('yes' if met else '**no**')} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ main


STEPS = (("environment", step_environment), ("correctness", step_correctness), ("bare_model", step_bare_model),
         ("embed_store", step_embed_store), ("pretrain_epoch", step_pretrain_epoch), ("oath", step_oath))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu_check_out", help="folder for results.json and report.md")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed at the end)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--setting", choices=("auto", "full", "tiny"), default="auto", help="auto: full on CUDA, tiny on a CPU")
    parser.add_argument("--budget-s", type=float, default=420.0, help="steps that no longer fit in this are skipped")
    parser.add_argument("--grace-s", type=float, default=45.0, help="the watchdog ends the run this long after the budget")
    parser.add_argument("--steps", default=",".join(n for n, _ in STEPS), help="comma-separated subset of the steps")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from aurora_pipeline.device import resolve_device

    device = resolve_device(args.device)
    setting = {"full": FULL, "tiny": TINY}.get(args.setting, FULL if device.type == "cuda" else TINY)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    keep_work = args.work is not None
    work = Path(args.work) if keep_work else Path(tempfile.mkdtemp(prefix="aurora-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    run = Run(Path(args.out), work, setting, device, args.budget_s, ["benchmarks/gpu_check.py", *argv])
    wanted = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(wanted) - {n for n, _ in STEPS})
    if unknown:
        parser.error(f"unknown steps {unknown}; choose from {[n for n, _ in STEPS]}")

    def watchdog() -> None:  # a step that overran: record it and stop the process, whatever it is doing
        with run.lock:
            run.results["stopped_by_watchdog"] = f"{args.budget_s + args.grace_s:.0f} s after the start"
            run.write()
        print("watchdog: stopping the run", flush=True)
        os._exit(3)

    timer = threading.Timer(args.budget_s + args.grace_s, watchdog)
    timer.daemon = True
    timer.start()
    try:
        for name, fn in STEPS:
            if name in wanted:
                run.step(name, fn)
        with run.lock:
            run.results["finished"] = True
            run.results["elapsed_s"] = round(time.monotonic() - run.start, 1)
            run.write()
    finally:
        timer.cancel()
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)
    print(render_markdown(run.results))
    bad = [n for n, e in run.results["steps"].items() if e["status"] in ("failed", "check failed")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
