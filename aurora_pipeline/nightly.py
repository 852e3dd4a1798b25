"""The nightly labelling run, as a plain library function: :func:`run_night`.

One night, in order (each stage a library call; ``flows/label_archive.py`` runs the same
stages as Prefect tasks through :class:`NightSteps`):

1. the window: ``[hour of now - lookback_days, hour of now + 1 h)``, or the whole archive
   in reconcile mode, computed **once** and handed to every stage, so an hour at its edge
   that is ingested is also embedded, labelled and assigned in the same night;
2. ``find_new_files`` lists the archive over the window and compares it with the store's
   per-hour facts (file name and size), so late-arriving older hours are found as well as
   new ones; ``unfinished_hours`` counts the stored hours of the window that the encoder,
   classifier or centroids have not done yet (hours ingested by hand, older models);
3. nothing new and nothing unfinished: the run is recorded and ends there;
4. else: ingest (with the store's own preprocessing setting and skymaps, see
   ``ingest.setting.resolve_preprocess``), embed, classify, assign clusters, record the
   events of the hours labelled, update the similarity index;
5. the summary (counts, failures, label counts, timings) is appended to the store's
   ``runs`` table; a night whose every new file failed then raises ``BadInputError``.

    >>> config = NightlyConfig(checkpoint="run/encoder", classifier="run/classifier")
    >>> summary = run_night("archive/", "store.zarr", config)
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from aurora_pipeline.classify.driver import classify_store
from aurora_pipeline.classify.model import load_classifier
from aurora_pipeline.cluster.driver import assign_store
from aurora_pipeline.cluster.model import load_centroids
from aurora_pipeline.embed.driver import embed_with_checkpoint
from aurora_pipeline.errors import BadInputError, StoreError
from aurora_pipeline.events import record_events
from aurora_pipeline.ingest.driver import IngestReport, ingest, plan
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.ingest.setting import resolve_preprocess
from aurora_pipeline.source.archive import ArchiveFile, check_site_codes, list_archive, sites_without_files
from aurora_pipeline.store.core import StoreLike, open_existing_store, open_store, store_location, utc_now
from aurora_pipeline.store.runs import append_run as _append_run, read_runs
from aurora_pipeline.store.stages import stored_hours

__all__ = ["NightSteps", "NightlyConfig", "assign_night", "checkpoint_model_id", "classify_night", "current_hour",
           "embed_night", "find_new_files", "hour_blocks", "hour_names", "ingest_night", "read_runs",
           "record_night_events", "record_run", "run_night", "unfinished_hours", "update_night_index", "window"]

log = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class NightlyConfig:
    """Every setting of the nightly run (`label-archive`); the CLI, the flow and the deployment pass these.

    ``None`` for a preprocessing value means the store's own (the paper's for a new store).
    """

    checkpoint: str                          # encoder checkpoint (pretrain's run directory or a .pt file)
    classifier: str                          # saved classifier directory (fit-classifier)
    centroids: str | None = None             # k-means centroids directory (cluster); None: no cluster assignment
    sites: tuple[str, ...] | None = None     # four-letter site codes; None: every site folder of the archive
    lookback_days: int = 30                  # the window reaches this many days back from the run's hour
    reconcile: bool = False                  # compare the whole archive with the store, not only the window
    image_size: int | None = None            # side of the stored frames in pixels; None: the store's (128 if new)
    skymaps: str | None = None               # UCalgary skymap tree; None: the one the store recorded, if any
    min_elevation: float | None = None       # with skymaps: elevation cut in degrees; None: the store's (13.5)
    map_altitude_km: float | None = None     # with skymaps: altitude of the stored lat/lon; None: the store's (110)
    device: str = "auto"                     # torch device of the embedding: auto, cpu or cuda
    embed_batch_size: int = 512              # frames per forward pass of the encoder
    dask_address: str | None = None          # scheduler of an existing Dask cluster; None: a LocalCluster

    def __post_init__(self):
        if self.sites is not None:
            object.__setattr__(self, "sites", tuple(check_site_codes(list(self.sites), "sites")))
        for name in ("lookback_days", "embed_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise BadInputError(name, f"must be a whole number >= 1, got {value!r}", f"give e.g. {name}=30"
                                    if name == "lookback_days" else f"give e.g. {name}=512")
        asked = {k: getattr(self, k) for k in ("image_size", "min_elevation", "map_altitude_km")}
        PreprocessConfig(**{k: v for k, v in asked.items() if v is not None})  # the ingest's own checks, up front
        if self.device not in DEVICES:
            raise BadInputError("device", f"must be one of {', '.join(DEVICES)}, got {self.device!r}",
                                "use auto (a GPU when there is one), cpu or cuda")


def current_hour() -> np.datetime64:
    """The UT hour now (datetime64[h]): the one clock reading a night's window is built from."""
    return np.datetime64("now", "h")


