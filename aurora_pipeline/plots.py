"""Figures of the classification and clustering results, written as PNG files.

Each function draws one figure with matplotlib's Agg backend (no display needed, never
``plt.show``), writes it to ``path`` (parent folders created) and returns the path.
Figures have a fixed size in inches at ``DPI`` dots per inch, so the PNG's pixel size
depends only on the inputs' shapes (noted in each docstring).

* ``confusion_matrix_png``: rows true, columns predicted, counts and row percentages
  (the paper's Fig. 3).
* ``silhouette_png``: mean silhouette vs k (section III.E), best k marked.
* ``montage_png``: random member images of each cluster or class, one row each (Figs. 4, 5).
* ``labels_along_night_png``: one site's labels along a night vs UT time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from aurora_pipeline.errors import BadInputError

DPI = 100


def _figure(width_in: float, height_in: float):
    # A Figure with an Agg canvas directly: no pyplot state, no backend switching.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def confusion_matrix_png(cm: np.ndarray, class_names: Sequence[str], path: str | os.PathLike,
                         title: str = "Confusion matrix") -> Path:
    """Confusion matrix as in the paper's Fig. 3: row = true class, column = predicted.

    Each cell shows the count and its percentage of the row (the recall on the
    diagonal); the colour is the row fraction. Size: (1.0 k + 2.5) x (0.8 k + 1.8)
    inches for k classes.
    Raises: BadInputError when cm is not (k, k) non-negative or names are not k.
    """
    cm = np.asarray(cm)
    k = len(class_names)
    if cm.ndim != 2 or cm.shape != (k, k) or cm.dtype.kind not in "iuf" or (cm < 0).any():
        raise BadInputError("cm", f"must be a ({k}, {k}) array of non-negative counts, one row and column per "
                            f"class name, got shape {cm.shape}", "pass the confusion matrix and its class names")
    row_sum = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, row_sum, out=np.zeros(cm.shape, dtype=float), where=row_sum > 0)
    fig = _figure(1.0 * k + 2.5, 0.8 * k + 1.8)
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{cm[i, j]:g}\n{100 * frac[i, j]:.1f}%", ha="center", va="center", fontsize=8,
                    color="white" if frac[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(k), labels=list(class_names))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="fraction of true class")
    return _save(fig, path)


def silhouette_png(ks: Sequence[int], sil: Sequence[float], best_k: int, path: str | os.PathLike,
                   ground_truth_silhouette: float | None = None,
                   reference: tuple[int, float] | None = None, title: str = "K-means on the embeddings") -> Path:
    """Mean silhouette score against k, with the best k marked (and, when it is the first or
    last k scanned, a note that the search limit may be what chose it).

    Args:
        ground_truth_silhouette: drawn as a horizontal line ("labels as clusters").
        reference: (k, silhouette) of a published result to compare with, e.g. the
            paper's (12, 0.212); drawn as a star.
    Size: 6.4 x 4.0 inches.
    Raises: BadInputError when ks and sil differ in length or best_k is not in ks.
    """
    ks, sil = np.asarray(ks), np.asarray(sil, dtype=float)
    if ks.ndim != 1 or ks.shape != sil.shape or len(ks) == 0:
        raise BadInputError("ks, sil", f"must be two 1-d sequences of one length, got {ks.shape} and {sil.shape}",
                            "pass ClusterScan.ks and ClusterScan.silhouettes")
    if best_k not in ks.tolist():
        raise BadInputError("best_k", f"{best_k} is not among ks {ks.tolist()}", "pass ClusterScan.best_k")
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    ax.plot(ks, sil, "o-", color="tab:blue", label="K-means clusters")
    best = int(np.flatnonzero(ks == best_k)[0])
    edge = ("" if len(ks) < 2 or ks.min() < best_k < ks.max() else
            f": the search limit k_{'max' if best_k == ks.max() else 'min'}, a {'larger' if best_k == ks.max() else 'smaller'}"
            " k may score higher")
    ax.plot([best_k], [sil[best]], "o", ms=14, mfc="none", mec="tab:red", mew=2,
            label=f"best k = {best_k} ({sil[best]:.3f}){edge}")
    if ground_truth_silhouette is not None:
        ax.axhline(ground_truth_silhouette, color="gray", ls="--",
                   label=f"class labels as clusters ({ground_truth_silhouette:.3f})")
    if reference is not None:
        ax.plot([reference[0]], [reference[1]], "*", ms=12, color="tab:orange",
                label=f"reference k = {reference[0]} ({reference[1]:.3f})")
    ax.set_xlabel("number of clusters k")
    ax.set_ylabel("mean silhouette score")
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def montage_png(images_by_group: Mapping[str, np.ndarray], path: str | os.PathLike, n_per_group: int = 8,
                title: str | None = None, seed: int = 0, group_sizes: Mapping[str, int] | None = None) -> Path:
    """One row per group (cluster or class) of up to ``n_per_group`` randomly chosen member images.

    Each row is labelled with the group's name and "N frames" (its size), or "N frames, M shown"
    when fewer are drawn.

    Args:
        images_by_group: name -> (n, H, W) images, uint8 (0..255) or float in 0..1
            (values outside are clipped); shown in grey scale. Groups may hold fewer
            than ``n_per_group`` images (the rest of the row stays blank) or none.
        group_sizes: name -> number of members, when ``images_by_group`` holds only a
            sample of each group (default: the number of images passed).
        seed: numpy default_rng seed of the random choice.
    Size: (1.2 n_per_group + 1.2) x (1.2 groups + 0.5) inches.
    Raises: BadInputError for no groups, a non-3-d array, or n_per_group < 1.
    """
    if not images_by_group:
        raise BadInputError("images_by_group", "is empty", "pass at least one group of images")
    if not (isinstance(n_per_group, int) and n_per_group >= 1):
        raise BadInputError("n_per_group", f"must be a positive integer, got {n_per_group!r}", "use 8")
    groups = {}
    for name, images in images_by_group.items():
        images = np.asarray(images)
        if images.ndim != 3 or images.dtype.kind not in "fiu":
            raise BadInputError(f"images_by_group[{name!r}]", f"must be (n, H, W) numeric, got shape {images.shape}",
                                "pass grey-scale frames, e.g. the store's `frames` rows")
        groups[name] = images
    rng = np.random.default_rng(seed)
    fig = _figure(1.2 * n_per_group + 1.2, 1.2 * len(groups) + 0.5)
    axes = fig.subplots(len(groups), n_per_group, squeeze=False)
    for row, (name, images) in enumerate(groups.items()):
        pick = np.sort(rng.choice(len(images), size=min(n_per_group, len(images)), replace=False))
        for col in range(n_per_group):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col < len(pick):
                image = images[pick[col]]
                image = image / 255.0 if image.dtype == np.uint8 else np.clip(image.astype(float), 0.0, 1.0)
                ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        size = int((group_sizes or {}).get(name, len(images)))
        shown = min(n_per_group, len(images))
        count = f"{size} frame{'s' * (size != 1)}" + (f", {shown} shown" if shown < size else "")
        axes[row, 0].set_ylabel(f"{name}\n{count}", rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def labels_along_night_png(times: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                           path: str | os.PathLike, probabilities: np.ndarray | None = None,
                           title: str | None = None) -> Path:
    """Labels of one site's frames against UT time: one coloured band per class, one
    bar per run of frames with that label. Gaps of more than 3 cadences (the median
    spacing) are left blank. Label -1 means unlabelled (not drawn).

    Args:
        times: (n,) datetime64 frame times (any order). labels: (n,) int in -1..k-1.
        probabilities: optional (n,) probability of the label or (n, k) class
            probabilities (their row maximum is drawn), on a panel below.
    Size: 10 x (0.35 k + 1.5) inches, + 1.8 with probabilities.
    Raises: BadInputError for mismatched lengths or labels out of range.
    """
    # matplotlib: only when drawing
    from matplotlib import dates as mdates

    times = np.asarray(times)
    labels = np.asarray(labels)
    k = len(class_names)
    if times.ndim != 1 or len(times) == 0 or times.dtype.kind != "M":
        raise BadInputError("times", f"must be a non-empty 1-d datetime64 array, got {times.dtype} {times.shape}",
                            "pass the store's `time` values")
    if labels.shape != times.shape or labels.dtype.kind not in "iu" or labels.min() < -1 or labels.max() >= k:
        raise BadInputError("labels", f"must be {times.shape} integers in -1..{k - 1}, got {labels.dtype} "
                            f"{labels.shape}", "pass label indices into class_names")
    prob = None
    if probabilities is not None:
        prob = np.asarray(probabilities, dtype=float)
        prob = prob.max(axis=1) if prob.ndim == 2 and prob.shape[1] == k else prob
        if prob.shape != times.shape:
            raise BadInputError("probabilities", f"must be ({len(times)},) or ({len(times)}, {k}), "
                                f"got {np.shape(probabilities)}", "pass the store's `label_probability` values")
    order = np.argsort(times, kind="stable")
    times, labels = times[order].astype("datetime64[ms]"), labels[order]
    x = mdates.date2num(times)                      # days
    step = np.diff(x)
    cadence = float(np.median(step)) if len(step) else 3.0 / 86400
    cadence = cadence if cadence > 0 else 3.0 / 86400
    # a run ends where the label changes or the next frame is more than 3 cadences away
    breaks = np.flatnonzero((labels[1:] != labels[:-1]) | (step > 3 * cadence)) + 1
    starts, ends = np.r_[0, breaks], np.r_[breaks, len(x)]

    height = 0.35 * k + 1.5
    fig = _figure(10.0, height + (1.8 if prob is not None else 0.0))
    if prob is None:
        axes = [fig.add_subplot()]
    else:
        axes = fig.subplots(2, 1, sharex=True, height_ratios=[height, 1.8])
    ax = axes[0]
    colors = [f"C{i % 10}" for i in range(k)]
    for c in range(k):
        bars = [(x[s], x[e - 1] - x[s] + cadence) for s, e in zip(starts, ends) if labels[s] == c]
        ax.broken_barh(bars, (c - 0.4, 0.8), facecolors=colors[c])
    ax.set_yticks(range(k), labels=list(class_names))
    ax.set_ylim(k - 0.5, -0.5)
    ax.set_xlim(x[0], x[-1] + cadence)
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    if prob is not None:
        axes[1].plot(x, prob[order], ".", ms=2, color="k")
        axes[1].set_ylim(0, 1.02)
        axes[1].set_ylabel("max probability")
        axes[1].grid(alpha=0.3)
    axes[-1].xaxis_date()
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    axes[-1].set_xlabel(f"UT from {np.datetime_as_string(times[0], unit='m').replace('T', ' ')}")
    return _save(fig, path)


def keogram_png(keo, path: str | os.PathLike, title: str | None = None, max_columns: int = 4000) -> Path:
    """``keogram_figure(keo, title, max_columns)`` written to ``path`` as PNG (10 x 6 inches,
    10 x 4 without labels)."""
    return _save(keogram_figure(keo, title, max_columns), path)


def keogram_title(keo) -> str:
    """The keogram's title, the same for the demo and ``aurora-pipeline keogram``: site, kind and
    the UT span of its frames, e.g. "gako: north-south keogram through the zenith,
    2011-01-06 04:00 to 07:59 UT"."""
    times = np.sort(keo["time"].values.astype("datetime64[m]"))
    first, last = (np.datetime_as_string(t).replace("T", " ") for t in (times[0], times[-1]))
    last = last[11:] if last[:10] == first[:10] else last
    site = keo.attrs.get("site", "")
    return f"{site + ': ' if site else ''}{keo.attrs.get('long_name', 'keogram')}, {first} to {last} UT"


