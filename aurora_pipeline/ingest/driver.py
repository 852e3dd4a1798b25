"""Ingest: archive CDF files -> preprocessed frames in the Zarr store.

A short chain of small steps (pangeo-forge style), each item carrying its position:

1. ``plan`` compares the archive listing with the store's per-hour facts and keeps the
   files that are new, changed (another name or size) or never completed.
2. ``ingest_file`` (one per file, in parallel on Dask workers) fetches the file, reads
   it with cdflib, preprocesses it and region-writes the hour's frames into its own
   chunks. Bad input (``BadInputError``) and a fetch that still fails after its
   retries come back as a failed ``FileOutcome``; anything else is a bug or a store
   that cannot be written, and is raised.
3. ``ingest`` is the driver and the single writer of the facts: it hides hours being
   rewritten, maps step 2, commits each written hour (times, provenance, then the frame
   count that makes it visible), records failures, and only then re-raises an
   unexpected error, so the hours that did succeed are kept.

Example:
    >>> files = list_archive("archive/", sites=["gako"])
    >>> report = ingest(files, "store.zarr", PreprocessConfig())
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aurora_pipeline import __version__
from aurora_pipeline.errors import BadInputError, NoStoreError
from aurora_pipeline.hours import hour_range, hour_stamp
from aurora_pipeline.ingest.preprocess import PreprocessConfig, field_of_view, grid_coordinates, preprocess_frames
from aurora_pipeline.ingest.read_ahead import read_ahead
from aurora_pipeline.ingest.setting import resolve_preprocess
from aurora_pipeline.source.archive import ArchiveFile, fetch, is_local, sha256_of
from aurora_pipeline.source.cdf import AsiFile, open_asi_cdf
from aurora_pipeline.source.skymap import read_skymap_file, skymaps_for_files
from aurora_pipeline.store.core import Store, StoreLike, open_existing_store, open_store, utc_now
from aurora_pipeline.store.failures import Failure, record_failures
from aurora_pipeline.store.layout import hour_position
from aurora_pipeline.store.read import hour_facts
from aurora_pipeline.store.writer import HourWrite, commit_hours, ensure_skymap, hide_hours, write_frames

log = logging.getLogger(__name__)
FETCH_ERRORS = (OSError, TimeoutError, ConnectionError)
COMMIT_EVERY = 32  # hours committed per facts write while a long ingest runs


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
    written: HourWrite | None = None   # what the driver commits for an ingested file
    chunks: tuple[str, ...] = ()       # chunk keys the frames write touched


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
            "hours": sorted(f"{o.file.site} {o.file.hour_code}" for o in self.ingested),
            "failures": [f"{o.file.name}: {o.problem}" for o in self.failed],
        }


def preprocess_setting(cfg: PreprocessConfig) -> dict:
    """The parameters that make a store's frames what they are (the store holds exactly one setting)."""
    return cfg.setting()


def plan(files: list[ArchiveFile], store: StoreLike, *, storage_options: dict | None = None) -> tuple[list[ArchiveFile], list[ArchiveFile]]:
    """Split ``files`` into (to ingest, already stored unchanged).

    A file counts as stored when its hour is visible and records the same file name and
    size. A re-issued file (another size) or a new version is ingested again. Planning
    against a store that does not exist yet creates nothing: every file is to ingest.
    """
    try:
        st = open_store(store, storage_options)
    except NoStoreError:
        return list(files), []
    todo, done = [], []
    for site in sorted({f.site for f in files}):
        facts = hour_facts(st, site)
        stored = {hour_stamp(h): (name, size) for h, name, size in
                  zip(facts["hour"].to_numpy(), facts["source_file"], facts["source_size"])}
        for f in (f for f in files if f.site == site):
            entry = stored.get(f.hour_code)
            same = entry is not None and entry[0] == f.name and (f.size is None or int(entry[1]) == f.size)
            (done if same else todo).append(f)
    return todo, done


