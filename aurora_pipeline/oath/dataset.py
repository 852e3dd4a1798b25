"""The OATH dataset (Clausen & Nickisch 2018), read as the release ships it.

Layout of an unpacked release (``oath_v1.1_20181026.tgz``)::

    <root>/classifications/classifications.csv   18 comment lines, then
                                                  class2,class6,picNum,picType,rotAng
    <root>/classifications/train_test_split.csv  5 rows, each a permutation of the
                                                  row indices, written as floats
    <root>/images/cropped_scaled/NNNNN.png        256 x 256 16-bit RGB, signal in green
    <root>/images/cropped_scaled_rotated/NNNNN_AAA.png   (optional) copies rotated by
                                                  rotAng degrees by the release's script

The release's web page spells the folder ``classification/classification.csv``;
both spellings are accepted. Row ``i`` of the label file is image ``i`` of every
split row; ``picNum`` and ``rotAng`` stay zero-padded strings as in the file.

Example:
    >>> ds = load_oath("data/oath")
    >>> train, test = ds.split(0)              # 4,077 and 1,747 row indices
    >>> x = ds.load_images(train, image_size=128)   # float32 (4077, 128, 128) in [0, 1]
"""

from __future__ import annotations

import hashlib
import io
import math
import multiprocessing
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

import numpy as np
import pandas as pd

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.oath.config import N_SPLITS
from aurora_pipeline.pngio import PNG_SIGNATURE, read_png16

__all__ = [
    "CLASS_NAMES",
    "OATH_CLASS_COUNTS",
    "ImageReport",
    "OathData",
    "OathDataset",
    "load_oath",
    "verify_images",
]

CLASS_NAMES = ("arc", "diffuse", "discrete", "cloudy", "moon", "noaurora")  # index = class6
OATH_CLASS_COUNTS = {"arc": 774, "diffuse": 1102, "discrete": 1400, "cloudy": 852, "moon": 614, "noaurora": 1082}
LABEL_COLUMNS = ("class2", "class6", "picNum", "picType", "rotAng")
IMAGE_FOLDERS = ("cropped_scaled", "cropped_scaled_rotated")
_LABEL_FILES = ("classifications/classifications.csv", "classification/classification.csv")
_SHOW = 5  # how many offending items an error message lists
_USE_RELEASE = "use the release's classifications.csv."


def _manual_fix(root: Path) -> str:
    return (
        "rerun with the download on (--download on the command line, -p download=true for a deployment run) "
        "to fetch oath_v1.1_20181026.tgz, or unpack the release so that "
        f"{root}/classifications/classifications.csv, {root}/classifications/train_test_split.csv and "
        f"{root}/images/cropped_scaled/00001.png ... 05824.png exist."
    )


@dataclass(frozen=True)
class ImageReport:
    """What :func:`verify_images` found, without decoding any pixels.

    Attributes:
        checked: how many image files were looked at.
        missing: files that do not exist.
        not_png: files that exist but do not start with the PNG signature.
    """

    checked: int
    missing: tuple[Path, ...]
    not_png: tuple[Path, ...]

    @property
    def ok(self) -> bool:
        return not self.missing and not self.not_png

    def raise_if_bad(self, root: Path) -> None:
        """Raise BadInputError listing how many files are missing or broken, and the fix."""
        if self.ok:
            return
        parts = []
        for what, paths in (("missing", self.missing), ("not PNG files", self.not_png)):
            if paths:
                shown = ", ".join(str(p) for p in paths[:_SHOW])
                more = f" and {len(paths) - _SHOW} more" if len(paths) > _SHOW else ""
                parts.append(f"{len(paths)} of {self.checked} images are {what} ({shown}{more})")
        raise BadInputError(root, "; ".join(parts) + ".", _manual_fix(root))


