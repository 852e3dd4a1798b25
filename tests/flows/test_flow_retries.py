"""The nightly flow's tasks retry transient errors but not errors a user must fix."""

import pytest
from prefect import flow, task

from aurora_pipeline.errors import BadInputError
from flows._retry import RETRY

calls = {"user": 0, "transient": 0}


@task(**{**RETRY, "retry_delay_seconds": 0})
def user_error():
    calls["user"] += 1
    raise BadInputError("checkpoint", "no SimCLR checkpoint found", "pass the run directory")


@task(**{**RETRY, "retry_delay_seconds": 0})
def flaky():
    calls["transient"] += 1
    if calls["transient"] < 3:
        raise ConnectionError("connection reset by peer")
    return "ok"


@flow
def run_both():
    assert flaky() == "ok"
    user_error()


def test_user_errors_are_not_retried_and_io_errors_are():
    with pytest.raises(BadInputError):
        run_both()
    assert calls == {"user": 1, "transient": 3}
