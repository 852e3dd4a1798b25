"""Ingest: archive CDF files -> preprocessed frames in the Zarr store.

A short chain of small steps (pangeo-forge style):

1. ``plan`` compares the archive listing with the store's inventory and keeps the
   files that are new, changed (another size) or were never completed.
2. ``ingest_file`` (one per file, run in parallel on Dask workers) fetches the file,
   reads it with cdflib, preprocesses it and writes its own site-hour group. It never
   raises for bad input: it returns a ``FileOutcome`` saying what went wrong.
3. ``ingest`` maps step 2 over the plan on a Dask client and, as the single writer,
   records failures and a history line in the store.

Example:
    >>> files = list_archive("archive/", sites=["gako"])
    >>> report = ingest(files, "store.zarr", PreprocessConfig())
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aurora_pipeline import __version__
from aurora_pipeline.source.archive import ArchiveFile, fetch, is_local, sha256_of
from aurora_pipeline.source.cdf import read_asi_cdf
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.store.failures import Failure, update_failures
from aurora_pipeline.ingest.preprocess import PreprocessConfig, preprocess_frames
from aurora_pipeline.store.zarr_layout import _now, ensure_root, hour_key, inventory, write_hour_frames, zarr_store


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one archive file."""

    file: ArchiveFile
    status: str             # "ingested" or "failed"
    frames: int = 0
    problem: str = ""
    fix: str = ""
    seconds: float = 0.0
    first_time: str = ""
    last_time: str = ""


@dataclass
class IngestReport:
    outcomes: list[FileOutcome] = field(default_factory=list)
    skipped: list[ArchiveFile] = field(default_factory=list)   # already in the store, unchanged

    @property
    def ingested(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == "ingested"]

    @property
    def failed(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def frames(self) -> int:
        return sum(o.frames for o in self.ingested)

    def summary(self) -> dict:
        return {
            "files_ingested": len(self.ingested),
            "files_failed": len(self.failed),
            "files_skipped": len(self.skipped),
            "frames": self.frames,
            "hours": sorted(f"{o.file.site} {o.file.hour}" for o in self.ingested),
            "failures": [f"{o.file.name}: {o.problem}" for o in self.failed],
        }


def plan(files: list[ArchiveFile], store, *, storage_options: dict | None = None) -> tuple[list[ArchiveFile], list[ArchiveFile]]:
    """Split ``files`` into (to ingest, already stored unchanged).

    A file counts as stored when its site-hour group is complete and records the same
    file name and size. A changed size (a re-issued file) or a new version is ingested again.
    """
    zs = zarr_store(store, storage_options)
    todo, done = [], []
    by_site: dict[str, list[ArchiveFile]] = {}
    for f in files:
        by_site.setdefault(f.site, []).append(f)
    for site, site_files in by_site.items():
        stored = inventory(zs, site, [f.hour for f in site_files])
        for f in site_files:
            entry = stored.get(hour_key(f.hour))
            same = entry is not None and entry["file"] == f.name and (f.size is None or entry["size"] == f.size)
            (done if same else todo).append(f)
    return todo, done


def ingest_file(
    file: ArchiveFile,
    store,
    cfg: PreprocessConfig,
    *,
    storage_options: dict | None = None,
    archive_storage_options: dict | None = None,
    cache_dir: str | None = None,
) -> FileOutcome:
    """Fetch, read, preprocess and write one site-hour file; bad input becomes a failed outcome."""
    started = time.perf_counter()
    local = None
    try:
        local = fetch(file, cache_dir or tempfile.gettempdir(), archive_storage_options)
        frames = read_asi_cdf(str(local), name=file.url, expected_site=file.site)
        _check_hour(frames.times, file)
        images = preprocess_frames(frames.images, cfg)
        attrs = {
            "aurora_source_file": file.name,
            "aurora_source_url": file.url,
            "aurora_source_sha256": sha256_of(local),
            "aurora_source_size": int(local.stat().st_size),
            "aurora_source_layout": frames.layout,
            "aurora_frames": int(len(images)),
            "aurora_pipeline_version": __version__,
            "history": f"{_now()} ingested from {file.name} by aurora-pipeline {__version__}",
            **cfg.as_attrs(),
        }
        write_hour_frames(zarr_store(store, storage_options), file.site, file.hour, frames.times, images, attrs)
        return FileOutcome(
            file, "ingested", len(images), seconds=time.perf_counter() - started,
            first_time=str(frames.times[0]), last_time=str(frames.times[-1]),
        )
    except BadInputError as err:
        return FileOutcome(file, "failed", problem=err.problem, fix=err.fix, seconds=time.perf_counter() - started)
    except Exception as err:  # noqa: BLE001 - one broken file must never stop the night; the cause is recorded
        return FileOutcome(
            file, "failed", problem=f"{type(err).__name__}: {err}",
            fix="rerun later if the error is transient; otherwise report it with the file",
            seconds=time.perf_counter() - started,
        )
    finally:
        if local is not None and not is_local(file.url):
            Path(local).unlink(missing_ok=True)


def _check_hour(times: np.ndarray, file: ArchiveFile) -> None:
    start = file.hour_start.astype("datetime64[ms]")
    end = start + np.timedelta64(3600_000, "ms")
    outside = int(np.count_nonzero((times < start) | (times >= end)))
    if outside:
        raise BadInputError(
            file.url,
            f"{outside} of {len(times)} frame times fall outside the hour {file.hour} named by the file "
            f"(first {times[0]}, last {times[-1]})",
            "check the file; the name and the content disagree on the hour",
        )


def ingest(
    files: list[ArchiveFile],
    store,
    cfg: PreprocessConfig = PreprocessConfig(),
    *,
    client=None,
    storage_options: dict | None = None,
    archive_storage_options: dict | None = None,
    skip_stored: bool = True,
    on_outcome=None,
) -> IngestReport:
    """Ingest ``files`` into ``store``, in parallel on ``client`` (a ``distributed.Client``) or serially.

    Files already stored unchanged are skipped (idempotent). Failures are recorded in
    the store's failures table; files ingested now leave it. ``on_outcome(outcome)`` is
    called as each file finishes (for progress logs).
    """
    zs = zarr_store(store, storage_options)
    todo, done = plan(files, store, storage_options=storage_options) if skip_stored else (list(files), [])
    report = IngestReport(skipped=done)
    if not todo:
        return report  # nothing new: the store is left exactly as it was
    ensure_root(zs, f"ingest of {len(todo)} archive file(s)")
    kwargs = dict(storage_options=storage_options, archive_storage_options=archive_storage_options)
    if client is None:
        results = (ingest_file(f, store, cfg, **kwargs) for f in todo)
    else:
        from distributed import as_completed

        futures = client.map(ingest_file, todo, store=str(store), cfg=cfg, pure=False, **kwargs)
        results = (fut.result() for fut in as_completed(futures))
    for outcome in results:
        report.outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    failures = [Failure(o.file.url, o.file.site, o.file.hour, o.problem, o.fix, _now()) for o in report.failed]
    if report.outcomes:
        update_failures(zs, failures, {o.file.url for o in report.ingested})
    report.outcomes.sort(key=lambda o: (o.file.site, o.file.hour))
    return report
