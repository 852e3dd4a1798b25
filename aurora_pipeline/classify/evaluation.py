"""Did pretraining learn something? Held-out accuracy of the linear classifier on the
embeddings of a trained encoder beside the same classifier on a randomly initialised one.

Both encoders embed the same labelled frames; the classifier is fitted on the same
hours and scored on the same held-out hours (the last ``holdout_hours_fraction`` of
each site's hours: whole hours, since frames seconds apart are near copies).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from aurora_pipeline.encoder.checkpoint import load_encoder
from aurora_pipeline.classify.model import ClassifierConfig, cross_validate, evaluate, fit_classifier
from aurora_pipeline.embed.model import EmbedConfig, embed_frames
from aurora_pipeline.classify.driver import hour_folds, split_by_hours
from aurora_pipeline.classify.labels_csv import match_labels, read_labels_csv
from aurora_pipeline.encoder.backbone import resnet18_encoder
from aurora_pipeline.store.core import StoreLike, open_store
from aurora_pipeline.store.regions import read_rows
from aurora_pipeline.store.stages import stored_hours


def labelled_frames(store: StoreLike, labels_csv, holdout_hours_fraction: float):
    """(frames uint8 (n, s, s), classes (n,), held_out (n,) bool, site-hour (n,)) of the frames
    named in ``labels_csv``."""
    st = open_store(store)
    times, spans, refs = {}, {}, {}
    for site in st.sites():
        site_refs = stored_hours(st, [site])
        if site_refs:
            parts = [read_rows(st.year_group(site, r.year), "time", np.arange(r.slots.start, r.slots.stop)).astype("datetime64[ms]")
                     for r in site_refs]
            stops = np.cumsum([len(p) for p in parts])
            times[site] = np.concatenate(parts)
            spans[site] = [(r.name, int(stop - len(p)), int(stop)) for r, p, stop in zip(site_refs, parts, stops)]
            refs[site] = site_refs
    matched, _ = match_labels(read_labels_csv(labels_csv), times, strict=False)
    held, groups = split_by_hours(matched, spans, holdout_hours_fraction)
    frames = [np.concatenate([st.year_group(site, r.year)["frames"][r.slots] for r in refs[site]])[m.frame_index]
              for site, m in matched.items()]
    classes = [m.class_name for m in matched.values()]
    return np.concatenate(frames), np.concatenate(classes), held, groups


def compare_with_random_init(store: StoreLike, labels_csv, checkpoint, *, holdout_hours_fraction: float = 0.3,
                             seed: int = 0, device: str = "auto",
                             progress: Callable[[str], None] | None = None) -> dict:
    """Held-out accuracy (and macro F1) for the trained encoder and a random-init one, and the
    accuracy of hour-grouped cross-validation over all labelled hours, fitted and held-out
    (``hour_cv_accuracy``: steadier than one held-out block of hours, whose class mix can
    differ from the fitted ones; not the fit's own cross-validation, which sees only the
    fitted hours). ``progress(message)`` is told as each encoder's part starts and ends
    (each embeds every labelled frame: tens of seconds on a small CPU)."""
    tell = progress or (lambda message: None)
    frames, classes, held, groups = labelled_frames(store, labels_csv, holdout_hours_fraction)
    if not held.any() or held.all():
        raise ValueError("need both fitted and held-out hours; use more hours or another holdout fraction")
    trained, meta = load_encoder(checkpoint, device)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        random_init = resnet18_encoder().eval()
    cfg = EmbedConfig(device=device)
    names = sorted(set(classes.tolist()))
    out = {"frames_fitted": int((~held).sum()), "frames_held_out": int(held.sum()), "classes": names}
    for name, model, model_id in (("simclr", trained, meta["model_id"]), ("random_init", random_init, "random-init")):
        what = {"simclr": "the SimCLR encoder", "random_init": "a randomly initialised encoder"}[name]
        started = time.perf_counter()
        tell(f"{what}: embedding {len(frames)} labelled frames, fitting on {out['frames_fitted']}, scoring "
             f"{out['frames_held_out']} held-out frames, then hour-grouped cross-validation over all labelled hours")
        X = embed_frames(model.to(trained_device(trained)), frames, cfg, meta["config"]["image_size"])
        clf = fit_classifier(X[~held], classes[~held], ClassifierConfig(), encoder_id=model_id, class_names=names)
        metrics = evaluate(clf, X[held], classes[held])
        cv = cross_validate(X, classes, ClassifierConfig(), class_names=names,
                            splits=hour_folds(classes, groups, ClassifierConfig()))
        out[name] = {"holdout_accuracy": round(metrics["accuracy"], 4), "holdout_f1_macro": round(metrics["f1_macro"], 4),
                     "hour_cv_accuracy": round(cv["accuracy"], 4), "hour_cv_accuracy_std": round(cv["accuracy_std"], 4)}
        tell(f"{what}: held-out accuracy {metrics['accuracy']:.3f}, hour-grouped CV accuracy (all labelled hours) "
             f"{cv['accuracy']:.3f} ({time.perf_counter() - started:.0f} s)")
    return out


def trained_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
