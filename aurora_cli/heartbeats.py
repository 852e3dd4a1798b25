"""Flow-run heartbeats of the runs a command makes itself: off, unless the user asks for them.

Prefect 3.8 emits a heartbeat event from a thread beside every flow run
(``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, 180 s by default). That thread sleeps in 1 s
steps, and a run joins it before it returns: every run waits 0 to 1 s (0.5 s on average)
after its work is done. An empty flow takes 1.07 s with the heartbeat and 0.075 s without
it; an `aurora-pipeline` command paid that wait once per command.

Heartbeats feed Prefect's detection of "zombie" runs (an automation marks a run Crashed
when its heartbeats stop), which Prefect documents for flow runs triggered by deployments.
Those (the nightly ``label-archive``, ``oath-benchmark``, ... of ``deployments/prefect.yaml``)
run in a Prefect worker or runner, not through this module, and keep their heartbeats. A
command typed in a terminal reports its own end. Whoever wants heartbeats from commands too
sets ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` (environment, Prefect profile or ``prefect.toml``),
as Prefect's guide to zombie detection says; a setting the user made is never overridden.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_QUIET: list = []  # [(Prefect settings, the same with heartbeats off)]: made once (the warm runner, before it forks)


def user_set_heartbeats(settings) -> bool:
    """True when the user set the heartbeat frequency, in any of Prefect's sources."""
    return "heartbeat_frequency" in settings.flows.model_fields_set


def settings_without_heartbeats(settings):
    """``settings`` (Prefect's) with flow-run heartbeats off; the same object for the same ``settings``."""
    # Prefect: only for a command that runs a flow (aurora_cli.main keeps its import off the others)
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

    if not _QUIET or _QUIET[0][0] is not settings:
        _QUIET[:] = [(settings, settings.copy_with_update(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))]
    return _QUIET[0][1]


@contextlib.contextmanager
def command_heartbeats() -> Iterator[bool]:
    """Within: the flow runs of this process emit heartbeats only if the user set their frequency.

    Yields whether they do.
    """
    # as above
    from prefect.context import SettingsContext, get_settings_context

    current = get_settings_context()
    if user_set_heartbeats(current.settings):
        yield current.settings.flows.heartbeat_frequency is not None
        return
    # what prefect.settings.temporary_settings does, with the settings made once
    with SettingsContext(profile=current.profile, settings=settings_without_heartbeats(current.settings)):
        yield False
