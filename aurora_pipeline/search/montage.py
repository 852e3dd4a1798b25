"""The answer to a similarity query as files: a CSV table and a montage PNG.

The montage shows the query frame first (outlined), then its neighbours best first,
each captioned with site, UT time, label and score. Figures use the same Agg canvas,
size rules and DPI as :mod:`aurora_pipeline.plots`.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.plots import _figure, _save
from aurora_pipeline.store import Store, read_slots


def result_frames(st: Store, df: pd.DataFrame) -> np.ndarray:
    """The stored frames (n, s, s) uint8 of the result rows, read at their slots only."""
    frames = [None] * len(df)
    for (site, year), part in df.groupby([df.site, df.time.dt.year], sort=False):
        images = read_slots(st, site, int(year), part.slot.to_numpy(), "frames")
        for position, image in zip(part.index, images):
            frames[df.index.get_loc(position)] = image
    return np.stack(frames) if frames else np.empty((0, 1, 1), np.uint8)


def similar_montage_png(query_image: np.ndarray | None, query_caption: str, images: np.ndarray,
                        captions: list[str], path: str | os.PathLike, columns: int = 6) -> Path:
    """Query frame (outlined in red) then ``images`` in rows of ``columns``, each with its caption.

    Args:
        query_image: (s, s) uint8, or None (a blank first cell).
        images: (n, s, s) uint8 neighbours, best first; ``captions`` one per image.
    Size: 1.8 columns x 2.0 rows inches, rows = ceil((n + 1) / columns).
    Raises: BadInputError when captions and images differ in number.
    """
    images = np.asarray(images)
    if len(captions) != len(images):
        raise BadInputError("captions", f"{len(captions)} captions for {len(images)} images", "pass one per image")
    cells = [(query_image, "query\n" + textwrap.fill(query_caption, 32, break_long_words=True), True)]
    cells += [(image, caption, False) for image, caption in zip(images, captions)]
    rows = -(-len(cells) // columns)
    fig = _figure(1.8 * columns, 2.0 * rows)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for ax, (image, caption, is_query) in zip(axes.flat, cells):
        if image is not None:
            ax.imshow(np.asarray(image) / 255.0, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(caption, fontsize=7)
        if is_query:
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_edgecolor("tab:red")
                spine.set_linewidth(2.5)
    return _save(fig, path)


def write_results(st: Store, df: pd.DataFrame, query_image: np.ndarray | None, query_caption: str,
                  out_dir: str | os.PathLike) -> dict[str, str]:
    """``similar.csv`` (the table) and ``similar.png`` (the montage) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = df.assign(time=df.time.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3])
    table.to_csv(out / "similar.csv", index=False)
    captions = [f"{r.site} {r.time:%Y-%m-%d %H:%M:%S}\n{r.label or 'unlabelled'}  {r.score:.3f}" for r in df.itertuples()]
    png = similar_montage_png(query_image, query_caption, result_frames(st, df), captions, out / "similar.png")
    return {"csv": str(out / "similar.csv"), "png": str(png)}