def keogram_figure(keo, title: str | None = None, max_columns: int = 4000):
    """A keogram (``aurora_pipeline.keogram``) with the label of each frame as a colour strip
    beneath it, the label's probability below that, and a legend of the class names.

    Time runs along x on a regular grid of the frames' median cadence (coarsened to at
    most ``max_columns`` columns; each column shows the frame nearest its centre); columns
    with no frame within half a column (data gaps) stay blank. y is the keogram's
    coordinate (elevation along the line, latitude or longitude), each point drawn at
    its own value (latitudes crowd towards the horizons). Without labels the two
    lower panels are left out.
    The vertical axis says which end is which: north (N) up and south (S) down for the
    north-south line (east and west for the east-west one); along ``elevation`` its ticks give
    the true elevation with its side ("45° S", "zenith", "45° N"), the ends being the field of
    view's edge. The time axis runs over whole minutes, so its last tick is the end of the data.
    Without a ``title``, ``keogram_title(keo)``. Returns the matplotlib Figure.
    Raises: BadInputError when ``keo`` is not a (time, coordinate) DataArray with frames.
    """
    # matplotlib: only when drawing
    from matplotlib import dates as mdates
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    if getattr(keo, "ndim", 0) != 2 or keo.dims[0] != "time" or keo.sizes["time"] == 0:
        raise BadInputError("keo", f"must be a non-empty (time, coordinate) keogram, got dims {getattr(keo, 'dims', None)}",
                            "pass the DataArray aurora_pipeline.keogram(...) returns")
    along = keo.dims[1]
    times = keo["time"].values.astype("datetime64[ms]")
    order = np.argsort(times, kind="stable")
    times = times[order]
    t = times.astype(np.int64).astype(np.float64)
    step = np.diff(t)
    cadence = float(np.median(step)) if len(step) else 3000.0
    cadence = cadence if cadence > 0 else 3000.0
    n_cols = int(min(max_columns, max(1, np.ceil((t[-1] - t[0]) / cadence) + 1)))
    width = max(cadence, (t[-1] - t[0] + cadence) / n_cols)
    centres = t[0] + (np.arange(n_cols) + 0.5) * width - 0.5 * cadence
    nearest = np.clip(np.searchsorted(t, centres), 1, len(t) - 1) if len(t) > 1 else np.zeros(n_cols, int)
    if len(t) > 1:
        nearest = np.where(np.abs(t[nearest - 1] - centres) <= np.abs(t[nearest] - centres), nearest - 1, nearest)
    found = np.abs(t[nearest] - centres) <= max(width, cadence) / 2 + 1e-6
    values = np.asarray(keo.values, dtype=float)[order] / (255.0 if keo.dtype == np.uint8 else 1.0)
    image = np.where(found[:, None], values[nearest], np.nan).T
    y = np.asarray(keo[along].values, dtype=float)
    x0 = mdates.date2num(np.datetime64(int(t[0] - 0.5 * cadence), "ms"))
    x1 = x0 + n_cols * width / 86_400_000.0
    labelled = "label" in keo.coords
    fig = _figure(10.0, 6.0 if labelled else 4.0)
    if labelled:
        axes = fig.subplots(3, 1, sharex=True, height_ratios=[4.0, 0.45, 1.2])
    else:
        axes = [fig.add_subplot()]
    ax = axes[0]
    # cell edges half-way between the slice's points: latitude is not evenly spaced along the line
    y_edges = np.r_[y[0] - 0.5 * (y[1] - y[0]), 0.5 * (y[1:] + y[:-1]), y[-1] + 0.5 * (y[-1] - y[-2])] \
        if len(y) > 1 else np.array([y[0] - 0.5, y[0] + 0.5])
    x_edges = np.linspace(x0, x1, n_cols + 1)
    ax.pcolormesh(x_edges, y_edges, np.ma.masked_invalid(image), cmap="gray", vmin=0.0, vmax=1.0, shading="flat",
                  rasterized=True)
    _keogram_vertical_axis(ax, keo, along, y_edges)
    ax.set_title(title or keogram_title(keo), fontsize=10)
    if labelled:
        names = str(keo["label"].attrs.get("flag_meanings", "")).split()
        labels = np.asarray(keo["label"].values)[order].astype(int)
        k = max(len(names), int(labels.max()) + 1, 1)
        names = names + [f"class {i}" for i in range(len(names), k)]
        strip = np.where(found & (labels[nearest] >= 0), labels[nearest], -1).astype(float)
        strip[strip < 0] = np.nan
        cmap = ListedColormap([f"C{i % 10}" for i in range(k)])
        axes[1].imshow(strip[None, :], aspect="auto", cmap=cmap, vmin=-0.5, vmax=k - 0.5, interpolation="nearest",
                       extent=(x0, x1, 0, 1))
        axes[1].set_yticks([])
        axes[1].set_ylabel("label", rotation=0, ha="right", va="center")
        fig.legend(handles=[Patch(color=f"C{i % 10}", label=n) for i, n in enumerate(names)], ncol=min(k, 8),
                   loc="outside lower center", fontsize=8, frameon=False)
        if "label_probability" in keo.coords:
            prob = np.asarray(keo["label_probability"].values, dtype=float)[order]
            axes[2].plot(mdates.date2num(times), prob, ".", ms=2, color="k")
        axes[2].set_ylim(0, 1.02)
        axes[2].set_ylabel("probability")
        axes[2].grid(alpha=0.3)
    axes[-1].set_xlim(*_whole_minutes(x0, x1))
    axes[-1].xaxis_date()
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S" if x1 - x0 < 15 / 1440 else "%H:%M"))
    axes[-1].set_xlabel(f"UT on {np.datetime_as_string(times[0], unit='D')}")
    return fig


