"""What an OATH benchmark run shows: figures, results.json and report.md, beside the paper's numbers.

``finish_run`` is the protocol's last stage (``aurora_pipeline.oath.protocol``): it draws
the figures (``write_figures``), gathers every number into one JSON-ready dict
(``assemble_results``, the content of results.json) and writes results.json and
report.md (``write_report``). The Markdown comes from pure functions of that dict
(``table_markdown``, ``render_report``). Our numbers are fractions (0..1) in the dict
and percentages in the tables, like the paper's.

Quoted figures (never recomputed here):

* Ridge classifier on Inception-v4 ImageNet features, Clausen & Nickisch (2018):
  accuracy 0.8174 +/- 0.0103 over the five splits (the OATH release page). The paper's
  Table I prints its std as "0.1"; the release page's 0.0103 is 1.0 percentage point.
  Its precision, recall and F1 (starred) were computed by Johnson et al. from one
  split's confusion matrix.
* Johnson et al. (2021), Table I: supervised ImageNet-pretrained ResNet18 84.7 +/- 0.7
  (precision 85.6, recall 85.2, F1 85.3); SimCLR + logistic regression 90.9 +/- 0.7
  (91.6, 91.5, 91.5). Section III.E: best mean silhouette 0.212 at k = 12 for
  k = 3..15; the class labels as clusters 0.011.

Example:
    >>> print(table_markdown(results))         # Table I as Markdown
    >>> write_report(results, "runs/oath-2024")  # results.json + report.md
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aurora_pipeline.atomic import atomic_write
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.oath.config import OathBenchmarkConfig
from aurora_pipeline._torchvision_compat import import_torchvision
from aurora_pipeline.plots import confusion_matrix_png, montage_png, silhouette_png
import aurora_pipeline

if TYPE_CHECKING:
    from aurora_pipeline.oath.dataset import OathData

__all__ = [
    "PAPER_CLUSTERING",
    "QUOTED",
    "assemble_results",
    "finish_run",
    "render_report",
    "table_markdown",
    "table_rows",
    "to_jsonable",
    "write_figures",
    "write_report",
]

RESULTS_FORMAT = "aurora-pipeline oath-benchmark"

QUOTED: dict[str, dict[str, Any]] = {
    "inception_v4_ridge": {
        "label": "Ridge + Inception-v4 (ImageNet features) [Clausen & Nickisch 2018]",
        "source": "quoted",
        "n_parameters": 43_000_000,
        "mean": {"accuracy": 0.8174, "precision_macro": 0.830, "recall_macro": 0.843, "f1_macro": 0.836},
        "std": {"accuracy": 0.0103},
        "note": "accuracy and std from the OATH release page (the paper's Table I prints the std as 0.1); "
                "precision, recall and F1 computed by Johnson et al. from one split's confusion matrix",
    },
    "paper_supervised_imagenet": {
        "label": "ResNet18 (ImageNet-pretrained, supervised)",
        "source": "paper",
        "n_parameters": 12_000_000,
        "mean": {"accuracy": 0.847, "precision_macro": 0.856, "recall_macro": 0.852, "f1_macro": 0.853},
        "std": {"accuracy": 0.007},
        "note": "Johnson et al. 2021, Table I",
    },
    "paper_simclr": {
        "label": "SimCLR ResNet18 + logistic regression",
        "source": "paper",
        "n_parameters": 12_000_000,
        "mean": {"accuracy": 0.909, "precision_macro": 0.916, "recall_macro": 0.915, "f1_macro": 0.915},
        "std": {"accuracy": 0.007},
        "note": "Johnson et al. 2021, Table I",
    },
}
PAPER_CLUSTERING = {"k_min": 3, "k_max": 15, "best_k": 12, "best_silhouette": 0.212, "ground_truth_silhouette": 0.011}
PAPER_SETTINGS = {"epochs": 100, "batch_size": 128, "splits": [0, 1, 2, 3, 4], "train_fraction": 0.7,
                  "k_min": 3, "k_max": 15}

# our models: key in results["models"] -> label in the table
OURS = {
    "supervised_resnet18_imagenet": "ResNet18 (ImageNet-pretrained, supervised)",
    "supervised_resnet18": "ResNet18 (random init, supervised)",
    "simclr_linear": "SimCLR ResNet18 + logistic regression",
    "raw_pixels_linear": "Logistic regression on raw pixels (floor)",
}
# Table I order: (source, key)
TABLE_ORDER = (
    ("quoted", "inception_v4_ridge"),
    ("quoted", "paper_supervised_imagenet"),
    ("ours", "supervised_resnet18_imagenet"),
    ("ours", "supervised_resnet18"),
    ("quoted", "paper_simclr"),
    ("ours", "simclr_linear"),
    ("ours", "raw_pixels_linear"),
)


def _pct(value: float | None, star: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.1f}" + ("*" if star else "")


def _params(n: int | None) -> str:
    return "–" if not n else f"{n / 1e6:.1f}m" if n >= 1e5 else f"{n / 1e3:.1f}k"


def table_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Table I's rows, in order: {label, source ("quoted", "paper", "ours"), n_parameters,
    accuracy, accuracy_std, precision, recall, f1 (fractions or None), note}."""
    rows = []
    models = results.get("models", {})
    for source, key in TABLE_ORDER:
        if source == "quoted":
            q = results.get("quoted", QUOTED)[key]
            rows.append({"key": key, "label": q["label"], "source": q["source"], "n_parameters": q["n_parameters"],
                         "accuracy": q["mean"]["accuracy"], "accuracy_std": q["std"]["accuracy"],
                         "precision": q["mean"]["precision_macro"], "recall": q["mean"]["recall_macro"],
                         "f1": q["mean"]["f1_macro"], "note": q["note"]})
            continue
        label = OURS[key]
        if key == "raw_pixels_linear" and "raw_pixels_linear" in models:
            label = f"Logistic regression on {models[key].get('features', 'raw pixels')} (floor)"
        if key not in models:
            why = ("not run: no ImageNet weights file given (imagenet_weights)" if key.endswith("imagenet")
                   else "not run (switched off)")
            rows.append({"key": key, "label": label, "source": "ours", "n_parameters": None, "accuracy": None,
                         "accuracy_std": None, "precision": None, "recall": None, "f1": None, "note": why})
            continue
        m = models[key]
        rows.append({"key": key, "label": label, "source": "ours", "n_parameters": m["n_parameters"],
                     "accuracy": m["mean"]["accuracy"], "accuracy_std": m["std"]["accuracy"],
                     "precision": m["mean"]["precision_macro"], "recall": m["mean"]["recall_macro"],
                     "f1": m["mean"]["f1_macro"], "note": f"{len(m['per_split'])} split(s)"})
    return rows


