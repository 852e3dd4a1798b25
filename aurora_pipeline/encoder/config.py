"""The encoder's settings: SimCLR pre-training (``PretrainConfig``) and its augmentations.

Frozen dataclasses with the paper's recipe as defaults, one commented line per setting.
This module imports no torch, so the command line builds its options from these fields
without paying torch's import; ``aurora_pipeline.encoder.train`` and ``.augment`` use them.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

from aurora_pipeline.config import check_device_name, config_from_dict
from aurora_pipeline.errors import BadInputError


def check_temperature(temperature: float) -> None:
    """Raise ``BadInputError`` unless tau is a finite number > 0."""
    is_number = isinstance(temperature, numbers.Real) and not isinstance(temperature, bool)
    if not is_number or not math.isfinite(temperature) or temperature <= 0:
        raise BadInputError(
            "temperature",
            f"the NT-Xent temperature must be a finite number > 0, got {temperature!r}.",
            "use the paper's 0.5.",
        )


@dataclass(frozen=True)
class AugmentConfig:
    crop_scale: tuple[float, float] = (0.08, 1.0)    # crop area as a fraction of the frame (SimCLR/torchvision default; paper: unstated)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio width/height, drawn log-uniform
    flip_top_bottom: float = 0.5                      # probability of the paper's flip over the horizontal axis
    brightness: float = 0.0                           # off; b > 0 multiplies a view by U(1-b, 1+b)
    contrast: float = 0.0                             # off; c > 0 scales deviations from the view's mean by U(1-c, 1+c)
    rotation_degrees: float = 0.0                     # off; d > 0 rotates a view by U(-d, d) degrees (zeros fill the corners)
    blur_sigma: float = 0.0                           # off; s > 0 blurs with a Gaussian of sigma U(0.1, s) pixels
    blur_probability: float = 0.5                     # share of views blurred when blur_sigma > 0 (SimCLR: 0.5)

    def __post_init__(self):
        lo, hi = _pair(self, "crop_scale")
        if not 0.0 < lo <= hi <= 1.0:
            raise BadInputError("crop_scale", f"need 0 < low <= high <= 1, got {self.crop_scale}.", "use (0.08, 1.0).")
        lo, hi = _pair(self, "crop_ratio")
        if not 0.0 < lo <= hi:
            raise BadInputError("crop_ratio", f"need 0 < low <= high, got {self.crop_ratio}.", "use (0.75, 1.3333).")
        for name in ("flip_top_bottom", "blur_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise BadInputError(name, f"is a probability, got {getattr(self, name)}.", "use a value in [0, 1].")
        for name, limit in (("brightness", 1.0), ("contrast", 1.0), ("rotation_degrees", 180.0), ("blur_sigma", 50.0)):
            value = getattr(self, name)
            if not 0.0 <= value <= limit:
                raise BadInputError(name, f"must be in [0, {limit}], got {value}.", "use 0 to switch it off.")
        if 0.0 < self.blur_sigma < 0.1:
            raise BadInputError("blur_sigma", f"the largest sigma must be >= 0.1 pixel, got {self.blur_sigma}.", "use 0 (off) or e.g. 1.5.")


def _pair(cfg: AugmentConfig, name: str) -> tuple[float, float]:
    value = tuple(getattr(cfg, name))
    if len(value) != 2:
        raise BadInputError(name, f"must be a (low, high) pair, got {value!r}.", "give two numbers.")
    object.__setattr__(cfg, name, (float(value[0]), float(value[1])))  # lists from JSON become tuples
    return value


@dataclass(frozen=True)
class PretrainConfig:
    epochs: int = 100                   # paper: 100
    batch_size: int = 128               # frames per step, so 2 x 128 views (paper: 128)
    lr: float = 3e-4                    # Adam, fixed learning rate (paper: 0.0003)
    weight_decay: float = 0.0           # paper: none
    temperature: float = 0.5            # tau of eq. 2 (paper: 0.5)
    seed: int = 0                       # initial weights, batch order and augmentations
    image_size: int = 128               # frames are resized to this side (pixels) on the device
    device: str = "auto"                # "auto" (GPU if any), "cpu" or "cuda"
    mixed_precision: bool = True        # bf16 autocast where the hardware does bf16 natively
    projection_hidden_dim: int = 512    # rows of W1 in g(h)
    projection_dim: int = 128           # length of z = g(h)
    augment: AugmentConfig = AugmentConfig()  # crop + top-bottom flip; extras off
    num_threads: int | None = None      # torch CPU threads (None: leave torch's setting)
    log_every: int = 10                 # steps between progress reports
    keep_checkpoints: int = 2           # epoch checkpoints kept on disk besides final/ (0: all)

    def __post_init__(self):
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", config_from_dict(AugmentConfig, self.augment, "augment"))
        for name in ("epochs", "batch_size", "image_size", "projection_hidden_dim", "projection_dim", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise BadInputError(name, f"must be a positive integer, got {value!r}.", f"use e.g. {getattr(PretrainConfig, name)}.")
        if self.batch_size < 2:
            raise BadInputError("batch_size", "must be >= 2: NT-Xent needs other frames as negatives.", "use 128.")
        if not 32 <= self.image_size <= 512:
            raise BadInputError("image_size", f"must be in 32..512 pixels (ResNet18 needs 32; THEMIS frames are 256), "
                                f"got {self.image_size}.", "use 128, or leave it out to train at the store's size.")
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise BadInputError("lr/weight_decay", f"need lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}.", "use 3e-4 and 0.")
        check_temperature(self.temperature)
        if self.num_threads is not None and self.num_threads < 1:
            raise BadInputError("num_threads", f"must be None or >= 1, got {self.num_threads}.", "use None.")
        if isinstance(self.keep_checkpoints, bool) or not isinstance(self.keep_checkpoints, numbers.Integral) or self.keep_checkpoints < 0:
            raise BadInputError("keep_checkpoints", f"must be an integer >= 0, got {self.keep_checkpoints!r}.", "use 2 (0 keeps all).")
        check_device_name(self.device)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PretrainConfig":
        """Build from a plain dict (e.g. a sidecar's ``config``); unknown keys are an error."""
        return config_from_dict(cls, data, "PretrainConfig")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
