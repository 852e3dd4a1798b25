"""The linear classifier's settings (``ClassifierConfig``), light to import (no numpy, no scikit-learn).

:mod:`aurora_pipeline.classify.model` fits and applies the classifier and re-exports the class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from aurora_pipeline.config import config_from_dict
from aurora_pipeline.errors import BadInputError


@dataclass(frozen=True)
class ClassifierConfig:
    """Settings of the linear classifier. The penalty is always l2 (as in the paper), so
    it is not a setting; the solver is lbfgs, multinomial (softmax) for more than two classes."""

    C: float = 1.0            # inverse l2 strength (scikit-learn's C); 1.0 is scikit-learn's default, which the paper used
    max_iter: int = 2000      # lbfgs iterations; scikit-learn's 100 stops short on 512-d embeddings
    standardize: bool = True  # z-score each feature with the training rows' mean and std (saved with the model)
    cv_folds: int = 5         # stratified folds in cross_validate (paper: 5)
    seed: int = 0             # shuffles the folds

    def __post_init__(self):
        if not (isinstance(self.C, (int, float)) and math.isfinite(self.C) and self.C > 0):
            raise BadInputError("C", f"must be a positive number, got {self.C!r}", "use 1.0 (smaller = stronger l2)")
        if not (isinstance(self.max_iter, int) and self.max_iter >= 1):
            raise BadInputError("max_iter", f"must be a positive integer, got {self.max_iter!r}", "use 2000")
        if not isinstance(self.standardize, bool):
            raise BadInputError("standardize", f"must be true or false, got {self.standardize!r}", "use true")
        if not (isinstance(self.cv_folds, int) and self.cv_folds >= 2):
            raise BadInputError("cv_folds", f"must be an integer >= 2, got {self.cv_folds!r}", "use 5 as in the paper")

    @classmethod
    def from_dict(cls, values: dict) -> "ClassifierConfig":
        """Build from a mapping (e.g. parsed YAML); unknown keys are refused."""
        return config_from_dict(cls, values)
