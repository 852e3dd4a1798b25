"""Training throughput of the full ``pretrain`` step against a bare loop of the same model.

Run from the repository root:

    .venv/bin/python benchmarks/train.py            # about 3-5 minutes on 2 CPU cores

The full step is ``aurora_pipeline.encoder.train.pretrain`` on an in-memory uint8 numpy source
of synthetic 128x128 frames: the background thread reads each batch and draws its
augmentations, then on the device the frames are scaled, cropped, flipped and the
SimCLR step runs. The bare loop (``benchmarks/bare_model.py``) runs only the model,
loss and optimizer on float views already on the device. Both use batches of 128
frames (256 views), 2 CPU threads, and the same precision and memory format
(``memory_format_for``). The first step of each run is left out (warm-up); bare and
full runs alternate to spread machine noise, and rates come from the median step time
over all rounds. The goal is a full/bare ratio of at least 0.90.

Then the memory formats: the bare SimCLR step in the default format beside the other
one (channels_last against the old contiguous path), in the same precision,
alternating, with the ratio of each round (``--format-rounds``, 0 to skip).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bare_model import bare_train_step_seconds  # noqa: E402

from aurora_pipeline.device import memory_format_for, resolve_device, supports_bf16  # noqa: E402
from aurora_pipeline.encoder.train import PretrainConfig, pretrain  # noqa: E402

BATCH, SIZE = 128, 128


def synthetic_frames(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """Smooth random bands plus noise, uint8: random-ish, not constant, cheap to make."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, np.pi, (n, 1, 1))
    freq = rng.uniform(1, 6, (n, 1, 1))
    bands = np.sin(2 * np.pi * freq * (np.cos(angle) * x + np.sin(angle) * y))
    frames = 0.5 + 0.35 * bands + rng.normal(0, 0.1, (n, size, size))
    return (frames.clip(0, 1) * 255).astype(np.uint8)


def pipeline_step_seconds(frames: np.ndarray, mixed: bool, device: str) -> list[float]:
    """Wall-clock seconds of each of ``pretrain``'s steps, step 1 (warm-up) left out."""
    step_seconds = []
    last = [time.perf_counter()]

    def on_step(report):  # log_every=1: called after every step, once its loss reached the host
        now = time.perf_counter()
        step_seconds.append(now - last[0])
        last[0] = now

    cfg = PretrainConfig(epochs=1, batch_size=BATCH, image_size=SIZE, mixed_precision=mixed, device=device, log_every=1)
    with tempfile.TemporaryDirectory() as run_dir:
        pretrain(frames, cfg, run_dir, progress=on_step)
    return step_seconds[1:]


def rate(seconds: list[float]) -> float:
    """Frames per second from the median step time (robust to a step slowed by other work)."""
    return BATCH / statistics.median(seconds)


def fmt(seconds: list[float]) -> str:
    return " ".join(f"{s:.2f}" for s in seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/full rounds in the mixed precision")
    parser.add_argument("--steps", type=int, default=4, help="measured steps per run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--format-rounds", type=int, default=3, help="alternating rounds of the memory-format comparison")
    args = parser.parse_args()
    print("$", shlex.join([Path(sys.executable).name, *sys.argv]))
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    bf16 = supports_bf16(device)
    print(f"torch {torch.__version__}, device {device}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"threads {torch.get_num_threads()}, native bf16 {bf16}")
    print(f"batch {BATCH} frames ({2 * BATCH} views) of {SIZE}x{SIZE}; rates in frames/s (views/s = 2x)")
    print(f"load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (other work on the machine skews the rates)")
    frames = synthetic_frames((args.steps + 1) * BATCH)
    precisions = [(True, args.rounds), (False, 1)] if bf16 else [(False, args.rounds)]
    for mixed, rounds in precisions:
        name = f"{'bf16 autocast' if mixed else 'float32'}, {_fmt(memory_format_for(device, mixed, 'train'))}"
        bare, full = [], []
        for _ in range(rounds):
            bare += bare_train_step_seconds(device, mixed, BATCH, SIZE, steps=args.steps, warmup=1)
            full += pipeline_step_seconds(frames, mixed, str(device))
            print(f"  {name}: bare steps {fmt(bare[-args.steps:])} s, full pretrain steps {fmt(full[-args.steps:])} s", flush=True)
        ratio = rate(full) / rate(bare)
        print(f"{name}: bare {rate(bare):.1f} frames/s ({2 * rate(bare):.1f} views/s), full pretrain {rate(full):.1f} frames/s, "
              f"full/bare {ratio:.3f} ({'meets' if ratio >= 0.9 else 'misses'} the 0.90 goal); "
              f"fastest steps: bare {BATCH / min(bare):.1f}, full {BATCH / min(full):.1f}, ratio {min(bare) / min(full):.3f}", flush=True)
    compare_formats(device, bf16, args.steps, args.format_rounds)
    print(f"load average at end {os.getloadavg()[0]:.2f}")


def _fmt(fmt: torch.memory_format) -> str:
    return "channels_last" if fmt == torch.channels_last else "contiguous"


def compare_formats(device, mixed: bool, steps: int, rounds: int) -> None:
    """Bare SimCLR steps in the default memory format and the other one, alternating."""
    default = memory_format_for(device, mixed, "train")
    other = torch.contiguous_format if default == torch.channels_last else torch.channels_last
    times = {default: [], other: []}
    ratios = []
    for r in range(rounds):
        for fmt in ((default, other) if r % 2 == 0 else (other, default)):
            times[fmt].append(statistics.median(bare_train_step_seconds(device, mixed, BATCH, SIZE, steps=steps, warmup=1, fmt=fmt)))
        ratios.append(times[other][-1] / times[default][-1])
        print(f"  round {r + 1}: bare step {_fmt(default)} (default) {BATCH / times[default][-1]:.1f} frames/s, "
              f"{_fmt(other)} {BATCH / times[other][-1]:.1f}; default/other x{ratios[-1]:.2f}", flush=True)
    if ratios:
        print(f"memory format, {'bf16' if mixed else 'float32'} bare SimCLR step: default {_fmt(default)} / {_fmt(other)} "
              f"x{statistics.median(ratios):.2f} (median of {len(ratios)} rounds; per round {', '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    main()
