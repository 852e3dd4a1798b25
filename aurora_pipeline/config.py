"""Building the frozen per-stage config dataclasses from plain mappings.

Every stage's config (PreprocessConfig, PretrainConfig, EmbedConfig, ClassifierConfig,
ClusterConfig, SupervisedConfig, OathBenchmarkConfig) travels with its output as a
plain dict; ``config_from_dict`` turns one back into the dataclass and refuses keys the
dataclass does not have, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from aurora_pipeline.errors import BadInputError

T = TypeVar("T")
DEVICE_CHOICES = ("auto", "cpu", "cuda")  # the `device` setting of every stage that runs the encoder


def config_from_dict(cls: type[T], data: dict[str, Any], where: str | None = None) -> T:
    """``cls(**data)``, raising ``BadInputError`` that lists unknown keys and the known ones."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadInputError(where or cls.__name__, f"unknown setting(s) {unknown}.", f"use only {sorted(known)}.")
    return cls(**data)


def check_device_name(name: str) -> None:
    """Raise ``BadInputError`` unless ``name`` is auto, cpu, cuda or cuda:N (whatever this machine has)."""
    text = str(name).strip().lower()
    base, _, index = text.partition(":")
    if base not in DEVICE_CHOICES or (index and (base != "cuda" or not index.isdigit())):
        raise BadInputError("device", f"unknown device {name!r}.", f"use one of {', '.join(DEVICE_CHOICES)} (or cuda:N).")