def table_markdown(results: dict[str, Any]) -> str:
    """Table I as a Markdown table with a caption (also the Prefect artifact)."""
    n_splits = len(results["config"]["splits"])
    lines = [
        "| Model | Params. | Top-1 accuracy (%) | Std. | Precision (%) | Recall (%) | F1-score (%) | Source |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in table_rows(results):
        star = r["key"] == "inception_v4_ridge"
        if r["accuracy"] is None:
            lines.append(f"| {r['label']} | – | {r['note']} | | | | | ours |")
            continue
        label = f"**{r['label']}**" if r["source"] == "ours" else r["label"]
        lines.append(f"| {label} | {_params(r['n_parameters'])} | {_pct(r['accuracy'])} | {_pct(r['accuracy_std'])} | "
                     f"{_pct(r['precision'], star)} | {_pct(r['recall'], star)} | {_pct(r['f1'], star)} | {r['source']} |")
    caption = (
        f"Rows marked *ours* are this run: mean and population std over {n_splits} OATH split row(s) "
        f"{results['config']['splits']} (train on the first {results['config']['train_fraction']:.0%} of each row, "
        "test on the rest); precision, recall and F1 are macro averages over the six classes. "
        "*paper*: Johnson et al. 2021, Table I. *quoted*: Clausen & Nickisch 2018 (std from the OATH release page; "
        "the paper prints 0.1); starred entries were computed by Johnson et al. from one split's confusion matrix."
    )
    return "\n".join(lines) + "\n\n" + caption + "\n"


def _warnings(results: dict[str, Any]) -> list[str]:
    out = []
    data, cfg = results["data"], results["config"]
    if not data.get("full_release"):
        out.append(f"**Not the full OATH release**: {data['n_images']} images ({data['class_counts']}); "
                   "the numbers below are not comparable with the paper's.")
    changed = changed_settings(cfg)
    if changed:
        out.append("**Not the paper's settings**: " + ", ".join(changed) + ".")
    return out


# where a run happens, not what it computes
_NOT_A_SETTING = ("device", "num_threads")


def changed_settings(cfg: dict[str, Any]) -> list[str]:
    """Every setting of ``cfg`` (results.json's ``config``) that is not the paper run's: the
    paper's value where the paper states one, else this package's default for a paper run."""
    defaults = OathBenchmarkConfig().to_dict()
    out = []
    for key, default in defaults.items():
        value = cfg.get(key, default)
        if key in _NOT_A_SETTING:
            continue
        if key in PAPER_SETTINGS:
            if value != PAPER_SETTINGS[key]:
                out.append(f"{key}={value} (paper: {PAPER_SETTINGS[key]})")
        elif value != default:
            out.append(f"{key}={value} (paper run: {default})")
    return out


def _per_split_table(results: dict[str, Any]) -> str:
    splits = [str(s) for s in results["config"]["splits"]]
    lines = ["| Model | " + " | ".join(f"split {s}" for s in splits) + " | mean | std |",
             "|---|" + "---:|" * (len(splits) + 2)]
    for key, label in OURS.items():
        m = results["models"].get(key)
        if m is None:
            continue
        accs = [_pct(m["per_split"][s]["accuracy"]) for s in splits]
        lines.append(f"| {label} | " + " | ".join(accs) + f" | {_pct(m['mean']['accuracy'])} | {_pct(m['std']['accuracy'])} |")
    return "\n".join(lines) + "\n"


def _matrix_table(cm: list[list[int]], names: list[str]) -> str:
    lines = ["| true \\ predicted | " + " | ".join(names) + " | recall (%) |", "|---|" + "---:|" * (len(names) + 1)]
    for name, row in zip(names, cm):
        total = sum(row)
        recall = _pct(row[names.index(name)] / total) if total else "–"
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + f" | {recall} |")
    return "\n".join(lines) + "\n"


