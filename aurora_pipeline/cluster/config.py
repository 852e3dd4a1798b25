"""The clustering's settings (``ClusterConfig``), light to import (no numpy, no scikit-learn).

:mod:`aurora_pipeline.cluster.model` runs K-means and the silhouette scan and re-exports the class.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from aurora_pipeline.config import config_from_dict
from aurora_pipeline.errors import BadInputError


@dataclass(frozen=True)
class ClusterConfig:
    k_min: int = 3                  # smallest k tried (paper: 3)
    k_max: int = 15                 # largest k tried, inclusive (paper: 15)
    silhouette_sample: int = 10000  # silhouette on at most this many random rows (O(n^2) otherwise)
    n_init: int = 10                # K-means restarts per k; the best inertia is kept
    seed: int = 0                   # K-means initialisation and the silhouette sample
    max_iter: int = 300             # K-means iterations per restart
    minibatch_rows: int = 200_000   # above this many rows, MiniBatchKMeans instead of KMeans

    def __post_init__(self):
        for name in ("k_min", "k_max", "silhouette_sample", "n_init", "max_iter", "minibatch_rows"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise BadInputError(name, f"must be a positive integer, got {value!r}", "see ClusterConfig defaults")
        if self.k_min < 2:
            raise BadInputError("k_min", f"must be at least 2 (silhouette needs two clusters), got {self.k_min}",
                                "use 3 as in the paper")
        if self.k_max < self.k_min:
            raise BadInputError("k_max", f"must be >= k_min ({self.k_min}), got {self.k_max}", "use 15 as in the paper")
        if self.silhouette_sample <= self.k_max:
            raise BadInputError("silhouette_sample", f"must exceed k_max ({self.k_max}), got {self.silhouette_sample}",
                                "use 10000")

    @classmethod
    def from_dict(cls, values: dict) -> "ClusterConfig":
        """Build from a mapping (e.g. parsed YAML); unknown keys are refused."""
        return config_from_dict(cls, values)
