"""Settings of the similarity index and of its queries: one frozen dataclass each.

Kept apart from the FAISS code so that the command line can build its options from
these defaults without importing FAISS.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from aurora_pipeline.config import config_from_dict
from aurora_pipeline.errors import BadInputError


def _positive(name: str, value, default, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise BadInputError(name, f"must be a positive integer{' or None' if allow_none else ''}, got {value!r}.",
                            f"use the default {default!r}.")


@dataclass(frozen=True)
class IndexConfig:
    exact_below: int = 100_000   # fewer vectors than this: exact search (2 KiB a vector, no training)
    nlist: int | None = None     # IVF lists; None: a power of two near sqrt(n), 64..262144
    nprobe: int | None = None    # lists visited per query; None: nlist / 64, 8..256
    pca_dim: int | None = None   # rotation-PCA output dims (a multiple of pq_m); None: from the training sample
    pca_variance: float = 0.95   # with pca_dim None: the fewest multiples of pq_m holding this share of variance
    pq_m: int = 96               # 4-bit PQ sub-quantizers (even): pq_m / 2 code bytes a vector
    train_per_list: int = 64     # training vectors per IVF list (FAISS wants at least 39)
    max_train: int = 262_144     # at most this many training vectors
    seed: int = 0                # training sample and k-means seeds

    def __post_init__(self):
        for name in ("exact_below", "pq_m", "train_per_list", "max_train"):
            _positive(name, getattr(self, name), getattr(IndexConfig, name))
        for name in ("nlist", "nprobe", "pca_dim"):
            _positive(name, getattr(self, name), None, allow_none=True)
        if self.pq_m % 2 or (self.pca_dim is not None and self.pca_dim % self.pq_m):
            raise BadInputError("pq_m", f"{self.pq_m} must be even and divide pca_dim={self.pca_dim}.",
                                "use e.g. pca_dim=192 with pq_m=96 (48 code bytes), or leave pca_dim None.")
        if not 0.0 < self.pca_variance <= 1.0:
            raise BadInputError("pca_variance", f"must be in (0, 1], got {self.pca_variance!r}.", "use 0.95.")

    @classmethod
    def from_dict(cls, data: dict) -> "IndexConfig":
        """Build from a plain dict; unknown keys are an error."""
        return config_from_dict(cls, data)


@dataclass(frozen=True)
class QueryConfig:
    k: int = 20                   # frames returned
    oversample: int = 20          # candidates re-ranked exactly: k * oversample (see BENCHMARKS.md)
    min_separation: str = "30s"   # frames of one site closer in time are one event: the best is kept
    nprobe: int | None = None     # IVF lists visited; None: the index's own

    def __post_init__(self):
        _positive("k", self.k, 20)
        _positive("oversample", self.oversample, 20)
        _positive("nprobe", self.nprobe, None, allow_none=True)

    @classmethod
    def from_dict(cls, data: dict) -> "QueryConfig":
        """Build from a plain dict; unknown keys are an error."""
        return config_from_dict(cls, data)
