"""Read THEMIS ASI Level-1 full-resolution CDF files (``thg_l1_asf_<site>_<YYYYMMDDHH>_v01.cdf``).

Two layouts exist and are told apart by the image variable's shape, never by the date:

- ``legacy``: ``thg_asf_<site>`` has one record per frame, each (256, 256); frame times
  come from ``thg_asf_<site>_epoch`` (CDF_EPOCH, milliseconds since 0000-01-01), which
  keeps the milliseconds (``thg_asf_<site>_time`` holds whole seconds in these files).
- ``v2024`` (files from 2024 on): ``thg_asf_<site>`` is one record of shape
  (256, 256, N), frame ``i`` being ``[:, :, i]``; frame times come from
  ``thg_asf_<site>_time`` (float64 unix seconds), rounded to the nearest millisecond.

Either way :func:`read_asi_cdf` returns frames as uint16 (n, y, x) with
``datetime64[ms]`` times, and every unusable file raises
:class:`~aurora_pipeline.errors.BadInputError` naming the file. :func:`open_asi_cdf`
checks a file and reads its times without decoding its pixels; ``AsiFile.blocks`` then
decodes the frames a block at a time (legacy files, whose frames are records stored in
compressed blocks of a few records each), so a reader can work on one block while the
next is inflated.

    >>> frames = read_asi_cdf("thg_l1_asf_gako_2011010617_v01.cdf")
    >>> frames.site, frames.layout, frames.images.shape, frames.times[0]
    ('gako', 'legacy', (23, 256, 256), numpy.datetime64('2011-01-06T17:00:00.053'))
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cdflib
import numpy as np

from aurora_pipeline.source.archive import ARCHIVE_NAME
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.hours import to_hour
from aurora_pipeline.source.sites import SITES

CDF_EPOCH_UNIX_MS = 62_167_219_200_000  # CDF_EPOCH value (ms since 0000-01-01) of 1970-01-01T00:00:00
CDF_EPOCH = 31  # CDF data type code
LAYOUTS = ("legacy", "v2024")
# Frame times outside these bounds are fill values or garbage, not observations.
EARLIEST, LATEST = np.datetime64("1990-01-01", "ms"), np.datetime64("2100-01-01", "ms")

# What a THEMIS imager makes, with room to spare: frames are 256 x 256 and an hour holds
# about 1,200 of them (3 s cadence). A file claiming more is refused before anything is
# allocated, so a few bytes claiming 65535 x 65535 pixels cannot exhaust a worker's memory.
MAX_SIDE = 512                    # pixels per frame side
MAX_FRAMES = 3600                 # frames per file (one hour at 1 s cadence)
MAX_IMAGE_BYTES = 1 << 30         # decoded image bytes per file (a real hour: ~157 MB)
# What a file can hold: no CDF compression (RLE, Huffman, GZIP) expands data more than
# deflate's ~1032:1, so a variable claiming more decoded bytes than this times the file
# size is lying about its size.
MAX_EXPANSION = 1100

_IMAGE_VAR = re.compile(r"^thg_asf_([a-z0-9]{4})$")
_FIX_REDOWNLOAD = "Download the file again; if it stays bad, leave it out of the run."


@dataclass(frozen=True, eq=False)
class AsiFrames:
    """Frames of one ASI file.

    Attributes:
        site: four-letter site code, e.g. ``"gako"``.
        times: datetime64[ms] (n,), start of each exposure, UTC, strictly increasing.
        images: uint16 (n, y, x), raw counts.
        layout: ``"legacy"`` or ``"v2024"``.
        source: the file name or URL the frames came from.
    """

    site: str
    times: np.ndarray
    images: np.ndarray
    layout: str
    source: str


FRAMES_PER_BLOCK = 112  # frames AsiFile.blocks decodes at a time by default: 16 of THEMIS's 7-record blocks, 15 MiB


@dataclass(frozen=True, eq=False)
class AsiFile:
    """One ASI file, opened and checked, its times read, its frames not yet decoded.

    Attributes:
        site, times, layout, source: as in :class:`AsiFrames`.
        frame_shape: (y, x) of each frame.
    """

    site: str
    times: np.ndarray
    layout: str
    source: str
    frame_shape: tuple[int, int]
    _cdf: object = field(repr=False)
    _image_var: str = ""
    _records_per_block: int = 0  # the image variable's blocking factor (records per compressed block), 0: none

    @property
    def n_frames(self) -> int:
        return len(self.times)

    def frames(self) -> AsiFrames:
        """All frames, decoded at once."""
        images = _read_images(self._cdf, self._image_var, self.layout, self.source)
        _check_frame_count(len(images), len(self.times), self.source)
        return AsiFrames(site=self.site, times=self.times, images=images, layout=self.layout, source=self.source)

    def blocks(self, frames: int = FRAMES_PER_BLOCK) -> Iterator[np.ndarray]:
        """The frames as consecutive uint16 (k, y, x) blocks of about ``frames`` frames, decoded one
        block at a time. A block holds whole compressed blocks of the file (a multiple of its
        blocking factor), so no compressed block is inflated twice; a v2024 file (one record) or a
        file with no blocking factor is decoded whole and handed out in slices."""
        per = self._records_per_block
        if self.layout != "legacy" or per <= 0 or per >= self.n_frames:
            yield from _slices(self.frames().images, frames)
            return
        step = max(per, frames // per * per)
        decoded = 0
        for start in range(0, self.n_frames, step):
            end = min(start + step, self.n_frames)
            block = _read_images(self._cdf, self._image_var, self.layout, self.source, (start, end - 1))
            decoded += len(block)
            yield block
        _check_frame_count(decoded, self.n_frames, self.source)


def _slices(images: np.ndarray, frames: int) -> Iterator[np.ndarray]:
    for start in range(0, len(images), frames):
        yield images[start : start + frames]


def parse_archive_name(filename: str | os.PathLike) -> tuple[str, np.datetime64]:
    """Site and hour of an archive file name ``thg_l1_asf_<site>_<YYYYMMDDHH>_v<NN>.cdf``.

    Any leading directories or URL prefix are ignored.

    Returns:
        (site, hour) with hour a ``datetime64[h]``.

    Raises:
        BadInputError: the name does not follow the pattern, has an impossible date, or
            names an unknown site.
    """
    name = str(filename).replace("\\", "/").rsplit("/", 1)[-1]
    match = ARCHIVE_NAME.match(name)
    if match is None:
        raise BadInputError(str(filename), "is not named like a THEMIS ASI full-resolution file.",
                            "Expected thg_l1_asf_<site>_<YYYYMMDDHH>_v01.cdf, "
                            "e.g. thg_l1_asf_gako_2011010617_v01.cdf.")
    site, stamp = match["site"], match["hour"]
    try:
        when = to_hour(stamp)
    except BadInputError:
        raise BadInputError(str(filename), f"has an impossible date/hour {stamp}.",
                            "Rename the file with a real UTC date and hour (YYYYMMDDHH).") from None
    _check_site(site, str(filename))
    return site, when


def read_asi_cdf(source: str | os.PathLike | bytes, *, name: str | None = None,
                 expected_site: str | None = None) -> AsiFrames:
    """Read one THEMIS ASI full-resolution CDF file, in either layout.

    Args:
        source: a local path, or the bytes of a CDF file (e.g. fetched with fsspec).
        name: how to call the file in messages and in ``AsiFrames.source`` (defaults
            to the path, or ``"<bytes>"``).
        expected_site: the site the file name promises; a file whose variables belong
            to another site is refused.

    Returns:
        AsiFrames with images uint16 (n, y, x) and times datetime64[ms] (n,).

    Raises:
        BadInputError: not a CDF / truncated / corrupt; image or time variable missing;
            frames not 3-d or not square; times and frames of different counts; times
            not strictly increasing or out of range; unknown site or not the expected one.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        handle, tmp = tempfile.mkstemp(suffix=".cdf", prefix="aurora_asi_")
        try:
            with os.fdopen(handle, "wb") as f:
                f.write(source)
            return open_asi_cdf(tmp, name=label, expected_site=expected_site).frames()
        finally:
            os.unlink(tmp)
    return open_asi_cdf(source, name=name, expected_site=expected_site).frames()


