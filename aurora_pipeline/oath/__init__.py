"""The OATH labelled dataset (Clausen & Nickisch 2018): read it, fetch it, fake it.

    >>> from aurora_pipeline.oath import load_oath
    >>> ds = load_oath("data/oath")          # labels, 5 splits, images on demand
    >>> train, test = ds.split(0)

``download_oath`` (in :mod:`aurora_pipeline.oath.download`) fetches and unpacks the
release; ``write_synthetic_oath`` (in :mod:`aurora_pipeline.oath.synth`) writes a
stand-in in the same layout for tests and offline runs.
"""

import importlib

# Imported on first use, so that ``aurora_pipeline.oath.config`` (the settings the command
# line builds its options from) does not pull in pandas and the image readers.
_WHERE = {
    "CLASS_NAMES": "dataset", "OATH_CLASS_COUNTS": "dataset", "OathDataset": "dataset", "load_oath": "dataset",
    "verify_images": "dataset", "OATH_URL": "download", "download_oath": "download",
    "write_synthetic_oath": "synth",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


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
