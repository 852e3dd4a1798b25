"""Synthetic THEMIS-like data: sky scenes (:mod:`.scenes`) and CDF archives (:mod:`.archive`).

Used by tests, demos and scale benchmarks so that the pipeline runs offline.
"""