def open_asi_cdf(path: str | os.PathLike, *, name: str | None = None, expected_site: str | None = None) -> AsiFile:
    """Open one local THEMIS ASI CDF file and check everything but its pixels: the CDF's
    integrity, the site, the image variable's declared size and layout (before anything
    large is allocated) and the frame times (read here). Decode the frames with
    ``AsiFile.frames()`` (all at once) or ``AsiFile.blocks()`` (a block at a time).

    Raises:
        BadInputError: as :func:`read_asi_cdf`; a problem of the pixels themselves (a corrupt
            block, the wrong data type) is raised when they are decoded.
    """
    label = name or str(path)
    path = Path(path)
    if not path.is_file():
        raise BadInputError(label, "file not found.", "Check the path, or list the archive again.")
    _check_not_truncated(path, label)
    try:
        cdf = cdflib.CDF(path)
        info = cdf.cdf_info()
    except Exception as err:  # cdflib raises OSError, ValueError, IndexError... on damaged files
        raise BadInputError(label, f"is not a readable CDF file ({type(err).__name__}: {err}).",
                            _FIX_REDOWNLOAD) from err
    names = list(info.zVariables) + list(info.rVariables)
    image_var, site = _find_image_variable(names, label)
    if expected_site is not None and site != expected_site:
        raise BadInputError(label, f"holds images of site {site!r} (variable {image_var}) "
                            f"but its name says {expected_site!r}.",
                            "Put the file under its own site's name, or fix the archive listing.")
    spec = cdf.varinq(image_var)
    _check_claimed_size(spec, path.stat().st_size, label)
    if spec.Num_Dims == 2:
        layout = "legacy"
    elif spec.Num_Dims == 3:
        layout = "v2024"
    else:
        raise BadInputError(label, f"{image_var} has {spec.Num_Dims}-d records {spec.Dim_Sizes}; expected (y, x) "
                            "per frame (legacy) or one (y, x, n) record (v2024).",
                            "This is not a THEMIS ASI full-resolution file.")
    if int(spec.Last_Rec) < 0:
        raise BadInputError(label, f"{image_var} holds no frames.", _FIX_REDOWNLOAD)
    times = _read_times(cdf, site, names, layout, label)
    if layout == "legacy":  # one record per frame: the declared record count is the frame count
        _check_frame_count(int(spec.Last_Rec) + 1, len(times), label)
    _check_times(times, label)
    dims = [int(d) for d in spec.Dim_Sizes]
    return AsiFile(site=site, times=times, layout=layout, source=label, frame_shape=(dims[0], dims[1]),
                   _cdf=cdf, _image_var=image_var, _records_per_block=int(getattr(spec, "Block_Factor", 0) or 0))