@dataclass(frozen=True, eq=False)
class OathDataset:
    """The OATH labels, splits and image locations.

    Attributes:
        root: the release folder.
        table: the label file as a DataFrame, columns class2, class6 (int),
            picNum, picType, rotAng (str, zero-padded as in the file); one row per image.
        labels: int64 (n,), the class6 index of each row (index into ``class_names``).
        splits: int64 (5, n), each row a permutation of 0..n-1.
        label_file, split_file: the files the above came from.
        image_folder: "cropped_scaled" or "cropped_scaled_rotated" (used when only
            the rotated copies are present).
        comment: the label file's comment header (licence and acknowledgements).
        class_names: ("arc", "diffuse", "discrete", "cloudy", "moon", "noaurora").
    """

    root: Path
    table: pd.DataFrame
    labels: np.ndarray
    splits: np.ndarray
    label_file: Path
    split_file: Path
    image_folder: str = "cropped_scaled"
    comment: str = ""
    class_names: tuple[str, ...] = field(default=CLASS_NAMES)

    def __len__(self) -> int:
        return len(self.table)

    def split(self, i: int, train_fraction: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of split ``i``: the first ``round(train_fraction * n)`` entries
        of row ``i`` train, the rest test (4,077 and 1,747 for the full release).

        Raises:
            BadInputError: ``i`` not in 0..4 or ``train_fraction`` not in (0, 1).
        """
        if not (isinstance(i, (int, np.integer)) and 0 <= i < len(self.splits)):
            raise BadInputError("split", f"split {i!r} does not exist.", f"use 0..{len(self.splits) - 1}.")
        if not 0.0 < train_fraction < 1.0:
            raise BadInputError("train_fraction", f"{train_fraction!r} is not in (0, 1).", "use e.g. 0.7.")
        n_train = math.floor(train_fraction * len(self) + 0.5)
        row = self.splits[i]
        return row[:n_train].copy(), row[n_train:].copy()

    def image_path(self, i: int) -> Path:
        """Path of row ``i``'s image: images/cropped_scaled/NNNNN.png, or
        images/cropped_scaled_rotated/NNNNN_AAA.png when only rotated copies exist."""
        row = self.table.iloc[int(i)]
        if self.image_folder == "cropped_scaled_rotated":
            name = f"{row.picNum}_{row.rotAng}.png"
        else:
            name = f"{row.picNum}.png"
        return self.root / "images" / self.image_folder / name

    def load_image(self, i: int) -> np.ndarray:
        """Row ``i``'s image as float32 (256, 256) in [0, 1]: the green channel / 65535,
        all 16 bits kept.

        Raises:
            BadInputError: the file is missing or unreadable.
        """
        path = self.image_path(i)
        if not path.exists():
            raise BadInputError(path, "the OATH image is missing.", _manual_fix(self.root))
        return read_png16(path, channel=1).astype(np.float32) / np.float32(65535)

    def load_images(
        self,
        indices: Sequence[int] | np.ndarray,
        image_size: int | None = None,
        *,
        workers: int | None = None,
    ) -> np.ndarray:
        """Load many images, optionally resized.

        Args:
            indices: row indices.
            image_size: side of the output in pixels; None keeps the stored size.
                Resizing is bilinear with antialiasing (torch), so downsampling averages.
            workers: decoding processes (PNG decoding in pypng is pure Python, so
                threads would not help). None: up to 4, one per CPU. The processes
                are spawned, so a script calling this needs the usual
                ``if __name__ == "__main__":`` guard; workers=1 decodes in-process.

        Returns:
            float32 (n, image_size, image_size) in [0, 1].

        Raises:
            BadInputError: images missing or unreadable (lists how many and the first
                few paths), or images of different sizes with image_size None.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        paths = [self.image_path(i) for i in indices]
        verify_images(self, indices).raise_if_bad(self.root)
        green = _read_green_channels(paths, workers)
        unreadable = [(p, g) for p, g in zip(paths, green) if isinstance(g, str)]
        if unreadable:
            shown = "; ".join(message for _, message in unreadable[:_SHOW])
            raise BadInputError(
                self.root, f"{len(unreadable)} of {len(paths)} images are unreadable: {shown}.", _manual_fix(self.root)
            )
        shapes = {g.shape for g in green}
        if image_size is None and len(shapes) > 1:
            raise BadInputError(
                self.root, f"the images have different sizes {sorted(shapes)}.", "pass image_size to resize them."
            )
        out_shape = (image_size, image_size) if image_size is not None else (green[0].shape if green else (256, 256))
        out = np.empty((len(paths), *out_shape), dtype=np.float32)
        for start in range(0, len(green), 256):  # bounded memory for the float copies
            chunk = green[start : start + 256]
            out[start : start + len(chunk)] = _to_unit_float(chunk, image_size)
        return out

    def checksums(self) -> dict[str, str]:
        """sha256 hex digest of the label and split files, keyed by path relative to root."""
        return {str(p.relative_to(self.root)): _sha256(p) for p in (self.label_file, self.split_file)}

    def subset(self, indices_per_class: int, seed: int = 0) -> OathDataset:
        """A small dataset with ``indices_per_class`` rows of each class (fewer where a
        class has fewer), drawn with ``seed``, for quick runs.

        Rows keep their order in the file; each split row keeps the order of the kept
        rows and is renumbered, so it is again a permutation of 0..m-1.
        """
        if indices_per_class < 1:
            raise BadInputError("indices_per_class", f"{indices_per_class} < 1.", "use at least 1.")
        rng = np.random.default_rng(seed)
        keep = []
        for c in range(len(self.class_names)):
            rows = np.flatnonzero(self.labels == c)
            keep.append(rng.choice(rows, size=min(indices_per_class, len(rows)), replace=False))
        keep = np.sort(np.concatenate(keep))
        new_index = np.full(len(self), -1, dtype=np.int64)
        new_index[keep] = np.arange(len(keep))
        mapped = new_index[self.splits]
        splits = np.stack([r[r >= 0] for r in mapped])
        return OathDataset(
            root=self.root,
            table=self.table.iloc[keep].reset_index(drop=True),
            labels=self.labels[keep],
            splits=splits,
            label_file=self.label_file,
            split_file=self.split_file,
            image_folder=self.image_folder,
            comment=self.comment,
        )


def load_oath(
    root: str | os.PathLike, *, expected_counts: Mapping[str, int] | None = OATH_CLASS_COUNTS
) -> OathDataset:
    """Read the OATH label and split files under ``root`` (images are read on demand).

    Args:
        root: the unpacked release folder.
        expected_counts: images per class the label file must hold; the default is
            the release's (arc 774, diffuse 1102, discrete 1400, cloudy 852, moon 614,
            noaurora 1082). Pass None for a subset or a synthetic stand-in: then
            every class must merely be present.

    Raises:
        BadInputError: a file is missing, has no header line, holds unknown or
            inconsistent classes, does not match ``expected_counts``, or the split
            file is not five permutations of the row indices.
    """
    root = Path(root)
    label_file = _find_label_file(root)
    split_file = label_file.parent / "train_test_split.csv"
    comment, table = _read_label_file(label_file)
    labels = table["class6"].to_numpy(dtype=np.int64)
    _check_counts(label_file, labels, expected_counts)
    splits = _read_split_file(split_file, len(table))
    folder = IMAGE_FOLDERS[0]
    if not (root / "images" / IMAGE_FOLDERS[0]).is_dir() and (root / "images" / IMAGE_FOLDERS[1]).is_dir():
        folder = IMAGE_FOLDERS[1]
    return OathDataset(root, table, labels, splits, label_file, split_file, folder, comment)


def verify_images(ds: OathDataset, indices: Sequence[int] | np.ndarray | None = None) -> ImageReport:
    """Check that the images of ``indices`` (all rows when None) exist and start with
    the PNG signature, reading 8 bytes per file."""
    rows = range(len(ds)) if indices is None else indices
    missing, not_png, checked = [], [], 0
    for i in rows:
        path = ds.image_path(i)
        checked += 1
        try:
            with open(path, "rb") as handle:
                if handle.read(8) != PNG_SIGNATURE:
                    not_png.append(path)
        except FileNotFoundError:
            missing.append(path)
    return ImageReport(checked, tuple(missing), tuple(not_png))


# ---------------------------------------------------------------- label file


def _find_label_file(root: Path) -> Path:
    for name in _LABEL_FILES:
        if (root / name).is_file():
            return root / name
    raise BadInputError(root, f"no OATH label file ({' or '.join(_LABEL_FILES)}).", _manual_fix(root))


def _read_label_file(path: Path) -> tuple[str, pd.DataFrame]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BadInputError(path, f"cannot read the label file ({error}).", "download or copy it again.") from error
    lines = text.splitlines()
    # The comment header has no '#' and contains commas, so find the column line by content.
    header_at = next(
        (k for k, line in enumerate(lines) if tuple(s.strip() for s in line.split(",")) == LABEL_COLUMNS), None
    )
    if header_at is None:
        raise BadInputError(path, f"no header line '{','.join(LABEL_COLUMNS)}' found.", _USE_RELEASE)
    try:
        table = pd.read_csv(io.StringIO("\n".join(lines[header_at:])), dtype=str, skipinitialspace=True)
    except (pd.errors.ParserError, ValueError) as error:
        raise BadInputError(path, f"cannot parse the rows ({error}).", _USE_RELEASE) from error
    if table.empty or table.isna().any().any():
        bad = table.index[table.isna().any(axis=1)]
        where = f"file line {header_at + 2 + bad[0]}" if len(bad) else "the file"
        raise BadInputError(path, f"empty label table or empty fields ({where}).", _USE_RELEASE)
    _check_rows(path, table, first_line=header_at + 2)
    table["class2"] = table["class2"].astype(np.int64)
    table["class6"] = table["class6"].astype(np.int64)
    table["picNum"] = table["picNum"].str.zfill(5)  # undo a spreadsheet dropping the zeros
    table["rotAng"] = table["rotAng"].str.zfill(3)
    if table["picNum"].duplicated().any():
        dup = table["picNum"][table["picNum"].duplicated()].iloc[0]
        raise BadInputError(path, f"picNum {dup} appears more than once.", _USE_RELEASE)
    return "\n".join(lines[:header_at]), table


def _check_rows(path: Path, table: pd.DataFrame, first_line: int) -> None:
    def fail(mask: pd.Series, what: str) -> None:
        k = int(np.flatnonzero(mask.to_numpy())[0])
        row = ",".join(table.iloc[k])
        raise BadInputError(
            path,
            f"{int(mask.sum())} rows {what}; first at file line {first_line + k}: '{row}'.",
            "use the release's classifications.csv (class6: 0 arc, 1 diffuse, 2 discrete, "
            "3 cloudy, 4 moon, 5 noaurora; class2: 0 for classes 0-2, 1 for 3-5).",
        )

    for column in ("class2", "class6", "picNum", "rotAng"):
        bad = ~table[column].str.fullmatch(r"\d+")
        if bad.any():
            fail(bad, f"have a non-integer {column}")
    class6 = table["class6"].astype(np.int64)
    if (bad := ~class6.between(0, len(CLASS_NAMES) - 1)).any():
        fail(bad, "have class6 outside 0..5")
    if (bad := table["picType"] != class6.map(dict(enumerate(CLASS_NAMES)))).any():
        fail(bad, "have a picType that does not name their class6")
    if (bad := table["class2"].astype(np.int64) != (class6 >= 3).astype(np.int64)).any():
        fail(bad, "have a class2 that does not match class6")


def _check_counts(path: Path, labels: np.ndarray, expected: Mapping[str, int] | None) -> None:
    counts = dict(zip(CLASS_NAMES, np.bincount(labels, minlength=len(CLASS_NAMES)).tolist()))
    if expected is None:
        absent = [name for name, c in counts.items() if c == 0]
        if absent:
            raise BadInputError(path, f"no images of class {', '.join(absent)}.", "every OATH class must be present.")
        return
    if set(expected) != set(CLASS_NAMES):
        raise BadInputError(
            "expected_counts", f"keys {sorted(expected)} are not {CLASS_NAMES}.", "name all six classes."
        )
    if counts != dict(expected):
        diff = ", ".join(f"{k} {counts[k]} (expected {expected[k]})" for k in CLASS_NAMES if counts[k] != expected[k])
        raise BadInputError(
            path,
            f"class counts do not match the release: {diff}.",
            "use the release's unmodified classifications.csv, or pass expected_counts=None "
            "for a subset or a synthetic stand-in.",
        )


def _read_split_file(path: Path, n: int) -> np.ndarray:
    fix = "use the release's train_test_split.csv (five rows, each a permutation of 0..n-1 for the n label rows)."
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise BadInputError(path, "the split file is missing.", fix) from error
    except (OSError, UnicodeDecodeError) as error:
        raise BadInputError(path, f"cannot read the split file ({error}).", fix) from error
    rows = [line for line in text.splitlines() if line.strip()]
    if len(rows) != N_SPLITS:
        raise BadInputError(path, f"has {len(rows)} rows, expected {N_SPLITS}.", fix)
    splits = np.empty((N_SPLITS, n), dtype=np.int64)
    for r, line in enumerate(rows):
        try:
            values = np.array([float(v) for v in line.split(",") if v.strip()])
        except ValueError as error:
            raise BadInputError(path, f"row {r} holds a non-number ({error}).", fix) from error
        if len(values) != n:
            raise BadInputError(path, f"row {r} has {len(values)} entries, but the label file has {n} rows.", fix)
        if not np.all(values == np.round(values)):
            raise BadInputError(path, f"row {r} holds non-integer indices.", fix)
        splits[r] = values.astype(np.int64)
        present = np.zeros(n, dtype=bool)
        inside = splits[r][(splits[r] >= 0) & (splits[r] < n)]
        present[inside] = True
        if not present.all() or len(inside) != n:
            absent = np.flatnonzero(~present)
            raise BadInputError(
                path,
                f"row {r} is not a permutation of 0..{n - 1}: {len(absent)} indices absent "
                f"(e.g. {absent[:_SHOW].tolist()}), {n - len(np.unique(inside))} repeated or out of range.",
                fix,
            )
    return splits


# ---------------------------------------------------------------- pixels


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_green(path: Path) -> np.ndarray | str:
    """The uint16 green channel, or the reason the file cannot be read."""
    try:
        return read_png16(path, channel=1)
    except BadInputError as error:
        return str(error)


def _read_green_channels(paths: list[Path], workers: int | None) -> list[np.ndarray | str]:
    """Green channels (or error messages), decoded in a process pool when that pays off."""
    workers = workers or min(4, os.cpu_count() or 1)
    if workers <= 1 or len(paths) < 32:
        return [_read_green(p) for p in paths]
    if multiprocessing.current_process().daemon:  # e.g. a Dask worker: no child processes allowed
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(_read_green, paths))
    # spawn, not fork: forking a process that already runs torch threads can deadlock.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_read_green, paths, chunksize=16))


