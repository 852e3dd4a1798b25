"""The nearest-neighbour index itself: unit vectors in, row numbers out (FAISS, no store).

Two kinds, chosen from the number of vectors ``n`` by :func:`choose_params`:

* ``"exact"`` (n below ``IndexConfig.exact_below``): ``IndexIDMap2(IndexFlatIP)``, every
  vector kept in float32; a search is an exact inner product over all of them.
* ``"ivfpq"``: ``PCAR<pca_dim>,IVF<nlist>,PQ<pq_m>x4fs`` with the L2 metric (on unit
  vectors the L2 order is the cosine order; PCA centres the data, which would change
  inner products but not distances). A rotation-PCA to ``pca_dim`` dimensions (by
  default the fewest multiples of ``pq_m`` holding 95% of the training sample's
  variance), an inverted file of ``nlist`` k-means lists, and the residual
  product-quantised into ``pq_m`` 4-bit codes scanned with FAISS's SIMD "fast scan"
  kernels. Stored per vector: ``pq_m / 2`` code bytes + the 8-byte row id of the
  inverted list (48 + 8 = 56 bytes at the defaults). Its scores are approximate; the
  query layer re-ranks candidates exactly. (4-bit fast-scan codes beat 8-bit ones of the
  same size in our tests, at a tenth of the training time; see BENCHMARKS.md.)

Vectors are identified by their row number (int64), given by the caller when adding
(``aurora_pipeline.search.catalog`` maps rows to frames). Nothing is ever removed from
the FAISS index: a replaced hour's old rows are marked dead in the catalog and left out
of every search by the ``allowed`` bitmap, and a rebuild drops them. (FAISS 1.15's
``remove_ids`` on fast-scan lists leaves stale 4-bit codes in the last block, which
vectors added later are OR-ed into: removing and re-adding corrupts codes.)

When the FAISS build has GPUs (``faiss.get_num_gpus() > 0``) the IVF k-means training
runs on them (``clustering_index``); everything else is the same code on the CPU.

Example:
    >>> params = choose_params(n=2_000_000, d=512)
    >>> index = VectorIndex.create(params)
    >>> index.train(sample)                       # (m, 512) float32 unit vectors
    >>> index.add(vectors, first_row=0)
    >>> scores, rows = index.search(queries, k=200)
"""

from __future__ import annotations

import dataclasses
import math

import faiss
import numpy as np

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.search.config import IndexConfig

KINDS = ("exact", "ivfpq")