def window(lookback_days: int = 30, reconcile: bool = False, now: np.datetime64 | None = None) -> tuple:
    """``(start, end)`` hours of the run's window (``(None, None)`` in reconcile mode)."""
    if reconcile:
        return None, None
    now = current_hour() if now is None else np.datetime64(now, "h")
    return now - np.timedelta64(lookback_days * 24, "h"), now + np.timedelta64(1, "h")


def find_new_files(
    archive: str,
    store: StoreLike,
    *,
    start: np.datetime64 | str | None,
    end: np.datetime64 | str | None,
    sites: list[str] | None = None,
    storage_options: dict | None = None,
) -> tuple[list[ArchiveFile], list[ArchiveFile]]:
    """(files to ingest, files already stored) of the archive's hours in [start, end) (None, None: all).

    ``start``/``end`` are the night's window (``window``), computed once by the caller.
    """
    files = list_archive(archive, sites=sites, start=start, end=end)
    return plan(files, store, storage_options=storage_options)


def hour_names(files: list[ArchiveFile]) -> set[tuple[str, np.datetime64]]:
    """``{(site, hour)}`` of the given files (the later stages' ``only`` filter)."""
    return {(f.site, f.hour) for f in files}


def record_run(store: StoreLike, summary: dict) -> int:
    """Append one row to the store's ``runs`` table; returns the number of runs recorded."""
    return _append_run(store, summary, utc_now())


def checkpoint_model_id(checkpoint: str) -> str:
    """The verified model id of an encoder checkpoint (path or URL)."""
    # torch: only when a checkpoint's model is read
    from aurora_pipeline.encoder.checkpoint import load_encoder

    return load_encoder(checkpoint, "cpu")[1]["model_id"]


def unfinished_hours(store: StoreLike, sites, start, end, model_id: str, classifier_id: str, centroids_id: str | None) -> dict:
    """How many stored hours of the window each stage still has to do, from the per-hour facts.

    Returns ``{"sites": [sites with work], "embed": n, "classify": n, "assign": n}``.
    """
    st = open_store(store)
    refs = stored_hours(st, [s for s in (sites or st.sites()) if s in st.sites()], start, end)
    left = {"embed": [r for r in refs if r.embedding_model != model_id],
            "classify": [r for r in refs if r.classifier != classifier_id],
            "assign": [r for r in refs if centroids_id and r.centroids != centroids_id]}
    return {"sites": sorted({r.site for rs in left.values() for r in rs}), **{k: len(v) for k, v in left.items()}}


def hour_blocks(hours: list[str]) -> list[tuple[np.datetime64, np.datetime64]]:
    """Runs of consecutive hours as ``[(first, end)]`` (end exclusive)."""
    hs = sorted({np.datetime64(h, "h") for h in hours})
    blocks = []
    for h in hs:
        if blocks and blocks[-1][1] == h:
            blocks[-1][1] = h + np.timedelta64(1, "h")
        else:
            blocks.append([h, h + np.timedelta64(1, "h")])
    return [(a, b) for a, b in blocks]


def record_night_events(store: StoreLike, labelled: dict[str, list[str]]) -> int:
    """Recompute and record the events of the hours labelled tonight (per site, per block of hours)."""
    written = 0
    for site, hours in sorted(labelled.items()):
        for first, end in hour_blocks(hours):
            written += len(record_events(store, site, first, end))
    return written


