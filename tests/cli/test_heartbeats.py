"""A command's own flow runs: no heartbeat thread to wait for, unless the user set its frequency.

tests/cli/test_cli.py checks the same end to end: the events a real server stores for the
runs of two `aurora-pipeline` commands, one with the frequency set and one without.
"""

from __future__ import annotations

from prefect import flow
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

from aurora_cli.heartbeats import command_heartbeats, settings_without_heartbeats


@flow
def _frequency_in_a_run():
    return get_current_settings().flows.heartbeat_frequency


def test_a_commands_runs_have_no_heartbeats_by_default():
    assert get_current_settings().flows.heartbeat_frequency == 180  # Prefect's default, here as for a user
    with command_heartbeats() as beating:
        assert beating is False
        assert _frequency_in_a_run() is None
    assert get_current_settings().flows.heartbeat_frequency == 180  # only within


def test_the_users_own_frequency_is_kept():
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 45}):
        with command_heartbeats() as beating:
            assert beating is True
            assert _frequency_in_a_run() == 45


def test_the_settings_without_heartbeats_are_made_once_for_the_same_settings():
    # the warm runner makes them before it forks; each command's child then reuses them
    settings = get_current_settings()
    quiet = settings_without_heartbeats(settings)
    assert settings_without_heartbeats(settings) is quiet
    assert quiet.flows.heartbeat_frequency is None and quiet.api.url == settings.api.url
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 60}) as other:
        assert settings_without_heartbeats(other) is not quiet
