"""Frames like this one: approximate search, exact re-rank from the store, filters, merging.

    >>> df = similar("store.zarr", site="gako", time="2011-01-06T04:12:03", k=20, label="arc")
    >>> df.columns   # site, time, score, label, label_probability, cluster, slot

A query is a stored frame (``site`` + ``time``), a frame of a CDF file (``cdf`` +
``frame``) or a PNG image (``png``); the last two are preprocessed with the store's one
preprocessing setting and embedded with the encoder the index was built with (its
checkpoint is a parameter, by default the one recorded with the index; a checkpoint of
another model is refused).

Before searching, the index's per-hour record is compared with the store's facts
(``aurora_pipeline.search.fresh``): hours that changed in the store or are newer than
the index are searched exactly from the store until the next ``aurora-pipeline index``,
hours of another encoder are left out, and the result's ``attrs["notes"]`` say so. A
stored frame embedded by another encoder than the index's is refused as a query.

Steps: the index returns ``k * oversample`` candidate rows (only rows passing the site,
hour and label filters are considered, through a FAISS bitmap selector); their
embeddings alone are read from the store and scored exactly (cosine, float32); the time
range and label are checked again against the store's values; candidates at the same
site closer than ``min_separation`` in time are merged, the best kept; the query frame
and its own near-duplicates are left out. When merging leaves fewer than ``k``, the
search is repeated with four times the candidates (and twice the lists visited), up to
a bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from aurora_pipeline.errors import BadInputError, CheckpointError, StoreError
from aurora_pipeline.hours import time_range, to_hour, to_time
from aurora_pipeline.ingest.preprocess import preprocess_frames
from aurora_pipeline.ingest.setting import resolve_preprocess
from aurora_pipeline.pngio import read_png16
from aurora_pipeline.search.catalog import DEAD
from aurora_pipeline.source.sites import check_site
from aurora_pipeline.search.config import QueryConfig
from aurora_pipeline.search.fresh import build_command, compare, exact_candidates
from aurora_pipeline.search.saved import SavedIndex, index_location, load_index
from aurora_pipeline.search.index import normalized
from aurora_pipeline.source.archive import check_site_codes
from aurora_pipeline.source.cdf import read_asi_cdf
from aurora_pipeline.store import SLOTS_PER_HOUR, Store, hour_facts, open_store, read_hour, read_slots
from aurora_pipeline.store.layout import hour_position
from aurora_pipeline.store.core import StoreLike

COLUMNS = ["site", "time", "score", "label", "label_probability", "cluster", "slot"]
MAX_ROUNDS = 5               # candidate sets grow 4x a round: up to 256x k * oversample
FRAME_TOLERANCE_MS = 5_000   # a (site, time) query takes the nearest stored frame within 5 s or one frame step


@dataclass(frozen=True)
class Query:
    """A query vector and, when it is a stored or dated frame, where it is."""

    vector: np.ndarray                 # (d,) float32, unit length
    source: str                        # how the query was given, for reports
    site: str | None = None
    time: np.datetime64 | None = None  # datetime64[ms]
    year: int | None = None
    slot: int | None = None            # set when the frame is in the store
    image: np.ndarray | None = None    # (s, s) uint8 preprocessed frame, for the montage


def open_index(store: StoreLike, index: str | None = None, storage_options: dict | None = None) -> SavedIndex:
    """The index of ``store`` (at ``index`` or the store's sibling ``<store>.index``)."""
    st = open_store(store, storage_options)
    return load_index(index_location(st.url, index), storage_options, store=st.url)


# ---- the query vector ------------------------------------------------------------------------

def stored_query(st: Store, saved: SavedIndex, site: str, time) -> Query:
    """The stored frame of ``site`` nearest to ``time`` (within 5 s), with its embedding.

    Raises:
        BadInputError: an unknown site code, no stored frame there.
        StoreError: the frame's hour is embedded by another encoder than the index's (or none).
    """
    site, t = check_site(site, "--site"), to_time(time)
    if t is None:
        raise BadInputError("time", "is required with --site", "give the frame's UT time, e.g. 2011-01-06T04:12:03")
    hour = to_hour(t)
    year, hour_index = hour_position(hour)
    facts = hour_facts(st, site, hour, hour + np.timedelta64(1, "h")) if site in st.sites() else pd.DataFrame()
    if not len(facts):
        raise BadInputError(f"{site} {t}", f"no stored hour of {site} at that time in {st.url}",
                            "pick a stored frame (see `aurora_pipeline.open_site`), or query by --cdf / --png")
    model = facts.embedding_model.iloc[0]
    if model != saved.model_id:  # the store's embedding now, whatever the index recorded of the hour
        fix = (f"rebuild the index for that encoder with `{build_command(st, saved)} --rebuild --model {model}`, "
               f"or embed the hour with the index's encoder" if model else
               f"embed it (`aurora-pipeline embed --store {st.url} --checkpoint CKPT`)")
        raise StoreError(f"{st.url}: {site} {str(hour)[:13]} is embedded by {model or 'no model'}, the index at "
                         f"{saved.location} holds embeddings of {saved.model_id}: the query would be compared across "
                         f"encoders. Fix: {fix}; or query by --cdf / --png with the index's checkpoint.")
    times = read_hour(st, site, hour, ("time",))["time"]
    i = int(np.argmin(np.abs((times - t).astype(np.int64))))
    step = int(np.median(np.diff(times).astype(np.int64))) if len(times) > 1 else 0
    tolerance = max(FRAME_TOLERANCE_MS, step)
    if abs(int((times[i] - t).astype(np.int64))) > tolerance:
        raise BadInputError(f"{site} {t}", f"no stored frame within {tolerance / 1000:g} s (nearest: {times[i]})",
                            "give the time of a stored frame")
    slot = hour_index * SLOTS_PER_HOUR + i
    embedding, frame = (read_slots(st, site, year, np.array([slot]), name) for name in ("embedding", "frames"))
    return Query(normalized(embedding)[0], f"{site} {times[i]}", site, times[i], year, slot, frame[0])


def image_query(st: Store, saved: SavedIndex, raw: np.ndarray, source: str, checkpoint: str | None,
                device: str = "cpu", site: str | None = None, time=None) -> Query:
    """Preprocess a raw frame (y, x) with the store's setting and embed it with the index's encoder."""
    # torch: only for a query by image
    from aurora_pipeline.embed.model import EmbedConfig, embed_frames
    from aurora_pipeline.encoder.checkpoint import load_encoder

    if not st.preprocess:
        raise StoreError(f"{st.url}: no preprocessing setting recorded (nothing ingested). Fix: ingest first.")
    cfg = resolve_preprocess(st)
    if cfg.fov == "elevation":
        raise BadInputError(source, f"the store's frames were cut to a skymap field of view (fov={cfg.fov!r}), "
                            "which a loose image does not carry", "ingest the file and query by --site/--time")
    checkpoint = checkpoint or saved.meta.get("checkpoint") or st.encoder_checkpoints().get(saved.model_id)
    if not checkpoint:
        raise BadInputError("checkpoint", f"the index records no encoder checkpoint for {saved.model_id}",
                            "pass --checkpoint with the checkpoint that embedded the store")
    encoder, meta = load_encoder(checkpoint, device)
    if meta["model_id"] != saved.model_id:
        raise CheckpointError(f"{checkpoint}: encoder {meta['model_id']}, but the index holds embeddings of "
                              f"{saved.model_id}. Fix: pass that model's checkpoint.")
    frame = preprocess_frames(np.asarray(raw)[None], cfg)
    vector = embed_frames(encoder, frame, EmbedConfig(device=device), meta["config"]["image_size"])
    return Query(normalized(vector)[0], source, site, None if time is None else to_time(time), image=frame[0])


def cdf_query(st: Store, saved: SavedIndex, path: str, frame: int, checkpoint: str | None, device: str = "cpu") -> Query:
    asi = read_asi_cdf(path)
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or not 0 <= frame < len(asi.images):
        raise BadInputError(f"{path} --frame {frame!r}", f"the file has frames 0..{len(asi.images) - 1}",
                            "pick a frame index in that range")
    return image_query(st, saved, asi.images[frame], f"{path} frame {frame}", checkpoint, device, asi.site,
                       asi.times[frame])


def png_query(st: Store, saved: SavedIndex, path: str, checkpoint: str | None, device: str = "cpu") -> Query:
    rgb = read_png16(path)
    return image_query(st, saved, rgb.max(axis=2), str(path), checkpoint, device)  # grey, or OATH's green channel


# ---- the search ------------------------------------------------------------------------------

def separation_ms(value) -> int:
    """``min_separation`` ("30s", "2min", a number of seconds, a Timedelta) in ms."""
    try:
        delta = pd.Timedelta(seconds=float(value)) if isinstance(value, (int, float)) else pd.Timedelta(value)
    except (ValueError, TypeError) as err:
        raise BadInputError(f"min_separation={value!r}", f"is not a duration ({err})", "use e.g. 30s or 2min") from None
    if delta < pd.Timedelta(0):
        raise BadInputError(f"min_separation={value!r}", "is negative", "use 0 (no merging) or more")
    return int(delta / pd.Timedelta(milliseconds=1))


def _label_codes(saved: SavedIndex, label) -> list[int] | None:
    if label is None:
        return None
    names = [label] if isinstance(label, str) else list(label)
    known = saved.meta["class_names"]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadInputError(f"label {', '.join(unknown)}", f"not a class of the index ({', '.join(known) or 'no labels'})",
                            "pick one of those, or run `aurora-pipeline classify` and update the index")
    return [known.index(n) for n in names]


def _read_group(st: Store, site: str, year: int, slots: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    group = st.year_group(site, year)
    return {name: read_slots(st, site, year, slots, name) for name in names if name in group}


def _candidates(st: Store, saved: SavedIndex, query: Query, rows: np.ndarray, approx: np.ndarray) -> pd.DataFrame:
    """Site, time, exact score and slot of candidate rows (embeddings read from the store only
    for these rows; the exact index already scored them exactly)."""
    site_no, year, slot = saved.catalog.frames_of(rows)
    live = site_no >= 0
    parts = []
    for s, y in sorted(set(zip(site_no[live].tolist(), year[live].tolist()))):
        sel = np.flatnonzero(live & (site_no == s) & (year == y))
        site = saved.catalog.sites[s]
        names = ("time",) if saved.vectors.exact else ("time", "embedding")
        data = _read_group(st, site, y, slot[sel], names)
        score = approx[sel] if saved.vectors.exact else normalized(data["embedding"], f"{site} {y} embedding") @ query.vector
        parts.append(pd.DataFrame({"site": site, "year": y, "slot": slot[sel], "time": data["time"],
                                   "score": score.astype(np.float32)}))
    if not parts:
        return pd.DataFrame({"site": [], "year": [], "slot": [], "time": np.array([], "datetime64[ms]"), "score": []})
    return pd.concat(parts, ignore_index=True).sort_values("score", ascending=False, kind="stable")


def _merge(cand: pd.DataFrame, query: Query, min_sep_ms: int, k: int) -> pd.DataFrame:
    """Best-first greedy: keep a candidate unless a kept one (or the query) is at its site within
    ``min_sep_ms``; the query frame itself is always dropped."""
    kept_times: dict[str, list[int]] = {}
    if query.site is not None and query.time is not None:
        kept_times[query.site] = [int(np.datetime64(query.time, "ms").astype(np.int64))]
    keep = []
    for i, (site, t, year, slot) in enumerate(zip(cand.site, cand.time.astype("datetime64[ms]").astype(np.int64),
                                                  cand.year, cand.slot)):
        if query.slot is not None and site == query.site and year == query.year and slot == query.slot:
            continue
        if query.time is not None and site == query.site and t == int(np.datetime64(query.time, "ms").astype(np.int64)):
            continue  # the query frame, from its CDF file
        times = kept_times.setdefault(site, [])
        if min_sep_ms and any(abs(t - u) < min_sep_ms for u in times):
            continue
        times.append(int(t))
        keep.append(i)
        if len(keep) == k:
            break
    return cand.iloc[keep]


def _post_filter(cand: pd.DataFrame, start, end) -> pd.DataFrame:
    t0, t1 = to_time(start), to_time(end)
    keep = np.ones(len(cand), bool)
    if t0 is not None:
        keep &= cand.time.to_numpy() >= t0
    if t1 is not None:
        keep &= cand.time.to_numpy() < t1
    return cand[keep]


def _describe(st: Store, result: pd.DataFrame, label_names: list[str] | None) -> pd.DataFrame:
    """Add label (name), its probability and the cluster, read from the store for the results only."""
    out = []
    for (site, year), part in result.groupby(["site", "year"], sort=False):
        data = _read_group(st, site, int(year), part.slot.to_numpy(), ("label", "label_probability", "cluster"))
        group = st.year_group(site, int(year))
        names = str(group["label"].attrs.get("flag_meanings", "")).split() if "label" in group else []
        codes = data.get("label", np.full(len(part), -1)).astype(np.int64)
        part = part.copy()
        part["label"] = [names[c] if 0 <= c < len(names) else None for c in codes]
        prob = data.get("label_probability")
        part["label_probability"] = [float(prob[i, c]) if prob is not None and 0 <= c < prob.shape[1] else np.nan
                                     for i, c in enumerate(codes)]
        part["cluster"] = data.get("cluster", np.full(len(part), -1)).astype(np.int64)
        out.append(part)
    if not out:
        return pd.DataFrame({c: [] for c in COLUMNS})
    df = pd.concat(out).sort_values("score", ascending=False, kind="stable")
    if label_names is not None:
        df = df[df.label.isin(label_names)]  # the store's current labels (the index's may be a night old)
    return df


def find_similar(st: Store, saved: SavedIndex, query: Query, *, k: int = QueryConfig.k, sites=None, start=None,
                 end=None, label=None, min_separation=QueryConfig.min_separation,
                 oversample: int = QueryConfig.oversample, nprobe: int | None = None) -> pd.DataFrame:
    """The ``k`` frames most like ``query``, best first (see the module docstring).

    Returns:
        DataFrame with columns site, time (datetime64[ms]), score (cosine, float32),
        label (class name or None), label_probability (of that label, NaN without),
        cluster (-1 without) and slot (the frame's position in its site-year). Fewer
        than ``k`` rows when fewer frames pass the filters.
    """
    QueryConfig(k=k, oversample=oversample, min_separation=str(min_separation), nprobe=nprobe)
    start, end = time_range(start, end)
    if len(query.vector) != saved.vectors.params["d"]:
        raise BadInputError(query.source, f"a {len(query.vector)}-d query for an index of {saved.vectors.params['d']}-d "
                            "vectors", "query with the index's encoder")
    if sites is not None:
        sites = check_site_codes(sites, "--sites")
    unknown = [s for s in sites or [] if s not in saved.catalog.sites and s not in st.sites()]
    if unknown:
        raise BadInputError(f"--sites {','.join(unknown)}", f"not in the index nor the store (the index holds "
                            f"{', '.join(saved.catalog.sites)})", "pick sites the index holds, or ingest and index "
                            "them (`aurora-pipeline index --rebuild --sites ..`)")
    min_sep = separation_ms(min_separation)
    codes = _label_codes(saved, label)
    label_names = None if label is None else ([label] if isinstance(label, str) else list(label))
    agreement = compare(st, saved, sites=sites, start=start, end=end, with_labels=label is not None)
    allowed = saved.catalog.allowed_rows(sites, to_time(start), to_time(end), codes)
    if agreement.dead_positions:  # hours the store no longer agrees with: never returned from the index
        allowed = (saved.catalog.labels != DEAD) if allowed is None else allowed.copy()
        allowed[saved.catalog.rows_of(agreement.dead_positions)] = False
    exact = _post_filter(exact_candidates(st, agreement.exact, query.vector, start, end, label_names), start, end)
    available = saved.vectors.ntotal if allowed is None else int(allowed.sum())
    want, probe = k * oversample + 1, nprobe or saved.vectors.params.get("nprobe")
    result = _merge(exact, query, min_sep, k)
    for _ in range(MAX_ROUNDS):
        ask = min(want, available)
        if ask == 0:
            break
        approx, rows = saved.vectors.search(query.vector[None], ask, allowed, probe)
        found = rows[0] >= 0
        cand = _post_filter(_candidates(st, saved, query, rows[0][found], approx[0][found]), start, end)
        if len(exact):
            cand = pd.concat([c for c in (cand, exact) if len(c)], ignore_index=True).sort_values(
                "score", ascending=False, kind="stable")
        result = _merge(cand, query, min_sep, k)
        if len(result) >= k or ask >= available:
            break
        want *= 4
        if probe is not None and found.sum() < ask:  # the visited lists ran out: visit more
            probe = min(2 * probe, saved.vectors.params["nlist"])
    df = _describe(st, result, label_names)[COLUMNS].reset_index(drop=True)
    df.attrs["notes"] = agreement.notes
    return df


def similar(store: StoreLike, *, site: str | None = None, time=None, cdf: str | None = None, frame: int | None = None,
            png: str | None = None, k: int = QueryConfig.k, sites=None, start=None, end=None, label=None,
            min_separation=QueryConfig.min_separation, index: str | SavedIndex | None = None,
            checkpoint: str | None = None, oversample: int = QueryConfig.oversample, nprobe: int | None = None,
            device: str = "cpu",
            storage_options: dict | None = None) -> pd.DataFrame:
    """Frames of the whole archive that look like the query, best first.

    Give exactly one query: ``site`` + ``time`` (a stored frame), ``cdf`` + ``frame`` (a frame
    of an archive file) or ``png`` (an image). ``index`` is a location (default the store's
    sibling ``<store>.index``) or an index already opened with :func:`open_index`.

    Raises:
        BadInputError: no or several queries, an unknown label or site, a frame not stored,
            a missing index (naming the command that builds it).
        StoreError / CheckpointError: the query's embedding is of another model than the index's.
    """
    st = open_store(store, storage_options)
    saved = index if isinstance(index, SavedIndex) else load_index(index_location(st.url, index), storage_options,
                                                                   store=st.url)
    query = make_query(st, saved, site=site, time=time, cdf=cdf, frame=frame, png=png, checkpoint=checkpoint,
                       device=device)
    df = find_similar(st, saved, query, k=k, sites=sites, start=start, end=end, label=label,
                      min_separation=min_separation, oversample=oversample, nprobe=nprobe)
    df.attrs["query"] = {"source": query.source, "site": query.site,
                         "time": None if query.time is None else str(query.time), "model_id": saved.model_id}
    return df


def make_query(st: Store, saved: SavedIndex, *, site=None, time=None, cdf=None, frame=None, png=None,
               checkpoint=None, device: str = "cpu") -> Query:
    """The :class:`Query` for exactly one of (site, time), (cdf, frame), png."""
    asked = (("--site/--time", site is not None or time is not None),
             ("--cdf/--frame", cdf is not None or frame is not None), ("--png", png is not None))
    given = [name for name, on in asked if on]
    if len(given) != 1:
        raise BadInputError("query", f"give exactly one query, got {', '.join(given) or 'none'}",
                            "use --site S --time T, or --cdf FILE --frame I, or --png FILE")
    if site is not None or time is not None:
        if site is None or time is None:
            raise BadInputError("query", "--site and --time go together", "give both")
        return stored_query(st, saved, site, time)
    if cdf is not None or frame is not None:
        if cdf is None or frame is None:
            raise BadInputError("query", "--cdf and --frame go together", "give both (frame 0 is the first)")
        return cdf_query(st, saved, cdf, frame, checkpoint, device)
    return png_query(st, saved, png, checkpoint, device)
