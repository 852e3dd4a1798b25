"""The OATH labelled dataset (Clausen & Nickisch 2018): read it, fetch it, fake it.

    >>> from aurora_pipeline.oath import load_oath
    >>> ds = load_oath("data/oath")          # labels, 5 splits, images on demand
    >>> train, test = ds.split(0)

``download_oath`` (in :mod:`aurora_pipeline.oath.download`) fetches and unpacks the
release; ``write_synthetic_oath`` (in :mod:`aurora_pipeline.oath.synth`) writes a
stand-in in the same layout for tests and offline runs.
"""

from aurora_pipeline.oath.dataset import CLASS_NAMES, OATH_CLASS_COUNTS, OathDataset, load_oath, verify_images
from aurora_pipeline.oath.download import OATH_URL, download_oath
from aurora_pipeline.oath.synth import write_synthetic_oath

__all__ = [
    "CLASS_NAMES",
    "OATH_CLASS_COUNTS",
    "OATH_URL",
    "OathDataset",
    "download_oath",
    "load_oath",
    "verify_images",
    "write_synthetic_oath",
]