def _check_frame_count(frames: int, times: int, label: str) -> None:
    if frames != times:
        raise BadInputError(label, f"has {frames} frames but {times} frame times.", _FIX_REDOWNLOAD)


def _check_claimed_size(spec, file_size: int, label: str) -> None:
    """Refuse an image variable whose declared shape a THEMIS imager never makes, or that the
    file is too small to hold, from its descriptor alone (before cdflib allocates it)."""
    dims = [int(d) for d in spec.Dim_Sizes]
    records = int(spec.Last_Rec) + 1
    if spec.Num_Dims == 3 and len(dims) == 3:
        side_y, side_x, frames = dims[0], dims[1], dims[2] * records
    elif spec.Num_Dims == 2 and len(dims) == 2:
        side_y, side_x, frames = dims[0], dims[1], records
    else:
        return  # the layout check that follows names the problem
    decoded = side_y * side_x * frames * 2  # CDF_UINT2
    fix = "This is not a THEMIS ASI full-resolution file, or its header is damaged; leave it out of the run."
    if max(side_y, side_x) > MAX_SIDE or frames > MAX_FRAMES or decoded > MAX_IMAGE_BYTES:
        raise BadInputError(label, f"{spec.Variable} claims {frames} frames of {side_y} x {side_x} pixels "
                            f"({decoded / 2**20:,.0f} MiB decoded); a THEMIS imager makes at most "
                            f"{MAX_FRAMES} frames of {MAX_SIDE} x {MAX_SIDE} per file "
                            f"({MAX_IMAGE_BYTES / 2**20:,.0f} MiB).", fix)
    if decoded > MAX_EXPANSION * file_size:
        raise BadInputError(label, f"{spec.Variable} claims {frames} frames of {side_y} x {side_x} pixels "
                            f"({decoded / 2**20:,.1f} MiB decoded), more than a {file_size:,}-byte file can hold "
                            f"under any CDF compression.", fix)