def ingest_file(
    file: ArchiveFile,
    store: StoreLike,
    cfg: PreprocessConfig,
    *,
    storage_options: dict | None = None,
    archive_storage_options: dict | None = None,
    cache_dir: str | None = None,
    fov=None,
) -> FileOutcome:
    """Fetch, read, preprocess and region-write one site-hour file (a worker's step).

    ``fov``: the skymap field of view of the file's hour (``ingest.preprocess.field_of_view``),
    None for the inscribed circle. Returns a failed outcome for bad input and for a fetch
    that failed after its retries; raises anything else (a bug, a store that cannot be written).
    """
    started = time.perf_counter()
    local = None
    try:
        try:
            local = fetch(file, cache_dir or tempfile.gettempdir(), archive_storage_options)
        except FETCH_ERRORS as err:
            return FileOutcome(file, "failed", problem=f"could not be fetched after retries ({type(err).__name__}: {err})",
                               fix="check the archive's address and the network; the next run tries again",
                               seconds=time.perf_counter() - started)
        with ThreadPoolExecutor(1, thread_name_prefix="sha256") as hasher:
            # hashlib releases the GIL: the checksum is taken while cdflib decodes, not after
            digest = hasher.submit(sha256_of, local)
            asi = open_asi_cdf(local, name=file.url, expected_site=file.site)
            _check_hour(asi.times, file)
            images = _preprocess_while_decoding(asi, cfg, fov)
            times, layout = asi.times, asi.layout
            sha256 = digest.result()
        st = open_store(store, storage_options, mode="a")  # a worker's own open of the URL; serially the driver's Store
        chunks = write_frames(st, file.site, file.hour, images)
        written = HourWrite(hour=file.hour, times=times.astype("datetime64[ms]"), source_file=file.name,
                            source_url=file.url, source_sha256=sha256, source_size=int(local.stat().st_size),
                            source_layout=layout, skymap=fov.skymap if fov is not None else "")
        return FileOutcome(file, "ingested", len(images), seconds=time.perf_counter() - started,
                           first_time=str(times[0]), last_time=str(times[-1]), written=written,
                           chunks=tuple(chunks))
    except BadInputError as err:
        return FileOutcome(file, "failed", problem=err.problem, fix=err.fix, seconds=time.perf_counter() - started)
    finally:
        if local is not None and not is_local(file.url):
            Path(local).unlink(missing_ok=True)


def _preprocess_while_decoding(asi: AsiFile, cfg: PreprocessConfig, fov) -> np.ndarray:
    """The file's frames preprocessed to uint8 (n, s, s), a block at a time, the next block
    inflated in another thread meanwhile (``read_ahead``): the raw counts of the whole hour
    (150 MiB) are never held at once. The same bytes as ``preprocess_frames`` of all frames."""
    out = np.empty((asi.n_frames, cfg.image_size, cfg.image_size), np.uint8)
    done = 0
    for block in read_ahead(asi.blocks()):
        out[done : done + len(block)] = preprocess_frames(block, cfg, fov)
        done += len(block)
    return out


def _check_hour(times: np.ndarray, file: ArchiveFile) -> None:
    start, end = hour_range(file.hour)
    outside = int(np.count_nonzero((times < start) | (times >= end)))
    if outside:
        raise BadInputError(
            file.url,
            f"{outside} of {len(times)} frame times fall outside the hour {file.hour_code} named by the file "
            f"(first {times[0]}, last {times[-1]})",
            "check the file; the name and the content disagree on the hour",
        )


