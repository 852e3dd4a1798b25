"""Does smoothing the labels over time help? Held-out accuracy of smoothed labels beside per-frame labels.

On the synthetic archive's skies (``render_site_hour``: scenes of several minutes to tens
of minutes whose true class is known for every frame), the project's own chain labels
every frame: SimCLR pretraining (a short run), embeddings, the logistic regression fitted
on the first hours of each site. The last hours of each site are held out. On them we
compare the true classes with:

- the per-frame labels (argmax of the classifier's probabilities);
- ``label_events`` with several smoothing windows and minimum durations (each frame takes
  the label of the event it falls in);
- the moving mode of the labels (no probabilities), same windows;
- a baseline we did not pick: Viterbi on a sticky hidden Markov model (switch probability
  cadence / 10 min, emissions = posterior / class prior).

Besides accuracy, the number of events per held-out hour against the true number of
scene runs says how much a catalogue flickers.

    .venv/bin/python benchmarks/events.py [--hours 6] [--holdout-hours 2] [--frames-per-hour 360] [--epochs 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from _common import command_line
from aurora_pipeline.classify.model import fit_classifier
from aurora_pipeline.embed.model import EmbedConfig, embed_frames
from aurora_pipeline.encoder.checkpoint import load_encoder
from aurora_pipeline.encoder.train import PretrainConfig, pretrain
from aurora_pipeline.events import label_events
from aurora_pipeline.ingest.preprocess import PreprocessConfig, preprocess_frames
from aurora_pipeline.synth.archive import render_site_hour
from aurora_pipeline.synth.scenes import CLASSES

SITES = ("gako", "gill")
START = np.datetime64("2011-01-06T04", "h")


def make_frames(hours: int, frames_per_hour: int, image_size: int):
    """Per site: times, preprocessed frames, true classes (codes into CLASSES), hour index of each frame."""
    cfg = PreprocessConfig(image_size=image_size)
    out = {}
    for site in SITES:
        times, frames, truth, hour_of = [], [], [], []
        for h in range(hours):
            t, raw, classes = render_site_hour(site, START + np.timedelta64(h, "h"), frames_per_hour, seed=0)
            times.append(t)
            frames.append(preprocess_frames(raw, cfg))
            truth.append([CLASSES.index(c) for c in classes])
            hour_of.append(np.full(len(t), h))
        out[site] = (np.concatenate(times), np.concatenate(frames), np.concatenate(truth), np.concatenate(hour_of))
    return out


def frame_labels_from_events(times: np.ndarray, events) -> np.ndarray:
    """Each frame takes the label code of the event whose [start, end) holds it."""
    starts = events["start"].to_numpy().astype("datetime64[ms]")
    codes = np.array([CLASSES.index(x) for x in events["label"]])
    i = np.searchsorted(starts, times.astype("datetime64[ms]"), side="right") - 1
    return codes[i]


def viterbi(prob: np.ndarray, prior: np.ndarray, p_switch: float) -> np.ndarray:
    """Most probable state path of a sticky HMM, emissions proportional to posterior / prior."""
    k = prob.shape[1]
    log_emit = np.log(np.clip(prob, 1e-9, None)) - np.log(np.clip(prior, 1e-9, None))
    log_trans = np.full((k, k), np.log(p_switch / (k - 1)))
    np.fill_diagonal(log_trans, np.log(1 - p_switch))
    score = log_emit[0].copy()
    back = np.zeros(prob.shape, dtype=np.int64)
    for i in range(1, len(prob)):
        cand = score[:, None] + log_trans
        back[i] = np.argmax(cand, axis=0)
        score = cand[back[i], np.arange(k)] + log_emit[i]
    path = np.empty(len(prob), dtype=np.int64)
    path[-1] = int(np.argmax(score))
    for i in range(len(prob) - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return path


def runs(codes: np.ndarray) -> int:
    return int(1 + np.count_nonzero(codes[1:] != codes[:-1])) if len(codes) else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=int, default=6)
    ap.add_argument("--holdout-hours", type=int, default=2)
    ap.add_argument("--frames-per-hour", type=int, default=360)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--train-frames", type=int, default=1440, help="frames the encoder pretrains on (a sample)")
    args = ap.parse_args()
    print(command_line())
    t0 = time.perf_counter()
    data = make_frames(args.hours, args.frames_per_hour, args.image_size)
    print(f"rendered and preprocessed {sum(len(v[0]) for v in data.values())} frames in {time.perf_counter() - t0:.0f} s")

    all_frames = np.concatenate([v[1] for v in data.values()])
    pick = np.sort(np.random.default_rng(0).choice(len(all_frames), min(args.train_frames, len(all_frames)), replace=False))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        result = pretrain(all_frames[pick], PretrainConfig(epochs=args.epochs, batch_size=128, image_size=args.image_size,
                                                           log_every=1000, keep_checkpoints=1), run_dir)
        model, _ = load_encoder(result.checkpoint)
    print(f"pretrained {args.epochs} epochs on {len(pick)} frames in {time.perf_counter() - t0:.0f} s ({result.model_id})")
    embedded = {site: embed_frames(model, v[1], EmbedConfig(batch_size=256), image_size=args.image_size)
                for site, v in data.items()}

    fit_hours = args.hours - args.holdout_hours
    X = np.concatenate([embedded[s][data[s][3] < fit_hours] for s in SITES])
    y = np.concatenate([np.array(CLASSES)[data[s][2][data[s][3] < fit_hours]] for s in SITES])
    present = [c for c in CLASSES if c in set(y)]
    clf = fit_classifier(X, y, encoder_id=result.model_id, class_names=present)
    prior = np.array([np.mean(y == c) for c in present])
    cadence_s = 3600.0 / args.frames_per_hour

    rows: dict[str, list[float]] = {}
    events_per_hour: dict[str, list[float]] = {}
    held_frames, held_hours = 0, args.holdout_hours * len(SITES)
    true_runs = 0
    for site in SITES:
        times, _, truth, hour_of = data[site]
        held = hour_of >= fit_hours
        t, true = times[held], truth[held]
        prob = clf.predict_proba(embedded[site][held])
        per_frame = np.array([CLASSES.index(present[i]) for i in np.argmax(prob, axis=1)])
        # class probabilities in CLASSES order (a class the fit never saw gets 0)
        full = np.zeros((len(t), len(CLASSES)))
        full[:, [CLASSES.index(c) for c in present]] = prob
        held_frames += len(t)
        true_runs += runs(true)

        def add(name, codes, n_events):
            rows.setdefault(name, []).append(float(np.sum(codes == true)))
            events_per_hour.setdefault(name, []).append(n_events)

        add("per-frame labels", per_frame, runs(per_frame))
        for smooth in ("30s", "60s", "120s", "300s"):
            for min_duration in ("0s", "60s", "180s"):
                ev = label_events(t, per_frame, full, class_names=CLASSES, smooth=smooth, min_duration=min_duration)
                add(f"mean of probabilities, window {smooth}, min {min_duration}", frame_labels_from_events(t, ev), len(ev))
        for smooth in ("60s", "120s", "300s"):
            ev = label_events(t, per_frame, None, class_names=CLASSES, smooth=smooth, min_duration="60s")
            add(f"moving mode (no probabilities), window {smooth}, min 60s", frame_labels_from_events(t, ev), len(ev))
        hmm_present = viterbi(prob, prior, p_switch=cadence_s / 600.0)
        hmm = np.array([CLASSES.index(present[i]) for i in hmm_present])
        add("Viterbi, sticky HMM (switch = cadence / 10 min)", hmm, runs(hmm))

    print(f"\nheld out: {held_frames} frames, last {args.holdout_hours} h of {len(SITES)} sites, cadence {cadence_s:g} s; "
          f"true scene runs per hour: {true_runs / held_hours:.1f}")
    base = sum(rows["per-frame labels"]) / held_frames
    print(f"{'labels':64s} {'accuracy':>8s} {'vs per-frame':>12s} {'events/h':>9s}")
    for name, correct in rows.items():
        acc = sum(correct) / held_frames
        print(f"{name:64s} {acc:8.3f} {acc - base:+12.3f} {sum(events_per_hour[name]) / held_hours:9.1f}")


if __name__ == "__main__":
    main()