def _clustering_section(results: dict[str, Any]) -> str:
    c, names = results["clustering"], results["data"]["class_names"]
    paper = c.get("paper", PAPER_CLUSTERING)
    lines = [
        "| | this run | paper |", "|---|---:|---:|",
        f"| k range | {c['ks'][0]}..{c['ks'][-1]} | {paper['k_min']}..{paper['k_max']} |",
        f"| best k (highest mean silhouette) | {c['best_k']} | {paper['best_k']} |",
        f"| its mean silhouette | {c['best_silhouette']:.3f} | {paper['best_silhouette']:.3f} |",
        f"| class labels as clusters | {c['ground_truth_silhouette']:.3f} | {paper['ground_truth_silhouette']:.3f} |",
        "", f"Silhouettes on {c['sample_size']} images (Euclidean distance on the 512-d representations).", "",
        "| k | " + " | ".join(str(k) for k in c["ks"]) + " |", "|---|" + "---:|" * len(c["ks"]),
        "| mean silhouette | " + " | ".join(f"{s:.3f}" for s in c["silhouettes"]) + " |", "",
        f"Images per cluster (rows, k = {c['best_k']}) and class (columns):", "",
        "| cluster | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names),
    ]
    lines += [f"| S={i} | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(c["cluster_by_class"])]
    return "\n".join(lines) + "\n"


def render_report(results: dict[str, Any]) -> str:
    """report.md: warnings, Table I, per-split accuracies, Fig. 3, clustering, figures, provenance."""
    cfg, data, enc, fig = results["config"], results["data"], results["encoder"], results["figures"]
    shown = cfg["confusion_split"] if cfg.get("confusion_split") is not None else cfg["splits"][0]
    cm = results["models"]["simclr_linear"]["per_split"][str(shown)]["confusion_matrix"]
    device = results["device"]
    final_loss = f"{enc['epoch_loss'][-1]:.4f}" if enc.get("epoch_loss") else "–"
    parts = [
        "# OATH benchmark: Johnson et al. (2021), Table I, Fig. 3 and section III.E, reproduced\n",
        f"Run {results['created']}, aurora-pipeline {results['versions']['aurora_pipeline']}, on {device['type']} "
        f"({device['name']}, {device['torch_threads']} torch threads, bf16 mixed precision "
        f"{'on' if device['mixed_precision'] else 'off'}).\n",
        *(f"> {w}\n" for w in _warnings(results)),
        "## Table I: auroral image classification\n",
        table_markdown(results),
        "\nAccuracy (%) of each split:\n",
        _per_split_table(results),
        f"\n## Fig. 3: confusion matrix of split {shown} (SimCLR + logistic regression)\n",
        f"![confusion matrix]({fig['confusion_matrix']})\n",
        _matrix_table(cm, data["class_names"]),
        "\nRows are true classes, columns predicted classes. The paper: \"Confusion matrices for the other folds "
        "are very similar.\"\n",
        "\n## Section III.E: K-means on the SimCLR representations\n",
        _clustering_section(results),
        f"\n![silhouette]({fig['silhouette']})\n",
        f"\nRandom images of each cluster (paper Fig. 4):\n\n![clusters]({fig['montage_clusters']})\n",
        f"\nImages labelled 'discrete' by cluster (paper Fig. 5):\n\n![discrete]({fig['montage_discrete']})\n",
        "\n## Run\n",
        f"- Data: `{data['root']}` ({data['image_folder']}), {data['n_images']} images; per class {data['class_counts']}; "
        f"full release: {'yes' if data['full_release'] else 'no'}.",
        *(f"- sha256 `{name}`: `{digest}`" for name, digest in data["checksums_sha256"].items()),
        "- Split sizes (train/test): " + ", ".join(f"{k}: {v['train']}/{v['test']}" for k, v in data["split_sizes"].items()) + ".",
        (f"- SimCLR encoder `{enc['model_id']}` given (`checkpoint`, not pre-trained here) in `{enc['checkpoint']}`; "
         f"source: {(enc.get('provenance') or {}).get('imported_from') or 'a pretrain run'}." if enc.get("given") else
         f"- SimCLR encoder `{enc['model_id']}` in `{enc['checkpoint']}`: {enc['epochs']} epochs, final NT-Xent loss "
         f"{final_loss}, {_rate(enc.get('images_per_second'))} images/s on {enc['device']}."),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".",
        "- Wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["timings_seconds"].items()) + ".",
        "- Settings: " + ", ".join(f"`{k}={v}`" for k, v in cfg.items()) + ".",
        "",
    ]
    return "\n".join(parts)


def _rate(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def to_jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as Python numbers and lists, NaN and inf as None."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(results: dict[str, Any], out_dir: str | os.PathLike, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``results.json`` and ``report.md`` into ``out_dir`` (each atomically).

    Returns:
        (results.json path, report.md path).
    Raises:
        BadInputError: results.json already exists and ``overwrite`` is False.
    """
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "results.json", out_dir / "report.md"
    if json_path.exists() and not overwrite:
        raise BadInputError(json_path, "already exists; refusing to overwrite it.", "choose a new output folder.")
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = to_jsonable(results)
    for path, text in ((md_path, render_report(clean)), (json_path, json.dumps(clean, indent=1) + "\n")):
        atomic_write(path, text)
    return json_path, md_path


# ------------------------------------------------------------------ the run's outputs


def write_figures(data: OathData, models: dict[str, Any], clustering: dict[str, Any], cfg: OathBenchmarkConfig,
                  out_dir: str | os.PathLike) -> dict[str, str]:
    """The confusion matrix of the SimCLR classifier on ``cfg.shown_split`` (Fig. 3), the
    silhouette curve with the paper's (12, 0.212) marked, random images of each cluster
    and the 'discrete' images by cluster (Figs. 4, 5). Returns {figure: file name in out_dir}."""
    out_dir = Path(out_dir)
    split = cfg.shown_split
    names = {"confusion_matrix": f"confusion_matrix_split{split}.png", "silhouette": "silhouette.png",
             "montage_clusters": "montage_clusters.png", "montage_discrete": "montage_discrete_by_cluster.png"}
    cm = np.asarray(models["simclr_linear"]["per_split"][str(split)]["confusion_matrix"])
    confusion_matrix_png(cm, data.class_names, out_dir / names["confusion_matrix"],
                         title=f"SimCLR + logistic regression, OATH split {split} (test set)")
    silhouette_png(clustering["ks"], clustering["silhouettes"], clustering["best_k"], out_dir / names["silhouette"],
                   ground_truth_silhouette=clustering["ground_truth_silhouette"],
                   reference=(PAPER_CLUSTERING["best_k"], PAPER_CLUSTERING["best_silhouette"]),
                   title="K-means on the SimCLR representations (star: paper)")
    cluster = np.asarray(clustering["cluster"])
    by_cluster = {}
    for c in range(clustering["best_k"]):
        members = cluster == c
        top = np.bincount(data.labels[members], minlength=len(data.class_names))
        label = f"S={c}\n{data.class_names[int(np.argmax(top))]} {100 * top.max() / max(members.sum(), 1):.0f}%"
        by_cluster[label] = data.frames[members]
    montage_png(by_cluster, out_dir / names["montage_clusters"], n_per_group=cfg.montage_per_group, seed=cfg.seed,
                title="Random images of each K-means cluster (S), with its most common class")
    discrete = data.labels == data.class_names.index("discrete")
    groups = {f"S={c}": data.frames[discrete & (cluster == c)] for c in range(clustering["best_k"])
              if np.any(discrete & (cluster == c))}
    montage_png(groups, out_dir / names["montage_discrete"], n_per_group=cfg.montage_per_group, seed=cfg.seed,
                title="Images labelled 'discrete', by K-means cluster (paper Fig. 5)")
    return names


def environment(cfg: OathBenchmarkConfig) -> dict[str, Any]:
    """Package versions and the device the run used."""
    # sklearn, torch: only for the report's environment (the report's writers stay light)
    import sklearn
    import torch

    from aurora_pipeline.device import resolve_device, use_mixed_precision

    device = resolve_device(cfg.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {
        "versions": {"aurora_pipeline": aurora_pipeline.__version__, "torch": torch.__version__,
                     "torchvision": import_torchvision().__version__, "scikit_learn": sklearn.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "device": {"type": device.type, "name": name, "cpu_count": os.cpu_count(),
                   "torch_threads": torch.get_num_threads(),
                   "mixed_precision": use_mixed_precision(device, cfg.mixed_precision)},
    }


def assemble_results(cfg: OathBenchmarkConfig, data: OathData, encoder: dict[str, Any], models: dict[str, Any],
                     clustering: dict[str, Any], figures: dict[str, str], out_dir: str | os.PathLike) -> dict[str, Any]:
    """Every number of the run, the config, the data checksums, versions and device, as one
    JSON-ready dict (plain Python types, NaN as None): the content of results.json."""
    return to_jsonable({
        "format": RESULTS_FORMAT,
        "format_version": 1,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.to_dict(),
        "data": {**data.info, "class_names": list(data.class_names)},
        **environment(cfg),
        "encoder": {**encoder, "checkpoint": os.path.relpath(encoder["checkpoint"], out_dir)},  # relative to out_dir
        "models": models,
        "quoted": QUOTED,
        "clustering": {**clustering, "paper": PAPER_CLUSTERING},
        "figures": figures,
        "timings_seconds": {"prepare_data": data.info["seconds"], "pretrain": encoder["seconds"],
                            **{name: m["seconds"] for name, m in models.items()}, "clustering": clustering["seconds"]},
    })


def finish_run(cfg: OathBenchmarkConfig, data: OathData, encoder: dict[str, Any], models: dict[str, Any],
               clustering: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Any]:
    """The protocol's last stage: figures, then results.json and report.md in ``out_dir``.

    Returns:
        The results dict, equal to the content of results.json.
    Raises:
        BadInputError: ``out_dir`` already holds a results.json.
    """
    figures = write_figures(data, models, clustering, cfg, out_dir)
    results = assemble_results(cfg, data, encoder, models, clustering, figures, out_dir)
    write_report(results, out_dir)
    return results
