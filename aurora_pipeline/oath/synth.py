"""A synthetic stand-in for the OATH release, in the release's own layout.

``write_synthetic_oath(root)`` writes what ``load_oath`` reads: the label file with
the release's 18-line comment header, ``train_test_split.csv`` with five seeded
permutations written as floats, and 16-bit RGB PNGs with the signal in the green
channel, rendered by :func:`aurora_pipeline.synth.scenes.render_oath_image`.
Class proportions follow the release (arc 774, diffuse 1102, discrete 1400,
cloudy 852, moon 614, noaurora 1082), scaled to ``n``; with n = 5824 the counts
are the release's exactly.

Example:
    >>> write_synthetic_oath("tmp/oath", n=60, seed=0)
    >>> ds = load_oath("tmp/oath", expected_counts=None)
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.oath.dataset import CLASS_NAMES, LABEL_COLUMNS, N_SPLITS, OATH_CLASS_COUNTS
from aurora_pipeline.pngio import write_png16

__all__ = ["OATH_HEADER", "SCENE_KIND", "class_counts", "rotate_like_release", "write_synthetic_oath"]

# The comment header of the release's classifications.csv, line for line (trailing
# spaces included); kept here so nothing is read from the real data at run time.
OATH_HEADER = (
    "-------------------------------------------------------------------------------\n"
    "Unless stated otherwise, all data in the OATH Dataset is licensed under a\n"
    '<a href="https://creativecommons.org/licenses/by/4.0/">Creative Commons 4.0 \n'
    "Attribution License (CC BY 4.0)</a> and the accompanying source code is \n"
    'licensed under a <a href="https://opensource.org/licenses/BSD-2-Clause">\n'
    "BSD-2-Clause License</a>.\n"
    "In particular, all actual image data included in the tarball are modified from \n"
    'the <a href="https://www.nasa.gov/mission_pages/themis/spacecraft/asi.html">\n'
    "THEMIS all-sky imagers </a>.\n"
    "\n"
    "We thank H. Frey for giving us permission to include these data.\n"
    "Copyright for these data remains with NASA.\n"
    "\n"
    "We acknowledge NASA contract NAS5-02099 and V. Angelopoulos for use of data \n"
    "from the THEMIS Mission. Specifically: S. Mende and E. Donovan for use of the\n"
    "ASI data, the CSA for logistical support in fielding and data retrieval from\n"
    "the GBO stations, and NSF for support of GIMNAST through grant AGS-1004736.\n"
    "-------------------------------------------------------------------------------\n"
)
# OATH class name -> aurora_pipeline.synth.scenes kind
SCENE_KIND = {name: name for name in CLASS_NAMES} | {"noaurora": "clear"}
LAYOUTS = ("cropped_scaled", "rotated")


def class_counts(n: int) -> dict[str, int]:
    """Images per class for ``n`` images, in the release's proportions (largest
    remainder, so the counts sum to ``n``; every class gets at least one)."""
    if n < len(CLASS_NAMES):
        raise BadInputError("n", f"{n} images cannot hold all {len(CLASS_NAMES)} classes.", "use n >= 6.")
    total = sum(OATH_CLASS_COUNTS.values())
    exact = np.array([OATH_CLASS_COUNTS[c] * n / total for c in CLASS_NAMES])
    counts = np.maximum(np.floor(exact).astype(int), 1)
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    k = 0
    while counts.sum() != n:  # hand out (or take back) one image at a time by remainder
        step = 1 if counts.sum() < n else -1
        c = order[k % len(order)]
        if step > 0 or counts[c] > 1:
            counts[c] += step
        k += 1
    return dict(zip(CLASS_NAMES, counts.tolist()))


def rotate_like_release(image: np.ndarray, angle: int) -> np.ndarray:
    """Rotate like the release's code/rotate.sh (``convert -background black
    -distort SRT angle``): clockwise by ``angle`` degrees about the centre, same
    size, black outside. ``image`` is (y, x) with y pointing down."""
    if angle % 90 == 0:
        return np.rot90(image, k=-(angle // 90) % 4).copy()
    # scipy: only for the rotated layout
    from scipy import ndimage

    # scipy's positive angles turn counter-clockwise on screen, hence the minus.
    rotated = ndimage.rotate(image.astype(np.float32), -angle, reshape=False, order=1, mode="constant", cval=0.0)
    if image.dtype.kind == "f":
        return rotated.astype(image.dtype)
    limits = np.iinfo(image.dtype)
    return np.clip(np.rint(rotated), limits.min, limits.max).astype(image.dtype)


def write_synthetic_oath(
    root: str | os.PathLike,
    n: int = 5824,
    seed: int = 0,
    layout: str = "cropped_scaled",
    *,
    image_size: int = 256,
    workers: int | None = None,
) -> Path:
    """Write a synthetic OATH release of ``n`` images under ``root``.

    Args:
        root: folder to create; must not exist or be empty (nothing is overwritten).
        n: number of images (>= 6).
        seed: seeds labels, rotation angles, splits and every image.
        layout: "cropped_scaled" writes images/cropped_scaled/NNNNN.png;
            "rotated" writes only images/cropped_scaled_rotated/NNNNN_AAA.png,
            rotated like the release's script.
        image_size: side of the images (the release's is 256).
        workers: processes rendering and writing PNGs (None: one per CPU).

    Returns:
        ``root`` as a Path.

    Raises:
        BadInputError: bad ``n`` or ``layout``, or ``root`` not empty.
    """
    if layout not in LAYOUTS:
        raise BadInputError("layout", f"{layout!r} is not one of {LAYOUTS}.", "pick one of them.")
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise BadInputError(root, "is not empty; refusing to overwrite.", "pick a new folder or empty this one.")
    rng = np.random.default_rng(seed)
    counts = class_counts(n)
    labels = rng.permutation(np.repeat(np.arange(len(CLASS_NAMES)), list(counts.values())))
    angles = rng.integers(0, 360, size=n)
    splits = np.stack([rng.permutation(n) for _ in range(N_SPLITS)])

    (root / "classifications").mkdir(parents=True, exist_ok=True)
    _write_label_file(root / "classifications" / "classifications.csv", labels, angles)
    # The release writes each index as e.g. 4.604000000000000000e+03 (numpy's savetxt default).
    np.savetxt(root / "classifications" / "train_test_split.csv", splits.astype(np.float64), delimiter=",")

    folder = root / "images" / ("cropped_scaled" if layout == "cropped_scaled" else "cropped_scaled_rotated")
    folder.mkdir(parents=True, exist_ok=True)
    image_seeds = np.random.SeedSequence(seed).generate_state(n, dtype=np.uint32)
    jobs = []
    for i in range(n):
        name = f"{i + 1:05d}.png" if layout == "cropped_scaled" else f"{i + 1:05d}_{angles[i]:03d}.png"
        angle = int(angles[i]) if layout == "rotated" else 0
        jobs.append((str(folder / name), SCENE_KIND[CLASS_NAMES[labels[i]]], int(image_seeds[i]), angle, image_size))
    _run_jobs(jobs, workers)
    return root


def _write_label_file(path: Path, labels: np.ndarray, angles: np.ndarray) -> None:
    lines = [",".join(LABEL_COLUMNS)]
    for i, (c, angle) in enumerate(zip(labels.tolist(), angles.tolist())):
        lines.append(f"{int(c >= 3)},{c},{i + 1:05d},{CLASS_NAMES[c]},{angle:03d}")
    path.write_text(OATH_HEADER + "\n".join(lines) + "\n", encoding="ascii")


def _write_image(job: tuple[str, str, int, int, int]) -> None:
    """Render one scene and write it as the release does: 16-bit RGB, green only."""
    # scipy (synth.scenes): only in the worker that draws an image
    from aurora_pipeline.synth.scenes import render_oath_image

    path, kind, image_seed, angle, size = job
    green = np.rint(np.clip(render_oath_image(kind, image_seed, size=size), 0.0, 1.0) * 65535).astype(np.uint16)
    if angle:
        green = rotate_like_release(green, angle)
    rgb = np.zeros((*green.shape, 3), dtype=np.uint16)
    rgb[..., 1] = green
    write_png16(path, rgb, compression=1)


def _write_images(jobs: list[tuple[str, str, int, int, int]]) -> int:
    for job in jobs:
        _write_image(job)
    return len(jobs)


def _run_jobs(jobs: list[tuple[str, str, int, int, int]], workers: int | None) -> None:
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(jobs) < 64 or multiprocessing.current_process().daemon:
        _write_images(jobs)
        return
    batches = [jobs[k : k + 32] for k in range(0, len(jobs), 32)]
    # spawn, not fork: forking a process that already runs torch threads can deadlock.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for _ in pool.map(_write_images, batches):
            pass