def choose_params(n: int, d: int, cfg: IndexConfig = IndexConfig()) -> dict:
    """The index parameters for ``n`` vectors of dimension ``d`` (a JSON-able dict).

    Keys: ``kind``, ``d``, ``n_at_build``, ``factory`` (the FAISS factory string),
    ``metric`` and, for ``ivfpq``, ``nlist``, ``nprobe``, ``pca_dim``, ``pq_m``,
    ``n_train``, ``seed``. With ``cfg.pca_dim`` None the PCA dimension (and so the
    factory) is left None until :func:`complete_params` sees the training sample.
    """
    base = {"d": int(d), "n_at_build": int(n), "config": dataclasses.asdict(cfg)}
    if n < cfg.exact_below:
        return {"kind": "exact", "factory": "IDMap2,Flat", "metric": "inner_product", **base}
    if cfg.pq_m > d or (cfg.pca_dim or 0) > d:
        raise BadInputError("pca_dim", f"pca_dim={cfg.pca_dim}, pq_m={cfg.pq_m}: more than the vectors' {d} dimensions.",
                            f"use pq_m <= pca_dim <= {d}.")
    nlist = cfg.nlist or int(min(max(2 ** round(math.log2(math.sqrt(n))), 64), 262_144))
    nlist = max(1, min(nlist, n // 39))  # FAISS needs about 39 training vectors per list
    nprobe = cfg.nprobe or min(max(8, nlist // 64), 256)
    n_train = int(min(n, max(cfg.train_per_list * nlist, 256 * 39), cfg.max_train))
    params = {"kind": "ivfpq", "factory": None, "metric": "l2", "nlist": nlist, "nprobe": min(nprobe, nlist),
              "pca_dim": cfg.pca_dim, "pq_m": cfg.pq_m, "n_train": n_train, "seed": cfg.seed, **base}
    return _with_factory(params) if cfg.pca_dim else params


def complete_params(params: dict, sample: np.ndarray) -> dict:
    """``params`` with the PCA dimension chosen from ``sample`` (m, d) when it was left open:
    the fewest multiples of ``pq_m`` whose principal components hold ``pca_variance`` of
    the variance (encoder embeddings have a few dozen strong directions; 4-bit codes spent
    on the weak ones buy little recall, see BENCHMARKS.md)."""
    if params["kind"] == "exact" or params["pca_dim"]:
        return params
    x = np.asarray(sample, dtype=np.float64)
    eigenvalues = np.linalg.eigvalsh(np.cov(x, rowvar=False))[::-1]
    share = np.cumsum(eigenvalues) / eigenvalues.sum()
    m, d = params["pq_m"], params["d"]
    dims = [k for k in range(m, d + 1, m)]
    pca = next((k for k in dims if share[k - 1] >= params["config"]["pca_variance"]), dims[-1])
    return _with_factory({**params, "pca_dim": pca, "pca_variance_kept": round(float(share[pca - 1]), 4)})


def _with_factory(params: dict) -> dict:
    return {**params, "factory": f"PCAR{params['pca_dim']},IVF{params['nlist']},PQ{params['pq_m']}x4fs"}


def normalized(vectors: np.ndarray, where: str = "vectors") -> np.ndarray:
    """float32 C-contiguous copy of ``vectors`` (n, d) scaled to unit length.

    Raises:
        BadInputError: not 2-d, not finite, or a zero vector.
    """
    x = np.array(vectors, dtype=np.float32, order="C", copy=True, ndmin=2)
    if x.ndim != 2:
        raise BadInputError(where, f"expected (n, d) vectors, got shape {np.shape(vectors)}.", "pass a 2-d array.")
    norms = np.linalg.norm(x, axis=1)
    if not np.isfinite(norms).all() or (norms == 0).any():
        bad = int((~np.isfinite(norms) | (norms == 0)).sum())
        raise BadInputError(where, f"{bad} of {len(x)} vectors are zero, NaN or infinite.",
                            "re-embed those frames (`aurora-pipeline embed --overwrite`).")
    x /= norms[:, None]
    return x


class VectorIndex:
    """A FAISS index of unit vectors keyed by int64 row numbers, with its parameters."""

    def __init__(self, index: faiss.Index, params: dict):
        self.index = index
        self.params = params

    @classmethod
    def create(cls, params: dict) -> "VectorIndex":
        """An empty index for ``params`` (from :func:`choose_params`); ``ivfpq`` needs ``train``."""
        if params.get("factory") is None:
            raise BadInputError("params", "the PCA dimension is not chosen yet.", "use VectorIndex.trained(params, sample).")
        if params.get("kind") not in KINDS:
            raise BadInputError("params", f"unknown index kind {params.get('kind')!r}.", f"use one of {KINDS}.")
        metric = faiss.METRIC_INNER_PRODUCT if params["metric"] == "inner_product" else faiss.METRIC_L2
        return cls(faiss.index_factory(params["d"], params["factory"], metric), params)

    @classmethod
    def trained(cls, params: dict, sample: np.ndarray) -> "VectorIndex":
        """An empty index for ``params`` completed from ``sample`` (:func:`complete_params`) and trained on it."""
        index = cls.create(complete_params(params, sample))
        index.train(sample)
        return index

    @property
    def kind(self) -> str:
        return self.params["kind"]

    @property
    def exact(self) -> bool:
        return self.kind == "exact"

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    def train(self, sample: np.ndarray) -> None:
        """Fit the PCA, the IVF centroids and the PQ codebooks on ``sample`` (m, d) unit vectors.

        Deterministic for a given sample (FAISS k-means seeded from ``params["seed"]``).
        A no-op for the exact kind.
        """
        if self.exact:
            return
        x = np.ascontiguousarray(sample, dtype=np.float32)
        ivf = faiss.extract_index_ivf(self.index)
        ivf.cp.seed = int(self.params["seed"])
        faiss.downcast_index(ivf).pq.cp.seed = int(self.params["seed"])
        if faiss.get_num_gpus() > 0:  # the expensive k-means on the GPU build's devices
            ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatL2(ivf.d))
        self.index.train(x)
        ivf.clustering_index = None

    def add(self, vectors: np.ndarray, first_row: int) -> None:
        """Add unit vectors (n, d) as rows ``first_row .. first_row + n - 1``."""
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if not self.is_trained:
            raise BadInputError("index", "is not trained yet.", "call train() on a sample first.")
        if len(x):
            self.index.add_with_ids(x, np.arange(first_row, first_row + len(x), dtype=np.int64))

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest rows of each query (q, d) unit vector.

        Args:
            allowed: None, or a bool array over row numbers (True = may be returned).
            nprobe: lists visited (ivfpq only); default the index's ``nprobe``.

        Returns:
            ``(scores, rows)``, both (q, k); scores approximate cosines (exact for the
            exact kind), rows -1 where fewer than k rows qualify.
        """
        x = np.ascontiguousarray(queries, dtype=np.float32)
        k = int(min(k, max(self.ntotal, 1)))
        selector, _keep = _selector(allowed)
        if self.exact:
            params = faiss.SearchParameters(sel=selector) if selector is not None else None
            scores, rows = self.index.search(x, k, params=params)
            return scores, rows
        ivf_params = faiss.SearchParametersIVF(nprobe=int(nprobe or self.params["nprobe"]))
        if selector is not None:
            ivf_params.sel = selector
        dist, rows = self.index.search(x, k, params=faiss.SearchParametersPreTransform(index_params=ivf_params))
        return (1.0 - dist / 2.0).astype(np.float32), rows  # |a - b|^2 = 2 - 2 cos for unit vectors

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, payload)`` sorted by row: what the index holds for each row.

        ``payload`` is (n, b) uint8: the float32 vector's bytes (exact kind) or the IVF
        list number (8 bytes) followed by the PQ code (ivfpq). Two indexes with equal
        contents answer every query alike.
        """
        if self.exact:
            rows = faiss.vector_to_array(self.index.id_map).astype(np.int64)
            flat = faiss.downcast_index(self.index.index)
            payload = faiss.vector_to_array(flat.codes).reshape(len(rows), -1)
        else:
            ivf = faiss.extract_index_ivf(self.index)
            invlists, packer = ivf.invlists, ivf.get_CodePacker()
            parts_rows, parts_payload = [], []
            for list_no in range(ivf.nlist):
                size = invlists.list_size(list_no)
                if not size:
                    continue
                parts_rows.append(faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy())
                n_blocks = -(-size // packer.nvec)
                blocks = faiss.rev_swig_ptr(invlists.get_codes(list_no), n_blocks * packer.block_size).copy()
                blocks = blocks.reshape(n_blocks, packer.block_size)
                codes = np.stack([packer.unpack_1(blocks, i) for i in range(size)])  # fast-scan codes are interleaved
                head = np.full((size, 1), list_no, dtype=np.int64).view(np.uint8)
                parts_payload.append(np.hstack([head, codes]))
            rows = np.concatenate(parts_rows) if parts_rows else np.empty(0, np.int64)
            width = 8 + packer.code_size
            payload = np.vstack(parts_payload) if parts_payload else np.empty((0, width), np.uint8)
        order = np.argsort(rows, kind="stable")
        return rows[order], payload[order]

    def trained_state(self) -> bytes:
        """The serialized trained parts with no vectors (PCA, centroids, codebooks)."""
        empty = faiss.clone_index(self.index)
        empty.reset()
        return faiss.serialize_index(empty).tobytes()

    def empty_copy(self) -> "VectorIndex":
        """The same trained index with no vectors (a rebuild that keeps the training)."""
        empty = faiss.clone_index(self.index)
        empty.reset()
        return VectorIndex(empty, dict(self.params))

    def bytes_per_vector(self) -> float:
        """Bytes the index holds per stored vector (codes + ids), training data excluded."""
        if self.exact:
            return float(self.params["d"] * 4 + 8)
        return float(faiss.extract_index_ivf(self.index).code_size + 8)

    def to_bytes(self) -> bytes:
        """The index as FAISS's own serialization (no pickle)."""
        return faiss.serialize_index(self.index).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, params: dict) -> "VectorIndex":
        return cls(faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8)), params)


def _selector(allowed: np.ndarray | None):
    """A FAISS bitmap selector over row numbers, and the array it points into (keep it alive)."""
    if allowed is None:
        return None, None
    mask = np.asarray(allowed, dtype=bool)
    bits = np.packbits(mask, bitorder="little")
    return faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits)), bits  # n counts bytes
