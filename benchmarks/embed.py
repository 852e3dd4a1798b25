"""Embedding throughput: the project's default path beside the old contiguous float32 path, each
end to end (Zarr frames in, Zarr embeddings out) and as the bare model on in-memory tensors, at 128x128.

    .venv/bin/python benchmarks/embed.py [--hours 4] [--frames-per-hour 600] [--rounds 3] [--threads 2] [--device auto]

The store is made the way a user makes one: a synthetic CDF archive
(``write_synthetic_archive``) ingested at 128 px (``ingest``). The default path is what
``embed_with_checkpoint`` runs: an eval-mode copy with the batch norms folded into the
convolutions, in the memory format ``memory_format_for(device, mixed, "embed")`` picks
(channels_last on CPUs, in float32 too), bf16 autocast where the hardware does bf16.
The old path is the encoder as loaded, contiguous, float32 (the project's path on
machines without bf16 before issue 13), run end to end through the same store driver
(``embed_store``). Variants alternate within each round to spread machine noise; the
ratios are from the same round.

Goals: end to end >= 0.85 of the bare model (issue 3); default >= 1.5x the old path on
a CPU without bf16 (issue 13).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time

import numpy as np
import torch

from _common import CACHE, command_line, synthetic_archive
from bare_model import bare_forward_rate
from aurora_pipeline.device import memory_format_for, resolve_device, use_mixed_precision
from aurora_pipeline.embed.driver import embed_store, embed_with_checkpoint
from aurora_pipeline.encoder.backbone import frames_to_input
from aurora_pipeline.encoder.checkpoint import load_encoder
from aurora_pipeline.encoder.train import PretrainConfig, pretrain
from aurora_pipeline.ingest.driver import ingest
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.source.archive import list_archive

SIZE, BATCH = 128, 512


def make_store(path, hours: int, frames_per_hour: int) -> int:
    """A store ingested at 128 px from a synthetic archive of one site (cached under bench_out/)."""
    archive = synthetic_archive(f"embed-archive-{hours}x{frames_per_hour}", ("gako",), "2011-01-06T04", hours, frames_per_hour)
    shutil.rmtree(path, ignore_errors=True)
    report = ingest(list_archive(str(archive)), str(path), PreprocessConfig(image_size=SIZE))
    if report.failed:
        raise RuntimeError(report.summary()["failures"])
    return report.frames


def make_checkpoint(path) -> str:
    """A real checkpoint from one short epoch (the weights do not change the embedding cost)."""
    shutil.rmtree(path, ignore_errors=True)
    frames = np.random.default_rng(1).integers(0, 256, (32, SIZE, SIZE), dtype=np.uint8)
    pretrain(frames, PretrainConfig(epochs=1, batch_size=16, image_size=SIZE, device="cpu"), path)
    return str(path)


def old_path(checkpoint: str, device: torch.device):
    """embed_hour of the old float32 path: the model as loaded, contiguous, no folding, no autocast."""
    model, meta = load_encoder(checkpoint, device)
    model = model.to(device, memory_format=torch.contiguous_format).eval()

    def embed_hour(frames: np.ndarray) -> np.ndarray:
        parts = []
        with torch.inference_mode():
            for i in range(0, len(frames), BATCH):
                x = frames_to_input(torch.from_numpy(frames[i : i + BATCH]).to(device), meta["config"]["image_size"])
                parts.append(model(x).float().cpu().numpy())
        return np.concatenate(parts)

    return embed_hour, meta["model_id"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=int, default=4)
    parser.add_argument("--frames-per-hour", type=int, default=600)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bare-batches", type=int, default=2, help="timed batches per bare measurement")
    parser.add_argument("--bare-batch", type=int, default=BATCH, help="frames per bare batch (default: EmbedConfig's 512)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(command_line())
    device = resolve_device(args.device)
    mixed = use_mixed_precision(device, True)
    fmt = memory_format_for(device, mixed, "embed")
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else torch.backends.cpu.get_cpu_capability()}), "
          f"default: {'bf16' if mixed else 'float32'}, {fmt}, batch norms folded; torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    store = CACHE / "embed-bench.zarr"
    n = make_store(store, args.hours, args.frames_per_hour)
    checkpoint = make_checkpoint(CACHE / "embed-bench-encoder")
    _, model_id = old_path(checkpoint, device)
    rows = []
    for r in range(args.rounds):
        row = {}
        # the bare pair alternates its order; the store runs always go new then old, so each
        # finds the other model id's embeddings and re-embeds every hour (the driver skips
        # hours already embedded by the same model id, even with overwrite=True)
        bare = ["bare_new", "bare_old"] if r % 2 == 0 else ["bare_old", "bare_new"]
        for name in bare + ["e2e_new", "e2e_old"]:
            if name == "bare_new":
                row[name] = bare_forward_rate(device, mixed, args.bare_batch, SIZE, batches=args.bare_batches)
            elif name == "bare_old":
                row[name] = bare_forward_rate(device, False, args.bare_batch, SIZE, batches=args.bare_batches,
                                              fmt=torch.contiguous_format, fold=False)
            elif name == "e2e_new":
                t = time.perf_counter()
                summary = embed_with_checkpoint(str(store), checkpoint, device=args.device, overwrite=True)
                row[name] = n / (time.perf_counter() - t)
                assert summary["frames"] == n, summary
            else:
                t = time.perf_counter()  # loading the model counted, as embed_with_checkpoint's is
                report = embed_store(str(store), old_path(checkpoint, device)[0], f"{model_id}-old-path", overwrite=True)
                row[name] = n / (time.perf_counter() - t)
                assert report.frames == n
        rows.append(row)
        print(f"round {r + 1}: bare default {row['bare_new']:.1f}, bare old {row['bare_old']:.1f} (x{row['bare_new'] / row['bare_old']:.2f}) | "
              f"end to end default {row['e2e_new']:.1f}, old {row['e2e_old']:.1f} (x{row['e2e_new'] / row['e2e_old']:.2f}) frames/s | "
              f"end to end / bare: default {row['e2e_new'] / row['bare_new']:.2f}, old {row['e2e_old'] / row['bare_old']:.2f}", flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    speedup = statistics.median(r["e2e_new"] / r["e2e_old"] for r in rows)
    print(f"median over {len(rows)} rounds ({n} frames, {SIZE} px, batch {BATCH}, bare batch {args.bare_batch}): end to end default {med['e2e_new']:.1f} frames/s, "
          f"old {med['e2e_old']:.1f}; default/old x{speedup:.2f} (goal >= 1.5 without bf16); "
          f"end to end / bare {statistics.median(r['e2e_new'] / r['bare_new'] for r in rows):.2f} (goal >= 0.85); "
          f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