# --- the stages of a night, each one call into its stage's library ---------------------------

def ingest_night(files: list[ArchiveFile], store: StoreLike, config: NightlyConfig) -> IngestReport:
    """Ingest the night's new files with the store's own preprocessing setting and skymaps."""
    # dask/distributed: only for the ingest of a night (not for find_new_files, window)
    from aurora_pipeline.dask_cluster import dask_client

    cfg = resolve_preprocess(store, image_size=config.image_size, skymaps=config.skymaps,
                             min_elevation=config.min_elevation, map_altitude_km=config.map_altitude_km,
                             checkpoint=config.checkpoint)  # a new store is framed as the night's encoder wants
    # a local cluster's workers: threads (the work releases the GIL); started only when a file is to be ingested
    cluster = functools.partial(dask_client, config.dask_address, threads=True)
    return ingest(files, store, cfg, cluster=cluster, skip_stored=False, skymaps=config.skymaps)


def embed_night(store: StoreLike, config: NightlyConfig, sites: list[str], start: str | None, end: str | None) -> dict:
    """Embed the window's hours of ``sites`` that the night's encoder has not embedded."""
    return embed_with_checkpoint(store, config.checkpoint, sites=sites, start=start, end=end, device=config.device,
                                 batch_size=config.embed_batch_size, dask_address=config.dask_address, overwrite=True)


def classify_night(store: StoreLike, config: NightlyConfig, sites: list[str], start: str | None, end: str | None) -> dict:
    """Label the window's hours of ``sites`` that the night's classifier has not labelled."""
    return classify_store(store, load_classifier(config.classifier), sites=sites, start=start, end=end)


def assign_night(store: StoreLike, config: NightlyConfig, sites: list[str], start: str | None, end: str | None) -> dict:
    """Assign the window's hours of ``sites`` to the night's k-means centroids."""
    return assign_store(store, load_centroids(config.centroids), sites=sites, start=start, end=end)


def update_night_index(store: StoreLike) -> dict:
    """Bring the similarity index up to date; a summary saying why when it cannot be (never raises StoreError)."""
    from aurora_pipeline.search.driver import update_index  # FAISS loads only here

    try:
        return update_index(store, missing_ok=True)  # no index yet: a summary saying so
    except StoreError as err:  # e.g. the window re-embedded by a new model: the index needs a rebuild
        return {"error": str(err)}


@contextlib.contextmanager
def _hold_nothing(sites: list[str]):
    yield


@dataclass(frozen=True)
class NightSteps:
    """What ``run_night`` calls for each stage: the library functions, or the flow's Prefect tasks of them.

    ``hold_sites(sites)`` is a context manager held around the stages that write those
    sites (the flow's Prefect concurrency limits); the store's own per-site locks apply
    either way.
    """

    find: Callable = find_new_files
    unfinished: Callable = unfinished_hours
    ingest: Callable = ingest_night
    embed: Callable = embed_night
    classify: Callable = classify_night
    assign: Callable = assign_night
    events: Callable = record_night_events
    index: Callable = update_night_index
    record: Callable = record_run
    hold_sites: Callable = field(default=_hold_nothing)


