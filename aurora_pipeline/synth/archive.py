"""Write a synthetic THEMIS ASI archive: real CDF files in the official tree, plus labels.

    root/thg/l1/asi/<site>/<YYYY>/<MM>/thg_l1_asf_<site>_<YYYYMMDDHH>_v01.cdf
    root/labels.csv          site,time,class  (one row per frame)

The files copy the variables and attributes of the real Level-1 files (checked against
``thg_l1_asf_gako_2011010617_v01.cdf``): ``thg_asf_<site>`` (CDF_UINT2, gzip-compressed),
``thg_asf_<site>_epoch`` (CDF_EPOCH), ``thg_asf_<site>_time`` and ``_tend`` (float64
unix seconds), ``_epoch0``, ``_column``, ``_row`` and ``range_epoch``. In the legacy
layout ``_time`` holds whole seconds, as in the real file, and only ``_epoch`` keeps
the milliseconds; in the v2024 layout the image variable is one (y, x, N) record and
``_time`` has the milliseconds.

Frame times sit on the 3600 / frames_per_hour second grid plus 10 to 60 ms (the first
frame of each hour exactly +53 ms, like the real file), so millisecond handling is
tested. Which scene is on the sky when is drawn per (seed, site, UTC day), and frame
jitter per (seed, site, hour): a site-hour's file is the same whatever other hours are
written with it, and scenes run on across hour boundaries.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import os
import threading
from pathlib import Path

import numpy as np
from cdflib import cdfwrite
from cdflib.cdfwrite import CDF

from aurora_pipeline.atomic import atomic_path
from aurora_pipeline.source.archive import relative_path
from aurora_pipeline.source.cdf import CDF_EPOCH_UNIX_MS, LAYOUTS
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.source.sites import SITES
from aurora_pipeline.synth.scenes import SceneRun, SkyScene, scene_schedule

LABEL_FIELDS = ("site", "time", "class")
EXPOSURE_S = 0.93  # thg_asf_<site>_tend - start, as in the real file
FIRST_FRAME_MS = 53
_GZIP_LOCK = threading.Lock()


def write_synthetic_archive(root: str | os.PathLike, sites=("gako", "gill"),
                            start: str | np.datetime64 = "2011-01-06T04", hours: int = 3,
                            frames_per_hour: int = 120, layout: str = "legacy", seed: int = 0,
                            *, size: int = 256, gzip_level: int = 1) -> list[Path]:
    """Write ``hours`` consecutive site-hour files per site, and merge their labels into ``root/labels.csv``.

    Args:
        root: archive root directory (created if missing).
        sites: four-letter site codes (or one code as a string).
        start: first hour, UTC, on a whole hour (``"2011-01-06T04"`` or a datetime64).
        hours: number of consecutive hours per site.
        frames_per_hour: frames per file (the real cadence, 3 s, is 1200).
        layout: ``"legacy"`` (one record per frame) or ``"v2024"`` (one (y, x, N) record).
        seed: picks the whole synthetic archive.
        size: frame side in pixels.
        gzip_level: gzip level of the image variable (1 is several times faster than
            the real files' 6 and barely larger on noisy images).

    Returns:
        Paths of the files written, in (site, hour) order. Existing files of the same
        site-hours are replaced (each file is written under a temporary name and then
        renamed, so readers never see half a file); other files are left alone.

    Raises:
        BadInputError: unknown site or layout, start not on a whole hour, hours < 1,
            frames_per_hour outside 1..36000, negative seed.
    """
    sites = (sites,) if isinstance(sites, str) else tuple(sites)
    first_hour = _check_arguments(sites, start, hours, frames_per_hour, layout, seed)
    root = Path(root)
    written = []
    for site in sites:
        for h in range(int(hours)):
            hour = first_hour + np.timedelta64(h, "h")
            times, images, classes = render_site_hour(site, hour, frames_per_hour, seed, size=size)
            path = write_asi_cdf(root / relative_path(site, hour), site, times, images, layout=layout,
                                 gzip_level=gzip_level)
            # merged after each file, so an interrupted run keeps the labels of the files it finished
            stamps = np.datetime_as_string(times, unit="ms")
            merge_labels(root / "labels.csv", zip([site] * len(times), stamps, classes))
            written.append(path)
    return written


def render_site_hour(site: str, hour: np.datetime64, frames_per_hour: int, seed: int, *,
                     size: int = 256) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Frame times (datetime64[ms] (n,)), frames (uint16 (n, size, size)) and classes of one site-hour."""
    hour = np.datetime64(hour, "h")
    site_key = int.from_bytes(site.encode("ascii"), "big")
    hour_index = int(hour.astype(np.int64)) + (1 << 40)  # keep it non-negative for SeedSequence
    rng = np.random.default_rng(np.random.SeedSequence([seed, site_key, hour_index, 1]))
    n = int(frames_per_hour)
    slot_ms = np.arange(n, dtype=np.int64) * 3_600_000 // n
    jitter = rng.integers(10, min(61, 3_600_000 // n // 2) + 1, n)
    jitter[0] = FIRST_FRAME_MS
    times = (hour.astype("datetime64[ms]") + (slot_ms + jitter).astype("timedelta64[ms]"))

    day = hour.astype("datetime64[D]")
    first_slot = int((hour - day.astype("datetime64[h]")).astype(np.int64)) * n
    cadence_s = 3600.0 / n
    images = np.empty((n, size, size), dtype=np.uint16)
    classes: list[str] = []
    scenes: dict[int, SkyScene] = {}
    runs = _day_schedule(seed, site_key, day, n)
    for i, time in enumerate(times):
        run = _run_at(runs, first_slot + i)
        if run.seed not in scenes:
            scenes[run.seed] = SkyScene(run.kind, run.seed, size, instrument_seed=site_key)
        run_start = day.astype("datetime64[ms]") + np.timedelta64(int(round(run.start * cadence_s * 1000)), "ms")
        images[i] = scenes[run.seed].render((time - run_start).astype(np.int64) / 1000.0)
        classes.append(run.kind)
    return times, images, classes


def _day_schedule(seed: int, site_key: int, day: np.datetime64, frames_per_hour: int) -> list[SceneRun]:
    day_index = int(day.astype(np.int64)) + (1 << 30)
    rng = np.random.default_rng(np.random.SeedSequence([seed, site_key, day_index, 2]))
    return scene_schedule(24, frames_per_hour, rng)


def _run_at(runs: list[SceneRun], slot: int) -> SceneRun:
    starts = [r.start for r in runs]
    return runs[int(np.searchsorted(starts, slot, side="right")) - 1]


def _check_arguments(sites, start, hours, frames_per_hour, layout, seed) -> np.datetime64:
    for site in sites:
        if site not in SITES:
            raise BadInputError(f"sites={list(sites)!r}", f"unknown THEMIS ASI site code {site!r}.",
                                f"Use known codes, e.g. {', '.join(sorted(SITES)[:6])}...")
    if int(seed) < 0:
        raise BadInputError(f"seed={seed!r}", "must be a non-negative integer.", "Pass a seed >= 0.")
    if layout not in LAYOUTS:
        raise BadInputError(f"layout={layout!r}", "unknown file layout.", f"Use one of {LAYOUTS}.")
    try:
        first = np.datetime64(start)
    except ValueError as err:
        raise BadInputError(f"start={start!r}", f"is not a date and hour ({err}).",
                            "Write it like 2011-01-06T04.") from None
    if first != first.astype("datetime64[h]"):
        raise BadInputError(f"start={start!r}", "is not on a whole hour.", "Write it like 2011-01-06T04.")
    if int(hours) < 1:
        raise BadInputError(f"hours={hours!r}", "must be at least 1.", "Pass hours >= 1.")
    if not 1 <= int(frames_per_hour) <= 36000:
        raise BadInputError(f"frames_per_hour={frames_per_hour!r}", "must be between 1 and 36000 (0.1 s cadence).",
                            "The real cadence is 1200 frames per hour (3 s).")
    return first.astype("datetime64[h]")


def write_asi_cdf(path: str | os.PathLike, site: str, times: np.ndarray, images: np.ndarray, *,
                  layout: str = "legacy", gzip_level: int = 1) -> Path:
    """Write frames as a THEMIS ASI Level-1 CDF file, atomically (temporary name, then rename).

    Args:
        path: final file path; parent directories are created.
        site: four-letter site code (used in the variable names, not checked).
        times: datetime64 (n,), exposure starts.
        images: uint16 (n, y, x).
        layout: ``"legacy"`` or ``"v2024"``.
        gzip_level: gzip level for the image variable (0 for none).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".cdf") as tmp:  # ending in .cdf because the writer insists on it
        tmp.unlink()  # the writer refuses an existing file
        with _gzip_without_timestamps(), CDF(tmp) as cdf:
            times = np.asarray(times).astype("datetime64[ms]")
            _write_contents(cdf, site, times, np.asarray(images, dtype=np.uint16), layout, gzip_level, path.stem)
    return path


@contextlib.contextmanager
def _gzip_without_timestamps():
    """Make cdflib's writer put mtime 0 in its gzip headers instead of the current time.

    Without this the same frames give different bytes from one second to the next,
    and so different file checksums. The lock keeps threads from undoing each other's swap.
    """
    with _GZIP_LOCK:
        original = cdfwrite.gzip_deflate
        cdfwrite.gzip_deflate = lambda data, level: gzip.compress(data, level, mtime=0)
        try:
            yield
        finally:
            cdfwrite.gzip_deflate = original


def _write_contents(cdf: CDF, site: str, times: np.ndarray, images: np.ndarray, layout: str,
                    gzip_level: int, file_id: str) -> None:
    n, ny, nx = images.shape
    unix_ms = times.astype(np.int64)
    epoch = (unix_ms + CDF_EPOCH_UNIX_MS).astype(np.float64)
    if layout == "legacy":
        unix_s = (unix_ms // 1000).astype(np.float64)  # whole seconds, like the real legacy files
    else:
        unix_s = unix_ms / 1000.0
    v = f"thg_asf_{site}"
    cdf.write_globalattrs(_global_attributes(site, file_id))
    if layout == "legacy":
        spec = dict(Dim_Sizes=[ny, nx], Block_Factor=7)
        data = images
    else:
        spec = dict(Dim_Sizes=[ny, nx, n])
        data = np.ascontiguousarray(np.moveaxis(images, 0, -1))[None]
    cdf.write_var(
        dict(Variable=v, Data_Type=CDF.CDF_UINT2, Num_Elements=1, Rec_Vary=True, Compress=gzip_level, **spec),
        {"CATDESC": f"Images of {ny}x{nx} pixels", "DEPEND_0": f"{v}_epoch", "DEPEND_1": f"{v}_column",
         "DEPEND_2": f"{v}_row", "DISPLAY_TYPE": "image", "FIELDNAM": v, "FILLVAL": [65535, "CDF_UINT2"],
         "FORMAT": "I5", "LABLAXIS": "Width", "UNITS": "counts", "VALIDMIN": [0, "CDF_UINT2"],
         "VALIDMAX": [65535, "CDF_UINT2"], "VAR_TYPE": "data", "DEPEND_TIME": f"{v}_time",
         "DEPEND_EPOCH0": f"{v}_epoch0"},
        data,
    )
    for axis, count, what in (("column", nx, "column (x-dim, Width)"), ("row", ny, "row (y-dim, Height)")):
        cdf.write_var(dict(Variable=f"{v}_{axis}", Data_Type=CDF.CDF_UINT2, Num_Elements=1, Rec_Vary=False,
                           Dim_Sizes=[count]),
                      {"CATDESC": f"Number of {what} in image", "FIELDNAM": f"{v}_{axis}",
                       "VAR_TYPE": "support_data"},
                      np.arange(count, dtype=np.uint16))
    seconds = {"FORMAT": "E12.2", "LABLAXIS": "UT", "UNITS": "sec", "VALIDMIN": [0.0, "CDF_REAL8"],
               "VALIDMAX": [5e9, "CDF_REAL8"], "VAR_TYPE": "support_data"}
    ends = unix_ms / 1000.0 + EXPOSURE_S
    for name, values, note in ((f"{v}_time", unix_s, "Unleaped seconds"),
                               (f"{v}_tend", ends, "Unleaped seconds, end time of integration")):
        cdf.write_var(dict(Variable=name, Data_Type=CDF.CDF_REAL8, Num_Elements=1, Rec_Vary=True, Dim_Sizes=[]),
                      {"CATDESC": f"{name}, UTC, in seconds since 01-Jan-1970 00:00:00", "FIELDNAM": name,
                       "VAR_NOTES": note, **seconds}, values)
    epochs = {"LABLAXIS": "UT", "VAR_TYPE": "support_data", "FILLVAL": [-1e31, "CDF_EPOCH"]}
    cdf.write_var(dict(Variable=f"{v}_epoch", Data_Type=CDF.CDF_EPOCH, Num_Elements=1, Rec_Vary=True, Dim_Sizes=[]),
                  {"CATDESC": "Epoch of start of image exposure", "FIELDNAM": f"{v}_epoch", **epochs}, epoch)
    cdf.write_var(dict(Variable=f"{v}_epoch0", Data_Type=CDF.CDF_EPOCH, Num_Elements=1, Rec_Vary=False, Dim_Sizes=[]),
                  {"CATDESC": "EPOCH0 of THEMIS TIME BASE", "FIELDNAM": f"{v}_epoch0", "UNITS": "msec",
                   "VAR_NOTES": "EPOCH of 01-Jan-1970 00:00:00", **epochs}, np.array([float(CDF_EPOCH_UNIX_MS)]))
    cdf.write_var(dict(Variable="range_epoch", Data_Type=CDF.CDF_EPOCH, Num_Elements=1, Rec_Vary=True, Dim_Sizes=[]),
                  {"CATDESC": "Epochs of first and last image in file", "FIELDNAM": "range_epoch", "UNITS": "msec",
                   **epochs},
                  epoch[[0, -1]])


def _global_attributes(site: str, file_id: str) -> dict:
    text = {
        "Project": "THEMIS",
        "Source_name": "THG_L1>THEMIS Ground Based Observatory",
        "Discipline": "Space Physics>Magnetospheric Science",
        "Data_type": "ASF>All Sky Imager, Full resolution images, High resolution",
        "Descriptor": f"{site.upper()}>{SITES.get(site, site)}",
        "Data_version": "1",
        "TEXT": "SYNTHETIC all-sky images written by aurora_pipeline.synth for tests; not THEMIS observations.",
        "Instrument_type": "Ground-Based VLF/ELF/ULF, Photometrics",
        "Mission_group": "THEMIS",
        "Logical_source": f"thg_l1_asf_{site}",
        "Logical_file_id": file_id,
        "Logical_source_description": "Ground-based All Sky Imager, 3sec Level-1, THEMIS GBO network (synthetic)",
        "Time_resolution": "3s",
        "Generated_by": "aurora_pipeline.synth.archive",
        "File_naming_convention": "source_datatype_descriptor",
    }
    return {key: {0: value} for key, value in text.items()}


def merge_labels(path: str | os.PathLike, rows) -> Path:
    """Merge (site, time, class) rows into a labels CSV: union, sorted by (site, time), one row per frame.

    A frame already in the file takes the new class (the file was just rewritten).
    The CSV is replaced atomically.

    Raises:
        BadInputError: the existing file does not have the columns site,time,class.
    """
    path = Path(path)
    merged: dict[tuple[str, str], str] = {}
    if path.exists():
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != LABEL_FIELDS:
                raise BadInputError(str(path), f"has columns {reader.fieldnames}, expected {list(LABEL_FIELDS)}.",
                                    "Move the file away or write the archive to a new root.")
            for row in reader:
                merged[(row["site"], row["time"])] = row["class"]
    for site, time, kind in rows:
        merged[(site, str(time))] = kind
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(LABEL_FIELDS)
        writer.writerows((site, time, merged[(site, time)]) for site, time in sorted(merged))
    return path
