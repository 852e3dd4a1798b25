"""What the command line prints when a flow fails because of the user's input.

Prefect's task and flow engines log a failed run several times (the task's failure,
the flow's exception with a traceback, each engine's "Finished in state Failed"). For
an error the user caused (an :class:`~aurora_pipeline.errors.AuroraError`) that is
noise: the command prints the message once, itself. :func:`hide_user_errors_on_console`
keeps those records off the terminal only; Prefect's API log handler still sends them
to the server, so the UI shows the failed task with its message and traceback.
"""

from __future__ import annotations

import logging
import re

from aurora_pipeline.errors import AuroraError


def _error_names() -> set[str]:
    names, todo = set(), [AuroraError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


class HideUserErrors(logging.Filter):
    """Drops records about an AuroraError: with one as ``exc_info``, or whose message
    quotes one the way Prefect's state messages do (``BadInputError: ...``, ``BadInputError('...')``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], AuroraError):
            return False
        if record.levelno < logging.INFO or not record.name.startswith("prefect"):
            return True
        pattern = r"\b(?:%s)(?::|\(')" % "|".join(sorted(_error_names()))
        return re.search(pattern, record.getMessage()) is None


def hide_user_errors_on_console() -> None:
    """Attach :class:`HideUserErrors` to Prefect's console handlers, configuring Prefect's logging
    first if it is not yet (a later configuration by Prefect is incremental and keeps them)."""
    # prefect: only for a command that runs a flow
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()

    loggers = [logging.getLogger(), *(v for v in list(logging.root.manager.loggerDict.values())
                                      if isinstance(v, logging.Logger))]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler) and not any(
                    isinstance(f, HideUserErrors) for f in handler.filters):
                handler.addFilter(HideUserErrors())