def _to_unit_float(green: list[np.ndarray], image_size: int | None) -> np.ndarray:
    """uint16 images -> float32 (n, s, s) in [0, 1], resized when image_size is given."""
    if len({g.shape for g in green}) > 1:
        return np.concatenate([_to_unit_float([g], image_size) for g in green])
    x = np.stack([g.astype(np.float32) for g in green]) / np.float32(65535)
    if image_size is None or x.shape[1:] == (image_size, image_size):
        return x
    # torch: only for the tensors of a training run (reading OATH does without)
    import torch
    import torch.nn.functional as F

    size = (image_size, image_size)
    resized = F.interpolate(torch.from_numpy(x)[:, None], size, mode="bilinear", antialias=True, align_corners=False)
    return resized[:, 0].clamp_(0.0, 1.0).numpy()


@dataclass(frozen=True, eq=False)
class OathData:
    """Everything the later stages read.

    Attributes:
        dataset: the (possibly subset) ``OathDataset``.
        frames: uint8 (n, S, S), every image at ``image_size`` (0..255 meaning 0..1).
        labels: int64 (n,) class indices into ``class_names``.
        class_names: ("arc", "diffuse", "discrete", "cloudy", "moon", "noaurora").
        splits: {split row: (train indices, test indices)}.
        info: JSON-ready facts: root, n_images, class_counts, full_release, checksums...
    """

    dataset: OathDataset
    frames: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    splits: dict[int, tuple[np.ndarray, np.ndarray]]
    info: dict[str, Any]