def ingest(
    files: list[ArchiveFile],
    store: StoreLike,
    cfg: PreprocessConfig | None = None,
    *,
    client=None,
    cluster=None,
    storage_options: dict | None = None,
    archive_storage_options: dict | None = None,
    skip_stored: bool = True,
    on_outcome=None,
    skymaps: str | None = None,
    skymap_storage_options: dict | None = None,
) -> IngestReport:
    """Ingest ``files`` into ``store``, in parallel on ``client`` (a ``distributed.Client``) or serially.

    ``cluster`` (instead of ``client``): a function that returns a context manager yielding a
    client, e.g. ``functools.partial(dask_client, address, threads=True)``. It is entered only
    when there are files to ingest: a run with nothing new starts no cluster.

    ``cfg`` None means the store's own preprocessing setting (``resolve_preprocess``: the
    paper's for a new store); another setting than the store's is refused (StoreError).
    Files already stored unchanged are skipped. Failures are appended to the store's
    failures table; files ingested now are marked resolved there. ``on_outcome(outcome)``
    is called as each file finishes. An unexpected error of a file is raised once the
    others are recorded.

    ``skymaps`` (a UCalgary skymap tree: folder, https:// mirror or s3://) cuts the field of
    view by elevation (``cfg.fov == "elevation"``) with the skymap valid at each hour, and
    stores the skymap's el/az/lat/lon on the frames' grid. The store records the tree, and
    a later ingest without ``skymaps`` uses the recorded one. An hour with no valid skymap,
    or whose skymap cannot be fetched or read, is that file's failure (the row names the
    skymap file); the other files, of other sites, go on.

    Everything that can refuse the run (the setting, the skymaps) is settled before the
    store is created or changed: a refused first run leaves no store behind. A first run
    whose every file lacks a usable skymap raises BadInputError naming the first skymap
    problem, and creates nothing.
    """
    existing = open_existing_store(store, storage_options)  # the one open of an existing store, for writing
    cfg = cfg or resolve_preprocess(existing, skymaps=skymaps)
    skymaps = skymaps or (existing.skymaps if existing is not None and cfg.fov == "elevation" else None)
    _check_fov(cfg, skymaps)
    if existing is not None:
        existing.set_preprocess(preprocess_setting(cfg), cfg.as_attrs())  # refuses another setting than the store's
    todo, done = plan(files, existing) if skip_stored and existing is not None else (list(files), [])
    report = IngestReport(skipped=done)
    if not todo:
        return report  # nothing new: the store is left exactly as it was (or not made)
    skies: dict[str, tuple] = {}
    if cfg.fov == "elevation":
        todo, skies, no_skymap = _read_skymaps(todo, cfg, skymaps, skymap_storage_options)
        report.outcomes += no_skymap
        if not todo and existing is None:  # a refused first run makes no store
            first = no_skymap[0]
            raise BadInputError(first.file.url, first.problem, f"{first.fix} (No store was made at {store}.)")
    st = existing or open_store(store, storage_options, mode="a")  # a new store is made here, refusals settled
    st.set_preprocess(preprocess_setting(cfg), cfg.as_attrs())
    if skymaps:
        st.set_skymaps(_skymaps_root(skymaps))
    fovs = _store_skymaps(st, todo, skies, cfg)
    for site in sorted({f.site for f in todo}):
        hide_hours(st, site, [f.hour for f in todo if f.site == site])
    kwargs = dict(storage_options=storage_options, archive_storage_options=archive_storage_options)
    errors: list[tuple[ArchiveFile, BaseException]] = []
    pending: list[FileOutcome] = []
    for file, outcome, error in _run(todo, st, cfg, client, cluster, kwargs, fovs):
        if error is not None:
            log.error("ingest of %s raised %s", file.url, error, exc_info=error)
            errors.append((file, error))
            continue
        report.outcomes.append(outcome)
        if outcome.written is not None:
            pending.append(outcome)
        if len(pending) >= COMMIT_EVERY:
            _commit(st, pending)
            pending = []
        if on_outcome is not None:
            on_outcome(outcome)
    _commit(st, pending)
    now = utc_now()
    failures = [Failure(o.file.url, o.file.site, o.file.hour_code, o.problem, o.fix, now) for o in report.failed]
    record_failures(st, failures, {o.file.url for o in report.ingested}, now)
    st.add_history(f"ingested {len(report.ingested)} archive file(s), {len(report.failed)} failed, "
                   f"{len(errors)} error(s) (aurora-pipeline {__version__})")
    report.outcomes.sort(key=lambda o: (o.file.site, o.file.hour_code))
    if errors:
        file, error = errors[0]
        raise RuntimeError(f"ingest of {file.url} failed with an unexpected error ({type(error).__name__}: {error}); "
                           f"{len(errors)} file(s) raised, {len(report.ingested)} ingested and kept. This is a bug "
                           "or a store that cannot be written, not bad input: see the traceback above.") from error
    return report


def _commit(st: Store, outcomes: list[FileOutcome]) -> None:
    for site in sorted({o.file.site for o in outcomes}):
        commit_hours(st, site, [o.written for o in outcomes if o.file.site == site])


def _check_fov(cfg: PreprocessConfig, skymaps: str | None) -> None:
    if cfg.fov == "elevation" and not skymaps:
        raise BadInputError("--skymaps", "this store's frames are cut by the skymap's elevation (fov=elevation) and no "
                            "skymaps were given", "pass --skymaps DIR|URL (the UCalgary skymap tree)")
    if cfg.fov != "elevation" and skymaps:
        raise BadInputError("--skymaps", f"this store was made without skymaps (fov={cfg.fov})",
                            "ingest into a new store to use skymaps, or leave --skymaps out")


