"""Similarity search: the index against exact brute force on the same vectors, in one run.

(a) ``--n`` (default 10^6) synthetic 512-d unit vectors with the structure of encoder
    embeddings (non-negative, low intrinsic dimension, Zipf-sized modes, runs of
    near-duplicate frames; see ``clustered``), and ``--queries`` held-out queries from the
    same process. Exact top-10 by brute force (FAISS flat inner product) is the truth.
    The index is what ``aurora-pipeline index`` builds for n vectors (``choose_params``);
    each query asks it for k x oversample candidates and re-ranks them exactly in float32
    (here from the in-memory vectors; from the store in (b)). Reported: build time,
    bytes a vector, recall@10, single-query latency p50/p95 and QPS beside brute force.
(b) A store built by the pipeline (synthetic archive + the real Gakona file ingested,
    SimCLR 1 epoch, embedded, classified): the same measures on its real embeddings
    (an exact index, and the approximate kind forced with small lists), the end-to-end
    ``similar()`` latency reading candidates from the store, and precision@10 of the
    synthetic class outside the query's own site-hour, trained encoder beside a
    random-init one.

    .venv/bin/python benchmarks/similar.py                 # (a) at 10^6 and (b)
    .venv/bin/python benchmarks/similar.py --n 200000 --skip-store   # a quick look

FAISS uses ``--threads`` threads (default 2, the development machine's cores) for
everything, brute force included. Set OMP_WAIT_POLICY=PASSIVE on a shared machine: with
the default spin-waiting, OpenMP threads fighting other processes for the two cores made
FAISS several times slower in our runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before FAISS / OpenMP load

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from _common import CACHE, command_line  # noqa: E402
from aurora_pipeline.search.config import IndexConfig  # noqa: E402
from aurora_pipeline.search.index import VectorIndex, choose_params, normalized  # noqa: E402

K = 10


def clustered(n: int, n_queries: int, d: int = 512, latent: int = 24, modes: int = 300, run: int = 600,
              step: float = 0.08, noise: float = 0.03, seed: int = 0):
    """Unit vectors like pooled CNN features of an imager's frames.

    Runs of ``run`` consecutive "frames" each follow a random walk (steps of ``step`` of
    the mode's scale) in a ``latent``-d space around one of ``modes`` Gaussian modes
    (Zipf-like sizes, anisotropic), mapped through a fixed random layer ``relu(A z + b)``
    to ``d`` dimensions, plus isotropic noise of ``noise``. Queries are single frames
    drawn the same way (not in the base). Returns ``(base, queries)`` float32.
    """
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((latent, d), dtype=np.float32) / np.sqrt(latent)
    b = 0.3 * rng.standard_normal(d, dtype=np.float32)
    centres = 1.5 * rng.standard_normal((modes, latent), dtype=np.float32)
    scales = rng.uniform(0.2, 0.8, (modes, latent)).astype(np.float32)
    weights = 1.0 / np.arange(1, modes + 1) ** 0.8
    weights /= weights.sum()

    def runs(total: int, length: int) -> np.ndarray:
        out = np.empty((total, d), np.float32)
        pos = 0
        while pos < total:
            m = rng.choice(modes, p=weights)
            n_run = min(length, total - pos)
            z = centres[m] + scales[m] * rng.standard_normal(latent, dtype=np.float32)
            z = z + np.cumsum(step * scales[m] * rng.standard_normal((n_run, latent), dtype=np.float32), axis=0)
            x = z @ a
            x += b
            np.maximum(x, 0, out=x)
            x += noise * rng.standard_normal((n_run, d), dtype=np.float32)
            out[pos:pos + n_run] = x
            pos += n_run
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    return runs(n, run), runs(n_queries, 1)


def structure(x: np.ndarray, sample: int = 2000, seed: int = 0) -> dict:
    """Share of variance in the top 10 / 50 principal components and mean cosine of random
    pairs (over a sample), and the median cosine of a sampled vector's nearest neighbour
    among all of ``x`` (how tight the near-duplicates are)."""
    rng = np.random.default_rng(seed)
    s = x[np.sort(rng.choice(len(x), size=min(sample, len(x)), replace=False))]
    ev = np.linalg.eigvalsh(np.cov(s.astype(np.float64).T))[::-1]
    nn, _ = faiss.knn(s[:200], x, 2, faiss.METRIC_INNER_PRODUCT)  # the first hit is the vector itself
    return {"var_top10": ev[:10].sum() / ev.sum(), "var_top50": ev[:50].sum() / ev.sum(),
            "mean_cos": float(np.mean(s[: len(s) // 2] @ s[len(s) // 2:].T)), "nn_cos_median": float(np.median(nn[:, 1]))}


def percentiles(seconds: list[float]) -> tuple[float, float, float]:
    """(p50 ms, p95 ms, queries per second) of single-query latencies."""
    a = np.asarray(seconds)
    return float(np.percentile(a, 50) * 1e3), float(np.percentile(a, 95) * 1e3), float(1.0 / a.mean())


def brute_force(x: np.ndarray, queries: np.ndarray, n_single: int) -> tuple[np.ndarray, list[float]]:
    """Exact top-K of every query (batched), and the latencies of ``n_single`` single queries."""
    _, truth = faiss.knn(queries, x, K, faiss.METRIC_INNER_PRODUCT)
    times = []
    for q in queries[:n_single]:
        t = time.perf_counter()
        faiss.knn(q[None], x, K, faiss.METRIC_INNER_PRODUCT)
        times.append(time.perf_counter() - t)
    return truth, times


def build(x: np.ndarray, cfg: IndexConfig = IndexConfig(), chunk: int = 100_000) -> tuple[VectorIndex, dict]:
    params = choose_params(len(x), x.shape[1], cfg)
    timings = {"train_s": 0.0, "n_train": 0}
    if params["kind"] == "exact":
        index = VectorIndex.create(params)
    else:
        rng = np.random.default_rng(params["seed"])
        sample = x[np.sort(rng.choice(len(x), size=params["n_train"], replace=False))]
        t = time.perf_counter()
        index = VectorIndex.trained(params, sample)
        timings.update(train_s=time.perf_counter() - t, n_train=len(sample))
    t = time.perf_counter()
    for first in range(0, len(x), chunk):
        index.add(x[first:first + chunk], first)
    timings["add_s"] = time.perf_counter() - t
    return index, timings


def search_with_rerank(index: VectorIndex, x: np.ndarray, queries: np.ndarray, truth: np.ndarray, oversample: int,
                       nprobe: int | None) -> tuple[float, list[float]]:
    """recall@K and single-query latencies of: approximate search for K x oversample, exact re-rank."""
    hits, times = [], []
    for q, true in zip(queries, truth):
        t = time.perf_counter()
        _, rows = index.search(q[None], K * oversample, nprobe=nprobe)
        cand = rows[0][rows[0] >= 0]
        best = cand[np.argsort(-(x[cand] @ q), kind="stable")[:K]]
        times.append(time.perf_counter() - t)
        hits.append(len(np.intersect1d(best, true)) / K)
    return float(np.mean(hits)), times


def synthetic_part(args) -> None:
    print(f"\n## (a) {args.n:,} synthetic 512-d vectors, {args.queries} queries, {faiss.omp_get_max_threads()} "
          f"FAISS threads; load average {os.getloadavg()[0]:.1f} at the start\n")
    t = time.perf_counter()
    x, queries = clustered(args.n, args.queries)
    print(f"generated in {time.perf_counter() - t:.0f} s; structure: " +
          ", ".join(f"{k} {v:.3f}" for k, v in structure(x).items()))
    t = time.perf_counter()
    truth, bf_times = brute_force(x, queries, args.single)
    bf50, bf95, bf_qps = percentiles(bf_times)
    print(f"exact truth for {len(queries)} queries in {time.perf_counter() - t:.0f} s")
    index, timings = build(x)
    p = index.params
    size = len(index.to_bytes())
    print(f"index {p['factory']} (nprobe {p['nprobe']}): trained on {timings['n_train']:,} in {timings['train_s']:.1f} s, "
          f"added {args.n:,} in {timings['add_s']:.1f} s ({args.n / timings['add_s']:,.0f} vectors/s); "
          f"{index.bytes_per_vector():.0f} B/vector in FAISS's lists (codes + ids), serialized "
          f"{size / args.n:.1f} B/vector with the trained parts; + 1 B/vector label and about 40 B an hour of "
          f"catalog for the filters\n")
    print("| search | recall@10 | p50 | p95 | QPS | speed-up vs brute force (p50) |")
    print("|---|---|---|---|---|---|")
    print(f"| exact brute force (faiss.knn, flat inner product) | 1.000 | {bf50:.1f} ms | {bf95:.1f} ms | "
          f"{bf_qps:.1f} | 1x |")
    for nprobe in (p["nprobe"], 2 * p["nprobe"]):
        for oversample in (10, 20, 40):
            recall, times = search_with_rerank(index, x, queries, truth, oversample, nprobe)
            p50, p95, qps = percentiles(times)
            print(f"| nprobe {nprobe}, {K * oversample} candidates re-ranked | {recall:.3f} | {p50:.2f} ms | "
                  f"{p95:.2f} ms | {qps:,.0f} | {bf50 / p50:,.0f}x |")
    scanned = p["nprobe"] * args.n / p["nlist"]
    print(f"\nat nprobe {p['nprobe']} a query scans about {scanned:,.0f} codes ({100 * scanned / args.n:.1f}% of the "
          f"vectors); brute force reads {args.n * 2048 / 2**30:.1f} GiB per query")


def store_part(args) -> None:
    from aurora_pipeline.classify.driver import classify_store, fit_from_store
    from aurora_pipeline.classify.labels_csv import read_labels_csv
    from aurora_pipeline.classify.model import ClassifierConfig, load_classifier
    from aurora_pipeline.embed.driver import embed_with_checkpoint
    from aurora_pipeline.embed.model import EmbedConfig, embed_frames
    from aurora_pipeline.encoder.backbone import resnet18_encoder
    from aurora_pipeline.encoder.train import PretrainConfig, pretrain
    from aurora_pipeline.encoder.training_frames import load_training_frames
    from aurora_pipeline.ingest.driver import ingest
    from aurora_pipeline.ingest.preprocess import PreprocessConfig
    from aurora_pipeline.search.driver import build_index
    from aurora_pipeline.search.query import open_index, similar
    from aurora_pipeline.source.archive import ArchiveFile, list_archive
    from aurora_pipeline.store import open_sites
    from _common import synthetic_archive
    import torch

    real = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "themis",
                        "thg_l1_asf_gako_2011010617_v01.cdf")
    hours, fph = args.store_hours, args.frames_per_hour
    print(f"\n## (b) a store built by the pipeline: 2 sites x {hours} hours x {fph} synthetic frames"
          f"{' + the real gako 2011-01-06T17 file (23 frames)' if os.path.exists(real) else ''}, 32x32, "
          f"SimCLR 1 epoch; load average {os.getloadavg()[0]:.1f}\n")
    archive = synthetic_archive(f"similar_{hours}x{fph}", ["gako", "gill"], "2011-01-06T04", hours, fph)
    root = CACHE / f"similar_store_{hours}x{fph}"
    store = root / "store.zarr"
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        files = list_archive(str(archive))
        if os.path.exists(real):
            files.append(ArchiveFile(os.path.abspath(real), "gako", "2011010617", 1, os.path.getsize(real)))
        ingest(files, store, PreprocessConfig(image_size=32))
        frames, provenance = load_training_frames(store)
        pretrain(frames, PretrainConfig(epochs=1, batch_size=32, image_size=32, seed=0, device="cpu"),
                 root / "encoder", provenance=provenance)
        embed_with_checkpoint(store, str(root / "encoder"), device="cpu")
        fit_from_store(store, archive / "labels.csv", root / "classifier", ClassifierConfig(cv_folds=2), strict=False)
        classify_store(store, load_classifier(root / "classifier"))
        (root / ".complete").write_text("ok")
    ds = open_sites(store, variables=["embedding", "frames"])
    sites, times = ds.site.values, ds.time.values.astype("datetime64[ms]")
    x = normalized(ds.embedding.values)
    print(f"{len(x)} embeddings; structure: " + ", ".join(f"{k} {v:.3f}" for k, v in structure(x).items()))

    # end to end through the store: the store's own index (exact at this size), the approximate
    # kind forced with 16 lists (candidates' embeddings then re-read from the store), brute force
    rng = np.random.default_rng(0)
    picks = rng.choice(len(x), size=min(args.store_queries, len(x)), replace=False)
    rows = ["| end to end, k=20 (k=10 for recall) | build | recall@10 | p50 | p95 | QPS |", "|---|---|---|---|---|---|"]
    for name, location, cfg in (("exact (the default below 100,000 vectors)", str(store) + ".index", IndexConfig()),
                                ("IVF-PQ forced (16 lists)", str(store) + ".index-ivf",
                                 IndexConfig(exact_below=1, nlist=16))):
        shutil.rmtree(location, ignore_errors=True)
        t = time.perf_counter()
        report = build_index(store, index=location, config=cfg, checkpoint=str(root / "encoder"))
        built = time.perf_counter() - t
        saved = open_index(store, location)
        e2e, hits = [], []
        for i in picks:
            t = time.perf_counter()
            similar(store, site=sites[i], time=times[i], k=20, index=saved)
            e2e.append(time.perf_counter() - t)
            got = similar(store, site=sites[i], time=times[i], k=K, min_separation=0, index=saved)
            exact = [j for j in np.argsort(-(x @ x[i]), kind="stable") if j != i][:K]
            hits.append(len(set(zip(got.site, got.time.to_numpy())) & set(zip(sites[exact], times[exact]))) / K)
        p50, p95, qps = percentiles(e2e)
        rows.append(f"| `similar()`, {name}: {report['factory']}, "
                    f"{report['bytes_per_vector_index']:.0f} B/vector | {built:.1f} s | {np.mean(hits):.3f} | "
                    f"{p50:.0f} ms | {p95:.0f} ms | {qps:.1f} |")
    brute = []
    for i in picks:
        t = time.perf_counter()
        every = normalized(open_sites(store, variables=["embedding"]).embedding.values)  # all read: no index
        np.argsort(-(every @ x[i]))[:20]
        brute.append(time.perf_counter() - t)
    b50, b95, bq = percentiles(brute)
    rows.append(f"| brute force reading every embedding from the store | - | 1.000 | {b50:.0f} ms | {b95:.0f} ms "
                f"| {bq:.1f} |")
    print("\n" + "\n".join(rows))

    # precision@10 of the synthetic class outside the query's site-hour: trained vs random-init encoder
    labels = read_labels_csv(archive / "labels.csv")
    truth_class = {(s, t): c for s, t, c in zip(labels.site, labels.time.astype("datetime64[ms]"), labels["class"])}
    known = np.array([(s, t) in truth_class for s, t in zip(sites, times)])
    cls = np.array([truth_class.get((s, t), "") for s, t in zip(sites, times)])
    hour = times.astype("datetime64[h]")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        random_init = resnet18_encoder().eval()
    y = normalized(embed_frames(random_init, ds.frames.values, EmbedConfig(device="cpu"), 32))
    print("\n| encoder | precision@10 outside the query's site-hour | chance |\n|---|---|---|")
    for name, vectors in (("SimCLR, 1 epoch", x), ("random init", y)):
        prec, chance = [], []
        for i in np.flatnonzero(known)[::7]:
            other = known & ~((sites == sites[i]) & (hour == hour[i]))
            order = np.flatnonzero(other)[np.argsort(-(vectors[other] @ vectors[i]), kind="stable")[:K]]
            prec.append(np.mean(cls[order] == cls[i]))
            chance.append(np.mean(cls[other] == cls[i]))
        print(f"| {name} | {np.mean(prec):.3f} | {np.mean(chance):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200, help="queries for recall (and latency)")
    parser.add_argument("--single", type=int, default=20, help="single brute-force queries timed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-store", action="store_true")
    parser.add_argument("--store-hours", type=int, default=6)
    parser.add_argument("--frames-per-hour", type=int, default=200)
    parser.add_argument("--store-queries", type=int, default=20)
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    print(command_line())
    if not args.skip_synthetic:
        synthetic_part(args)
    if not args.skip_store:
        store_part(args)


if __name__ == "__main__":
    main()
