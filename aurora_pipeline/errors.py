"""Exceptions raised by the library.

Every error a user can cause names the offending file or value and says how to fix
it. Flows catch ``BadInputError`` per file, record it in the store's failures table
and carry on with the other files.
"""

from __future__ import annotations


class AuroraError(Exception):
    """Base class for every error raised on purpose by aurora-pipeline."""


class BadInputError(AuroraError):
    """An input file or value is unusable.

    Attributes:
        source: the file, URL or parameter the problem was found in.
        problem: what is wrong, in one sentence.
        fix: what the user can do about it.
    """

    def __init__(self, source: str, problem: str, fix: str = ""):
        self.source = str(source)
        self.problem = problem
        self.fix = fix
        message = f"{self.source}: {problem}"
        if fix:
            message += f" Fix: {fix}"
        super().__init__(message)

    def __reduce__(self):  # keep the fields when the error crosses a Dask worker
        return (type(self), (self.source, self.problem, self.fix))


class StoreError(AuroraError):
    """The Zarr store is not in the state an operation needs (refused to overwrite, mixed models...)."""


class NoStoreError(StoreError):
    """No store exists at the path or URL (opened for reading before any ingest made one)."""


class CheckpointError(AuroraError):
    """A checkpoint or saved classifier is truncated, foreign or does not match."""