def _skymaps_root(skymaps: str) -> str:
    """The skymap tree as recorded in the store: a local folder as an absolute path."""
    return os.path.abspath(skymaps.removeprefix("file://")) if is_local(skymaps) else skymaps


def _read_skymaps(todo, cfg, skymaps, storage_options):
    """(files with a usable skymap, {file url: (skymap, fov, coords)}, failed outcomes of the others).

    Each skymap needed is fetched and read once. A skymap that is missing, cannot be
    fetched or cannot be read fails the files that need it, naming it; nothing is written.
    """
    chosen, missing = skymaps_for_files(todo, skymaps, storage_options)
    failed = [FileOutcome(f, "failed", problem=missing[f.url].problem, fix=missing[f.url].fix)
              for f in todo if f.url in missing]
    loaded: dict[str, tuple | FileOutcome] = {}
    skies: dict[str, tuple] = {}
    with tempfile.TemporaryDirectory(prefix="aurora-skymaps-") as cache:
        for f in (f for f in todo if f.url in chosen):
            sky_file = chosen[f.url]
            if sky_file.url not in loaded:
                try:
                    sky = read_skymap_file(sky_file, cache, storage_options)
                    fov = field_of_view(sky, cfg)
                    loaded[sky_file.url] = (sky, fov, grid_coordinates(sky, fov, cfg))
                except BadInputError as err:
                    loaded[sky_file.url] = FileOutcome(f, "failed", problem=f"its skymap {sky_file.url}: {err.problem}",
                                                       fix=err.fix)
                except FETCH_ERRORS as err:
                    loaded[sky_file.url] = FileOutcome(
                        f, "failed", problem=f"its skymap {sky_file.url} could not be fetched after retries "
                        f"({type(err).__name__}: {err})",
                        fix="check the skymaps' address and the network; the next run tries again")
            got = loaded[sky_file.url]
            if isinstance(got, FileOutcome):
                failed.append(dataclasses.replace(got, file=f))
            else:
                skies[f.url] = got
    return [f for f in todo if f.url in skies], skies, failed


def _store_skymaps(st: Store, todo, skies: dict[str, tuple], cfg) -> dict[str, object]:
    """Store each skymap's coordinates in the site-years that use it; {file url: FieldOfView}."""
    fovs = {}
    for f in todo:
        if f.url in skies:
            sky, fov, coords = skies[f.url]
            ensure_skymap(st, f.site, hour_position(f.hour)[0], sky, fov, coords, cfg.map_altitude_km)
            fovs[f.url] = fov
    return fovs


def _ingest_with_fov(file: ArchiveFile, fov, **kwargs) -> FileOutcome:
    return ingest_file(file, fov=fov, **kwargs)


def _run(todo, st: Store, cfg, client, cluster, kwargs, fovs):
    """Yield (file, outcome, unexpected error) as files finish, serially (on the driver's ``st``) or on
    Dask (a worker is a process of its own: it opens the store from its location, once per file);
    ``cluster``: the client's context, entered here (see ``ingest``)."""
    if client is None and cluster is not None:
        with cluster() as client:
            yield from _run(todo, st, cfg, client, None, kwargs, fovs)
        return
    if client is None:
        for f in todo:
            try:
                yield f, ingest_file(f, st, cfg, fov=fovs.get(f.url), **kwargs), None
            except Exception as err:  # noqa: BLE001 - re-raised by the driver once the others are recorded
                yield f, None, err
        return
    # distributed: only with a Dask client (a serial ingest does without)
    from distributed import as_completed

    # the largest files first, so that the last ones to finish, each alone on a worker, are the smallest
    todo = sorted(todo, key=lambda f: -(f.size or 0))
    futures = client.map(_ingest_with_fov, todo, [fovs.get(f.url) for f in todo], store=st.local_path or st.url, cfg=cfg,
                         pure=False, **kwargs)
    by_future = dict(zip(futures, todo))
    for fut in as_completed(futures):
        try:
            yield by_future[fut], fut.result(), None
        except Exception as err:  # noqa: BLE001 - a KilledWorker or a bug: named by file, re-raised at the end
            yield by_future[fut], None, err
