"""Similarity search over the whole labelled archive: "frames like this one".

The model code, then its store driver, as in the other stage packages:

    config.py   IndexConfig, QueryConfig (the defaults; no FAISS import)
    index.py    VectorIndex: FAISS exact or PCA + IVF + 4-bit PQ fast-scan, parameters from n
    catalog.py  rows <-> frames (one line per hour), label bytes for the filters
    saved.py    the index beside the store, without pickle (FAISS bytes + npz + JSON sidecar)
    driver.py   build_index / update_index / index_store from the store's embeddings
    query.py    similar(): approximate search, exact re-rank from the store, filters, merging
    montage.py  the answer as CSV + montage PNG

    >>> from aurora_pipeline.search import index_store, similar
    >>> index_store("store.zarr")                      # build, or update (new, late, re-embedded hours)
    >>> similar("store.zarr", site="gako", time="2011-01-06T04:12:03", k=20, label="arc")

Attributes are imported on first use, so ``import aurora_pipeline.search.config`` stays
free of FAISS.
"""

import importlib

_EXPORTS = {
    "IndexConfig": "config", "QueryConfig": "config", "build_index": "driver", "update_index": "driver",
    "index_store": "driver", "similar": "query", "open_index": "query", "find_similar": "query",
    "make_query": "query",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"aurora_pipeline.search.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'aurora_pipeline.search' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
