"""Retry policy shared by the flows: retry I/O hiccups, not errors a user must fix."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE

from aurora_pipeline.errors import AuroraError


def transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: False for our own errors (a bad checkpoint, a refused
    overwrite, an archive that is not one), True for anything else (network, throttling)."""
    try:
        state.result()
    except AuroraError:
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return True


RETRY = dict(retries=3, retry_delay_seconds=[10, 60, 300], retry_condition_fn=transient, cache_policy=NO_CACHE)
