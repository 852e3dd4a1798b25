"""aurora-pipeline: label THEMIS all-sky-imager frames with a self-supervised SimCLR encoder.

The library is plain Python (no Prefect import). The two entry points most users need:

    >>> import aurora_pipeline
    >>> ds = aurora_pipeline.open_site("store.zarr", "gako", start="2011-01-06T04", end="2011-01-06T06")
    >>> both = aurora_pipeline.open_sites("store.zarr", ["gako", "gill"])
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aurora-pipeline")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"


def __getattr__(name):  # lazy, so `import aurora_pipeline` stays cheap (no torch, no zarr)
    if name in ("open_site", "open_sites", "read_inventory"):
        # lazy: `import aurora_pipeline` stays free of xarray/zarr (the store)
        from aurora_pipeline.store import read

        return getattr(read, name)
    if name == "keogram":
        # lazy, as above: the keogram pulls in the store
        from aurora_pipeline.keograms import keogram

        return keogram
    if name == "label_events":
        # lazy, as above: events pull in the store and pandas
        from aurora_pipeline.events import label_events

        return label_events
    if name == "occurrence":
        # lazy, as above: occurrence pulls in the store and dask
        from aurora_pipeline.occurrence import occurrence

        return occurrence
    if name == "similar":
        # lazy, as above: the search pulls in FAISS
        from aurora_pipeline.search.query import similar

        return similar
    raise AttributeError(f"module 'aurora_pipeline' has no attribute {name!r}")


__all__ = ["__version__", "keogram", "label_events", "occurrence", "open_site", "open_sites", "read_inventory",
           "similar"]
