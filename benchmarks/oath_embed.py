"""Embedding rate of OATH images at 224 px with an imported (Aurora-FM layout) encoder, on this machine.

    .venv/bin/python benchmarks/oath_embed.py [--images 96] [--rounds 2] [--threads 2] [--batch 64]

What ``fit-classifier --oath-dir`` and ``oath-benchmark --checkpoint`` do per image, timed in
two parts: decoding the 16-bit PNGs of the synthetic OATH stand-in (``write_synthetic_oath``,
the release's layout) and framing them as the encoder's store setting (``oath_frames``), then
the project's embedding path (``embed_frames``: 1-channel stem, batch norms folded,
channels_last, float32 on a CPU without bf16). The baseline, in the same round, is the
publisher's model as its loader builds it: torchvision's 3-channel ResNet18, contiguous,
float32, on (n, 3, 224, 224) with the frame in green. The weights are random (the release
cannot be fetched here); they do not change the cost. The expected wall time for the
5,824 images of OATH is 5,824 / (the end-to-end rate).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from _common import CACHE, command_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from release_standin import green_input, release_like_state, save_state, three_channel_model

    from aurora_pipeline.embed.model import EmbedConfig, embed_frames
    from aurora_pipeline.encoder.checkpoint import load_encoder
    from aurora_pipeline.encoder.release import import_encoder
    from aurora_pipeline.oath.archive_classifier import encoder_setting, oath_frames
    from aurora_pipeline.oath.dataset import load_oath
    from aurora_pipeline.oath.synth import write_synthetic_oath

    root = CACHE / f"oath-embed-{args.images}"
    if not (root / "oath" / ".complete").exists():
        write_synthetic_oath(root / "oath", n=args.images, seed=0)
        (root / "oath" / ".complete").write_text("ok")
    state = release_like_state(seed=0)
    digest = save_state(state, root / "standin.tar")
    ckpt = root / f"encoder-{digest[:12]}"
    if not (ckpt / "state.json").exists():
        import_encoder(root / "standin.tar", ckpt, sha256=digest)
    encoder, meta = load_encoder(ckpt, "cpu")
    setting, _ = encoder_setting(meta)
    publisher = three_channel_model(state)
    ds = load_oath(root / "oath", expected_counts=None)
    index = np.arange(len(ds))
    cfg = EmbedConfig(batch_size=args.batch, device="cpu")

    print(command_line())
    print(f"{len(ds)} images, 224 x 224, float32, {args.threads} torch threads, batch {args.batch}")
    rows = []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        frames = oath_frames(ds, index, setting)
        t1 = time.perf_counter()
        embed_frames(encoder, frames, cfg, image_size=224)
        t2 = time.perf_counter()
        x = green_input(torch.from_numpy(frames).float() / 255.0)
        t3 = time.perf_counter()
        with torch.inference_mode():
            for part in torch.split(x, args.batch):
                publisher(part)
        t4 = time.perf_counter()
        n = len(frames)
        row = {"decode_frame": n / (t1 - t0), "embed": n / (t2 - t1), "end_to_end": n / (t2 - t0),
               "publisher_3ch": n / (t4 - t3)}
        rows.append(row)
        print(f"round {r + 1}: decode+frame {row['decode_frame']:.1f} images/s, embed (ours) {row['embed']:.1f}, "
              f"publisher's 3-channel model {row['publisher_3ch']:.1f} (ratio {row['embed'] / row['publisher_3ch']:.2f}), "
              f"end to end {row['end_to_end']:.1f} images/s")
    best = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"median: embed {best['embed']:.1f} images/s ({best['embed'] / best['publisher_3ch']:.2f} x the publisher's "
          f"model), end to end {best['end_to_end']:.1f} images/s -> 5,824 OATH images in "
          f"{5824 / best['end_to_end'] / 60:.1f} min")


if __name__ == "__main__":
    main()