def _check_site(site: str, label: str) -> None:
    if site not in SITES:
        raise BadInputError(label, f"unknown THEMIS ASI site code {site!r}.",
                            f"Use one of the known codes: {', '.join(sorted(SITES))}.")


def _check_not_truncated(path: Path, label: str) -> None:
    """Compare the file size with the end-of-file offset in the CDF's global descriptor record.

    cdflib does not notice a missing tail until (or unless) it reads a damaged record,
    so this catches interrupted downloads early with a clear message.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(28)
        if len(head) < 4 or head[:4].hex() not in ("cdf30001", "cdf26002", "0000ffff"):
            raise BadInputError(label, f"is not a CDF file ({size} bytes; no CDF magic number at the start).",
                                _FIX_REDOWNLOAD)
        if len(head) < 8:
            raise BadInputError(label, f"is truncated ({size} bytes, shorter than a CDF header).", _FIX_REDOWNLOAD)
        if head[:8].hex() != "cdf300010000ffff":
            return  # CDF 2.x or a whole-file-compressed CDF: cdflib checks those itself
        if len(head) < 28:
            raise BadInputError(label, f"is truncated ({size} bytes, shorter than a CDF header).", _FIX_REDOWNLOAD)
        gdr_offset = int.from_bytes(head[20:28], "big")
        f.seek(gdr_offset + 36)
        eof = f.read(8)
    if len(eof) < 8:
        raise BadInputError(label, f"is truncated ({size} bytes; the header points past the end).", _FIX_REDOWNLOAD)
    expected = int.from_bytes(eof, "big")
    if size < expected:
        raise BadInputError(label, f"is truncated: {size} bytes, but its header says {expected}.", _FIX_REDOWNLOAD)


def _find_image_variable(names: list[str], label: str) -> tuple[str, str]:
    matches = [(n, m.group(1)) for n in names if (m := _IMAGE_VAR.match(n))]
    if not matches:
        raise BadInputError(label, f"has no image variable thg_asf_<site> (variables: {', '.join(names) or 'none'}).",
                            "This is not a THEMIS ASI full-resolution (asf) file, or it is damaged; "
                            + _FIX_REDOWNLOAD)
    if len(matches) > 1:
        raise BadInputError(label, f"has several image variables ({', '.join(n for n, _ in matches)}).",
                            "Split the file per site.")
    image_var, site = matches[0]
    _check_site(site, label)
    return image_var, site


def _varget(cdf, var: str, label: str, records: tuple[int, int] | None = None) -> np.ndarray | None:
    """``cdf.varget(var)`` (records ``(first, last)`` only, when given), errors named for the file."""
    try:
        if records is not None:
            return cdf.varget(var, startrec=records[0], endrec=records[1])
        return cdf.varget(var)
    except Exception as err:  # corrupt compressed blocks surface as zlib/ValueError/IndexError
        raise BadInputError(label, f"variable {var} cannot be read ({type(err).__name__}: {err}).",
                            _FIX_REDOWNLOAD) from err


def _read_images(cdf, image_var: str, layout: str, label: str, records: tuple[int, int] | None = None) -> np.ndarray:
    data = _varget(cdf, image_var, label, records)
    data = None if data is None else np.asarray(data)
    if data is None or data.size == 0:
        raise BadInputError(label, f"{image_var} holds no frames.", _FIX_REDOWNLOAD)
    if layout == "legacy":
        images = data.reshape((-1,) + data.shape[-2:])  # (n, y, x); n == 1 may come back without its axis
    else:
        if data.ndim == 4 and data.shape[0] != 1:
            raise BadInputError(label, f"{image_var} has {data.shape[0]} records of (y, x, n); "
                                "the v2024 layout has one.",
                                "This file mixes the two layouts and cannot be read.")
        images = np.ascontiguousarray(np.moveaxis(data.reshape(data.shape[-3:]), -1, 0))  # (y, x, n) -> (n, y, x)
    if images.shape[1] != images.shape[2]:
        raise BadInputError(label, f"frames are {images.shape[1]} x {images.shape[2]} pixels, not square.",
                            "This is not a THEMIS ASI full-resolution file.")
    if images.dtype != np.uint16:
        if images.dtype.kind not in "iu" or images.min() < 0 or images.max() > 65535:
            raise BadInputError(label, f"pixel values are {images.dtype}, not CDF_UINT2 counts.",
                                "This is not a THEMIS ASI full-resolution file.")
        images = images.astype(np.uint16)
    return images


def _read_times(cdf, site: str, names: list[str], layout: str, label: str) -> np.ndarray:
    var = f"thg_asf_{site}_epoch" if layout == "legacy" else f"thg_asf_{site}_time"
    if var not in names:
        raise BadInputError(label, f"has no time variable {var} (needed for the {layout} layout).", _FIX_REDOWNLOAD)
    claimed = int(cdf.varinq(var).Last_Rec) + 1
    if claimed > MAX_FRAMES:
        raise BadInputError(label, f"{var} claims {claimed} frame times; a THEMIS imager makes at most "
                            f"{MAX_FRAMES} frames per file.", _FIX_REDOWNLOAD)
    values = _varget(cdf, var, label)
    values = np.atleast_1d(np.asarray(values if values is not None else [], dtype=np.float64))
    if not np.all(np.isfinite(values)):
        raise BadInputError(label, f"{var} holds non-finite times.", _FIX_REDOWNLOAD)
    if layout == "legacy":
        kind = cdf.varinq(var).Data_Type
        if kind != CDF_EPOCH:
            raise BadInputError(label, f"{var} has CDF data type {kind}, expected CDF_EPOCH.", _FIX_REDOWNLOAD)
        unix_ms = np.rint(values) - CDF_EPOCH_UNIX_MS  # CDF_EPOCH holds whole ms exactly
    else:
        unix_ms = np.rint(values * 1000.0)
    low, high = EARLIEST.astype(np.int64), LATEST.astype(np.int64)
    outside = (unix_ms < low) | (unix_ms >= high)
    if np.any(outside):
        raise BadInputError(label, f"{var} has value {values[outside][0]!r} (frame {int(np.argmax(outside))}), "
                            f"outside {EARLIEST} .. {LATEST}: a fill value or garbage.", _FIX_REDOWNLOAD)
    return unix_ms.astype(np.int64).astype("datetime64[ms]")


def _check_times(times: np.ndarray, label: str) -> None:
    steps = np.diff(times.astype(np.int64))
    if np.any(steps <= 0):
        i = int(np.argmax(steps <= 0))
        raise BadInputError(label, f"frame times are not strictly increasing: frame {i + 1} at {times[i + 1]} "
                            f"follows frame {i} at {times[i]}.", _FIX_REDOWNLOAD)
