"""The embedding stage's settings (``EmbedConfig``), without torch.

The command line builds ``embed``'s options from these fields; ``aurora_pipeline.embed.model``
runs the encoder with them.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from aurora_pipeline.config import check_device_name, config_from_dict
from aurora_pipeline.errors import BadInputError

OUTPUT_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class EmbedConfig:
    batch_size: int = 512         # frames per forward pass (bounds device memory, not results)
    device: str = "auto"          # "auto" (GPU if any), "cpu" or "cuda"
    mixed_precision: bool = True  # bf16 autocast where the hardware does bf16 natively
    dtype: str = "float32"        # dtype of the returned embeddings: float32 or float16

    def __post_init__(self):
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, numbers.Integral) or self.batch_size < 1:
            raise BadInputError("batch_size", f"must be a positive integer, got {self.batch_size!r}.", "use 512.")
        if self.dtype not in OUTPUT_DTYPES:
            raise BadInputError("dtype", f"unsupported embedding dtype {self.dtype!r}.", f"use one of {OUTPUT_DTYPES}.")
        check_device_name(self.device)

    @classmethod
    def from_dict(cls, data: dict) -> "EmbedConfig":
        """Build from a plain dict; unknown keys are an error."""
        return config_from_dict(cls, data)
