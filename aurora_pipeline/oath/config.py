"""The OATH benchmark's settings: one frozen dataclass, the paper's run by default.

``aurora_pipeline.oath.protocol`` runs the benchmark with them; the report compares them
with the paper's (``aurora_pipeline.oath.report.changed_settings``).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aurora_pipeline.classify.config import ClassifierConfig
from aurora_pipeline.cluster.config import ClusterConfig
from aurora_pipeline.config import config_from_dict
from aurora_pipeline.encoder.config import PretrainConfig
from aurora_pipeline.errors import BadInputError


N_SPLITS = 5
SUPERVISED_EPOCHS_AT_100 = 30  # the supervised baseline's epochs beside the paper's 100 of pre-training


def scaled_supervised_epochs(epochs: int) -> int:
    """The supervised baseline's epochs for ``epochs`` of pre-training: 30 at the paper's 100."""
    return max(1, round(SUPERVISED_EPOCHS_AT_100 * epochs / 100))


@dataclass(frozen=True)
class OathBenchmarkConfig:
    # SimCLR pre-training, the paper's recipe (section III.C); lr 3e-4 and tau 0.5 are PretrainConfig's
    epochs: int = PretrainConfig.epochs    # paper: 100
    batch_size: int = PretrainConfig.batch_size  # paper: 128 (also the supervised model's batch)
    image_size: int = PretrainConfig.image_size  # side in pixels the 256 x 256 images are resized to (paper: unstated)
    seed: int = PretrainConfig.seed        # weights, batch order, augmentations, K-means, montages
    device: str = PretrainConfig.device    # "auto" (GPU if any), "cpu" or "cuda"
    mixed_precision: bool = PretrainConfig.mixed_precision  # bf16 autocast where the hardware does bf16
    num_threads: int | None = None         # torch CPU threads (None: torch's default)
    checkpoint: str | None = None          # a given encoder (import-encoder's, a pretrain run's): no pre-training;
                                           # images in its preprocessing setting, image_size its input size
    # the evaluation protocol (section III.D)
    splits: tuple[int, ...] = (0, 1, 2, 3, 4)  # rows of train_test_split.csv to evaluate on
    train_fraction: float = 0.7            # first 70% of a row trains (4,077), the rest tests (1,747)
    max_images_per_class: int | None = None  # keep this many images per class (quick runs); None: all
    classifier_C: float = ClassifierConfig.C  # inverse l2 strength of the logistic regressions (scikit-learn default)
    classifier_max_iter: int = ClassifierConfig.max_iter  # lbfgs iterations
    pixel_size: int = 32                   # side of the raw-pixel baseline's images (32 x 32 = 1,024 features)
    # the supervised ResNet18 (aurora_pipeline.oath.supervised; the paper gives no recipe)
    supervised: bool = True                # train it (the slowest part after pre-training)
    supervised_epochs: int | None = None   # None: 30 at 100 epochs (~960 Adam steps on 4,077 frames at batch
                                           # 128), scaled with `epochs`, so a quick run is quick throughout
    supervised_lr: float = 1e-3            # Adam, from random initialisation
    imagenet_weights: str | None = None    # torchvision resnet18 weights file; adds the ImageNet-initialised row
    imagenet_lr: float = 1e-4              # Adam, fine-tuning from ImageNet weights
    # clustering (section III.E)
    k_min: int = ClusterConfig.k_min       # paper: 3
    k_max: int = ClusterConfig.k_max       # paper: 15 (must be below the number of images)
    kmeans_n_init: int = ClusterConfig.n_init  # K-means restarts per k
    silhouette_sample: int = ClusterConfig.silhouette_sample  # rows the silhouette is computed on (all 5,824 of OATH)
    # figures
    confusion_split: int | None = None     # split whose confusion matrix is drawn; None: the first evaluated
    montage_per_group: int = 8             # images per row of the montages

    def __post_init__(self):
        object.__setattr__(self, "splits", parse_splits(self.splits))
        if self.supervised_epochs is None and isinstance(self.epochs, int) and not isinstance(self.epochs, bool):
            object.__setattr__(self, "supervised_epochs", scaled_supervised_epochs(self.epochs))
        for name in ("epochs", "batch_size", "image_size", "supervised_epochs", "classifier_max_iter",
                     "pixel_size", "kmeans_n_init", "silhouette_sample", "montage_per_group"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise BadInputError(name, f"must be a positive integer, got {value!r}.",
                                    f"use e.g. {getattr(OathBenchmarkConfig, name)}.")
        if self.max_images_per_class is not None and (
                isinstance(self.max_images_per_class, bool) or not isinstance(self.max_images_per_class, int)
                or self.max_images_per_class < 2):
            raise BadInputError("max_images_per_class", f"must be None or an integer >= 2, got {self.max_images_per_class!r}.",
                                "use None for the whole dataset.")
        if self.pixel_size > self.image_size:
            raise BadInputError("pixel_size", f"{self.pixel_size} exceeds image_size {self.image_size}.",
                                "use a pixel_size <= image_size, e.g. 32.")
        if not 0.0 < self.train_fraction < 1.0:
            raise BadInputError("train_fraction", f"must be in (0, 1), got {self.train_fraction!r}.", "use 0.7 as the paper.")
        if self.confusion_split is not None and self.confusion_split not in self.splits:
            raise BadInputError("confusion_split", f"{self.confusion_split!r} is not among the evaluated splits {self.splits}.",
                                "pick one of them, or None for the first.")
        # the stage configs check the rest (lr, device, C, k range...) and fail here, before any work
        for build in (self.pretrain_config, self.classifier_config, self.cluster_config):
            build()
        self.supervised_config(imagenet=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OathBenchmarkConfig":
        """Build from a plain dict (e.g. results.json's ``config``); unknown keys are an error."""
        return config_from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["splits"] = list(self.splits)
        return out

    @property
    def shown_split(self) -> int:
        """The split whose confusion matrix is drawn."""
        return self.splits[0] if self.confusion_split is None else self.confusion_split

    def pretrain_config(self):
        return PretrainConfig(epochs=self.epochs, batch_size=self.batch_size, seed=self.seed, image_size=self.image_size,
                              device=self.device, mixed_precision=self.mixed_precision, num_threads=self.num_threads)

    def supervised_config(self, imagenet: bool):
        from aurora_pipeline.oath.supervised import SupervisedConfig  # imports torch: only when a config is built

        return SupervisedConfig(epochs=self.supervised_epochs, batch_size=self.batch_size,
                                lr=self.imagenet_lr if imagenet else self.supervised_lr, image_size=self.image_size,
                                seed=self.seed, device=self.device, mixed_precision=self.mixed_precision,
                                imagenet_weights=self.imagenet_weights if imagenet else None,
                                num_threads=self.num_threads)

    def classifier_config(self):
        return ClassifierConfig(C=self.classifier_C, max_iter=self.classifier_max_iter, seed=self.seed)

    def cluster_config(self):
        return ClusterConfig(k_min=self.k_min, k_max=self.k_max, silhouette_sample=self.silhouette_sample,
                             n_init=self.kmeans_n_init, seed=self.seed)


def parse_splits(value: str | Sequence[int]) -> tuple[int, ...]:
    """Split rows from ``"0,1,2"`` or ``[0, 1, 2]``: distinct integers in 0..4, in the given order.

    Raises:
        BadInputError: empty, not integers, repeated, or outside 0..4.
    """
    fix = "give split rows 0..4, e.g. '0,1,2,3,4'."
    items = [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else list(value)
    try:
        out = tuple(int(v) for v in items if isinstance(v, (numbers.Integral, str)) and not isinstance(v, bool))
    except ValueError:
        raise BadInputError("splits", f"{value!r} holds a non-integer.", fix) from None
    if not out or len(out) != len(items) or len(set(out)) != len(out) or not all(0 <= s < N_SPLITS for s in out):
        raise BadInputError("splits", f"{value!r} is not a list of distinct rows in 0..{N_SPLITS - 1}.", fix)
    return out
