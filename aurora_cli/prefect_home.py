"""Where Prefect keeps its state: the one place the local server and the warm runner agree on."""

from __future__ import annotations

import os
from pathlib import Path


def prefect_home(environ: dict | None = None) -> Path:
    """The Prefect home Prefect itself will use: ``$PREFECT_HOME`` or ``~/.prefect``."""
    env = os.environ if environ is None else environ
    return Path(env.get("PREFECT_HOME") or "~/.prefect").expanduser()