_SIDES = {"ns": ("S", "N", "north-south"), "ew": ("W", "E", "east-west")}


def _keogram_vertical_axis(ax, keo, along: str, y_edges: np.ndarray) -> None:
    """Label the keogram's vertical axis: what it is, the two ends (N up, S down), and along
    ``elevation`` (0 south horizon .. 90 zenith .. 180 north horizon) ticks in true elevation."""
    low, high, line = _SIDES.get(str(keo.attrs.get("keogram_axis", "ns")), _SIDES["ns"])
    lo, hi = float(y_edges[0]), float(y_edges[-1])
    ax.set_ylim(lo, hi)
    if along == "elevation":
        ends = [round(float(v)) for v in (keo[along].values.min(), keo[along].values.max())]
        ticks = sorted({ends[0], ends[1], *(v for v in (45, 90, 135) if ends[0] + 8 <= v <= ends[1] - 8)})
        names = ["zenith" if v == 90 else f"{v if v < 90 else 180 - v}° {low if v < 90 else high}" for v in ticks]
        ax.set_yticks(ticks, labels=names)
        ax.set_ylabel(f"elevation along the {line} line")
    else:
        units = {"degrees_north": "°N", "degrees_east": "°E"}.get(keo[along].attrs.get("units", ""), "")
        ax.set_ylabel(f"{'geographic ' + along if units else along}{f' ({units})' if units else ''}")
    for y, name in ((1.0, high), (0.0, low)):
        ax.text(1.005, y, name, transform=ax.transAxes, ha="left", va="top" if y else "bottom", fontsize=11,
                fontweight="bold")


def _whole_minutes(x0: float, x1: float) -> tuple[float, float]:
    """Time-axis limits (matplotlib day numbers) widened to whole minutes when the span is 15
    minutes or more, so the locator's ticks reach the ends of the data (04:00 .. 08:00, not 07:30)."""
    if x1 - x0 < 15 / 1440:
        return x0, x1
    return np.floor(x0 * 1440 + 1e-6) / 1440, np.ceil(x1 * 1440 - 1e-6) / 1440