def run_night(archive: str, store: StoreLike, config: NightlyConfig, *, steps: NightSteps = NightSteps(),
              now: np.datetime64 | str | None = None, logger: logging.Logger | None = None) -> dict:
    """Label the archive's new files and finish every stage of the window's stored hours.

    Args:
        archive: the archive root (folder, https:// mirror or s3://) holding thg/l1/asi/.
        store: the store (path, URL or ``Store``).
        config: the night's settings.
        steps: the stage functions (the flow passes its Prefect tasks).
        now: the run's clock reading (default ``current_hour()``, read once); the window
            is built from it once and every stage gets that window.
        logger: where the night says what it did (default: this module's logger).

    Returns:
        The run summary (also appended to the store's ``runs`` table): files new, already
        stored and ingested, frames, hours, failures, label counts, events, index, the
        window, the asked sites without files and ``*_seconds`` timings.

    Raises:
        BadInputError: new files were found and none could be ingested (after the run
            is recorded; each file is a row of the store's failures table).
    """
    logger = logger or log
    timings, started = {}, time.perf_counter()
    first, end = window(config.lookback_days, config.reconcile, now)
    start, end = (None if first is None else str(first)), (None if end is None else str(end))
    sites = list(config.sites) if config.sites is not None else None
    location = store_location(store)
    st = open_existing_store(store)  # opened once, for writing, and handed to every stage; None on a first night
    todo, stored = steps.find(archive, st or store, start=start, end=end, sites=sites)
    timings["find_seconds"] = _since(started)
    missing = sites_without_files(sites, todo + stored)
    if missing:  # a misspelt or silent site must not read as "nothing new"
        logger.warning("no archive files in the window for asked site(s): %s", ", ".join(missing))
    summary = {"archive": str(archive), "store": location, "files_new": len(todo),
               "files_already_stored": len(stored), "window_start": start, "window_end": end,
               "sites_without_files": missing}
    left = steps.unfinished(st, sites, start, end, *_model_ids(config)) if stored else {}  # stored: st exists
    if not todo and not any(left.values()):
        logger.info("nothing new: all %d archive file(s) in the window are in the store and every stage is done",
                    len(stored))
        summary.update(files_ingested=0, frames=0, failures=[], label_counts={}, total_seconds=_since(started),
                       **timings)
        steps.record(st or store, summary)
        return summary
    touched = sorted({f.site for f in todo} | set(left.get("sites", [])))
    report, stages = None, {}
    with steps.hold_sites(touched):
        if todo:
            report = _timed(timings, "ingest", steps.ingest, todo, st or store, config)
        st = st or open_store(store, mode="r+")  # a first night's ingest made it
        window_args = (st, config, touched, start, end)
        stages["embed"] = _timed(timings, "embed", steps.embed, *window_args)
        stages["classify"] = _timed(timings, "classify", steps.classify, *window_args)
        if config.centroids:
            _timed(timings, "cluster", steps.assign, *window_args)
        stages["events"] = _timed(timings, "events", steps.events, st, stages["classify"].get("labelled", {}))
        stages["index"] = _timed(timings, "index", steps.index, st)
    if "error" in stages["index"]:
        logger.warning("similarity index not updated: %s", stages["index"]["error"])
    summary.update(_night_results(report, stages), index=stages["index"], total_seconds=_since(started), **timings)
    steps.record(st, summary)
    logger.info("label-archive: %d file(s) ingested, %d frames, %d hour(s) embedded, %d labelled, %d failure(s)",
                summary["files_ingested"], summary["frames"], summary["hours_embedded"], summary["hours_labelled"],
                len(summary["failures"]))
    if todo and report is not None and not report.ingested:
        raise BadInputError(archive, f"none of the {len(todo)} new file(s) could be ingested (first: "
                            f"{summary['failures'][0] if summary['failures'] else 'unknown'})",
                            f"fix or drop the files listed in {location}'s failures table; the next run retries them")
    return summary


def _model_ids(config: NightlyConfig) -> tuple[str, str, str | None]:
    """(encoder model id, classifier id, centroids id or None) of the night's models, each verified on load."""
    centroids = load_centroids(config.centroids).centroids_id if config.centroids else None
    return checkpoint_model_id(config.checkpoint), load_classifier(config.classifier).classifier_id, centroids


def _night_results(report: IngestReport | None, stages: dict) -> dict:
    ingested = report.ingested if report else []
    return {"files_ingested": len(ingested), "frames": report.frames if report else 0,
            "hours": sorted(f"{o.file.site}/{o.file.hour}" for o in ingested),
            "hours_embedded": stages["embed"].get("hours_embedded", 0),
            "hours_labelled": stages["classify"].get("hours_labelled", 0),
            "failures": [f"{o.file.url}: {o.problem}" for o in report.failed] if report else [],
            "label_counts": stages["classify"].get("label_counts", {}), "events": stages["events"]}


def _timed(timings: dict, name: str, step: Callable, *args):
    t = time.perf_counter()
    try:
        return step(*args)
    finally:
        timings[f"{name}_seconds"] = _since(t)


def _since(t: float) -> float:
    return round(time.perf_counter() - t, 3)
