"""End-to-end embedding throughput (Zarr frames in, Zarr embeddings out) beside the bare
model's forward pass on in-memory tensors, at 128x128.

Goal (issue 3): embedding at least 85% of the bare forward.

    .venv/bin/python benchmarks/embed.py [--hours 4] [--frames-per-hour 600] [--device auto]
"""

from __future__ import annotations

import argparse
import shutil
import time

import numpy as np
import torch

from _common import CACHE, command_line
from bare_model import bare_forward_rate
from aurora_pipeline.device import resolve_device, use_mixed_precision
from aurora_pipeline.embed.driver import embed_with_checkpoint
from aurora_pipeline.store.zarr_layout import write_hour_frames, zarr_store
from aurora_pipeline.encoder.train import PretrainConfig, pretrain


def make_store(path, hours: int, frames_per_hour: int) -> int:
    """A store of random-looking uint8 frames (content does not change the model's cost)."""
    shutil.rmtree(path, ignore_errors=True)
    zs = zarr_store(path)
    rng = np.random.default_rng(0)
    start = np.datetime64("2011-01-06T04", "h")
    for h in range(hours):
        hour = start + h
        times = hour.astype("datetime64[ms]") + (np.arange(frames_per_hour) * 3000).astype("timedelta64[ms]")
        frames = rng.integers(0, 256, (frames_per_hour, 128, 128), dtype=np.uint8)
        write_hour_frames(zs, "gako", str(hour.astype(object).strftime("%Y%m%d%H")), times, frames, {})
    return hours * frames_per_hour


def make_checkpoint(path, frames: np.ndarray) -> str:
    """A real checkpoint from one short epoch (the weights do not change the embedding cost)."""
    shutil.rmtree(path, ignore_errors=True)
    pretrain(frames[:32], PretrainConfig(epochs=1, batch_size=16, image_size=128, device="cpu"), path)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=int, default=4)
    parser.add_argument("--frames-per-hour", type=int, default=600)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(command_line())
    device = resolve_device(args.device)
    mixed = use_mixed_precision(device, True)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"bf16+channels_last {mixed}, torch threads {torch.get_num_threads()}")
    store = CACHE / "embed-bench.zarr"
    n = make_store(store, args.hours, args.frames_per_hour)
    checkpoint = make_checkpoint(CACHE / "embed-bench-encoder", np.random.default_rng(1).integers(0, 256, (32, 128, 128), dtype=np.uint8))
    for r in range(args.repeats):
        bare = bare_forward_rate(device, mixed, batch_size=512, image_size=128)
        t = time.perf_counter()
        summary = embed_with_checkpoint(store, checkpoint, device=args.device, overwrite=True)
        full = time.perf_counter() - t
        assert summary["frames"] == n
        e2e = n / full
        print(f"run {r + 1}: bare forward {bare:.0f} frames/s (in-memory tensors, batch 512) | end-to-end embed "
              f"{e2e:.0f} frames/s ({n} frames, Zarr in and out, model load included) | ratio {e2e / bare:.2f} (goal >= 0.85)")


if __name__ == "__main__":
    main()
