"""The command line's Prefect server: `aurora-pipeline server start|stop|status`, and which API a command uses.

Every `aurora-pipeline` command that runs a flow needs a Prefect API. It gets one of:

1. the user's own: ``PREFECT_API_URL`` in the environment or in the active Prefect
   profile (``prefect config set PREFECT_API_URL=...``) is used as it is;
2. the long-lived local server of ``aurora-pipeline server start``, when it is up: a
   real ``prefect server start`` on 127.0.0.1, with its SQLite database in the user's
   Prefect home (``$PREFECT_HOME``, default ``~/.prefect``). The command then pays no
   server start-up, and its runs stay in the UI;
3. otherwise Prefect's temporary ("ephemeral") server, which Prefect starts for this
   one command and stops at its end. Its first start on a new Prefect home creates the
   database, which takes far longer than Prefect's 20 s start-up timeout on a slow
   machine, so a command that finds no timeout set gives it :data:`EPHEMERAL_STARTUP_TIMEOUT_S`.

Nothing here imports Prefect: the choice is made, and written into ``os.environ``,
before Prefect reads its settings. The server's state (pid, port, log path) is the JSON
file ``$PREFECT_HOME/aurora-pipeline-server.json``; its output goes to
``$PREFECT_HOME/aurora-pipeline-server.log``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from aurora_pipeline.errors import BadInputError
from aurora_cli import command_runner
from aurora_cli.prefect_home import prefect_home

STATE_FILE = "aurora-pipeline-server.json"
LOG_FILE = "aurora-pipeline-server.log"
DEFAULT_PORT = 4200                 # Prefect's own default port, where its docs send the UI
EPHEMERAL_STARTUP_TIMEOUT_S = 900   # a first start (database migrations) on a busy 2-core machine: minutes
SERVER_STARTUP_TIMEOUT_S = 900      # how long `server start` waits for /api/health
RUNNER_STARTUP_TIMEOUT_S = 300     # the runner's imports (~5 s quiet) on a busy machine
HEALTH_TIMEOUT_S = 2.0              # one health probe of a server that should already be up


@dataclass(frozen=True)
class ServerState:
    """What `server start` recorded about the server it started."""

    pid: int
    port: int
    api_url: str     # "http://127.0.0.1:<port>/api"
    log: str         # the server's output
    started: str     # ISO 8601 UTC
    runner_pid: int | None = None   # the warm command runner (aurora_cli/command_runner.py), when started


def state_path(environ: dict | None = None) -> Path:
    return prefect_home(environ) / STATE_FILE


def read_state(environ: dict | None = None) -> ServerState | None:
    """The recorded server, or None when there is none (or the file is unreadable)."""
    try:
        return ServerState(**json.loads(state_path(environ).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def is_healthy(api_url: str, timeout: float = HEALTH_TIMEOUT_S) -> bool:
    """True when ``GET <api_url>/health`` answers 200 within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


# read-only queries of what a command's first flow run makes the server do (its database, its models)
WARM_UP_QUERIES = ("flows/filter", "flow_runs/filter", "task_runs/filter", "events/filter")


def warm_up_server(api_url: str) -> int:
    """Ask a new server the queries of ``WARM_UP_QUERIES``; returns how many it answered.

    A new server's first answers cost it ~0.5 s of CPU, which the first command after `server
    start` paid beside its own work on the same cores (a one-file ingest 1.64 s, the next ones
    1.03 s; after this warm-up the first one too). Only an optimisation: a failure here is left to
    the command that uses the server to find.
    """
    answered = 0
    for query in WARM_UP_QUERIES:
        request = urllib.request.Request(f"{api_url}/{query}", data=b'{"limit": 1}', method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
                answered += response.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return answered
    return answered


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_server(pid: int) -> bool:
    """The pid runs `prefect server start` (not a process that reused a dead server's pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _alive(pid)  # no /proc (macOS): trust the recorded pid
    return b"prefect" in cmdline and b"server" in cmdline and b"start" in cmdline


def running_server(environ: dict | None = None) -> ServerState | None:
    """The server of `server start`, if its process is alive and its API answers."""
    state = read_state(environ)
    if state is None or not _alive(state.pid) or not _is_our_server(state.pid):
        return None
    return state if is_healthy(state.api_url) else None


def _profile_sets_api_url(environ: dict) -> bool:
    """True when the active Prefect profile sets PREFECT_API_URL (``prefect config set``)."""
    path = Path(environ.get("PREFECT_PROFILES_PATH") or prefect_home(environ) / "profiles.toml").expanduser()
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    active = environ.get("PREFECT_PROFILE") or profiles.get("active")
    settings = profiles.get("profiles", {}).get(active, {}) if active else {}
    return bool(settings.get("PREFECT_API_URL"))


def choose_api(environ: dict | None = None) -> str:
    """Decide which Prefect API this process uses (see the module docstring) and set ``environ``.

    Call before Prefect is imported. Returns one of ``"configured"``, ``"local-server"``
    or ``"temporary"``.
    """
    env = os.environ if environ is None else environ
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # Prefect's usage reports stay off
    env.setdefault("DO_NOT_TRACK", "1")                          # unless the user turns them on
    if env.get("PREFECT_API_URL") or _profile_sets_api_url(env):
        return "configured"
    server = running_server(env)
    if server is not None:
        env["PREFECT_API_URL"] = server.api_url
        return "local-server"
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_STARTUP_TIMEOUT_S))
    return "temporary"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _log_tail(path: str, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_server(port: int = DEFAULT_PORT, timeout: float = SERVER_STARTUP_TIMEOUT_S,
                 progress=None) -> tuple[ServerState, bool]:
    """Start ``prefect server start --host 127.0.0.1 --port PORT`` in the background and wait
    until its API answers. Returns ``(state, started)``; ``started`` is False when the
    server of an earlier `server start` was already up (nothing is started then).

    Raises:
        BadInputError: the port is taken by something else, or the server exited or did
            not answer within ``timeout`` seconds (the message has its log's tail).
    """
    running = running_server()
    if running is not None:
        return start_runner(running, progress), False
    if not 1 <= port <= 65535:
        raise BadInputError("--port", f"{port} is not a TCP port", "use a port between 1024 and 65535, e.g. 4200")
    if not _port_free(port):
        url = f"http://127.0.0.1:{port}/api"
        hint = (f"a Prefect server already answers at {url}: use it with `export PREFECT_API_URL={url}`, "
                "or start ours on another port with --port" if is_healthy(url)
                else "stop what listens there, or start the server on another port with --port")
        raise BadInputError(f"port {port}", "is already in use on 127.0.0.1", hint)
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    log = home / LOG_FILE
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
           "PREFECT_CLI_PROMPT": "false", "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=home,
            start_new_session=True,  # survives the terminal that started it; stopped by `server stop`
        )
    state = ServerState(pid=process.pid, port=port, api_url=f"http://127.0.0.1:{port}/api", log=str(log),
                        started=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    state_path().write_text(json.dumps(asdict(state), indent=2))
    deadline, said = time.monotonic() + timeout, False
    while time.monotonic() < deadline:
        if process.poll() is not None:
            state_path().unlink(missing_ok=True)
            raise BadInputError("prefect server", f"exited with code {process.returncode} while starting; "
                                f"last lines of {log}:\n{_log_tail(str(log))}",
                                "fix what the log says, then run `aurora-pipeline server start` again")
        if is_healthy(state.api_url):
            warm_up_server(state.api_url)
            return start_runner(state, progress), True
        if not said and progress is not None and time.monotonic() > deadline - timeout + 5:
            progress(f"waiting for the Prefect server on port {port} (a first start creates its database; "
                     "this can take minutes)...")
            said = True
        time.sleep(0.5)
    stop_server()
    raise BadInputError("prefect server", f"did not answer at {state.api_url}/health within {timeout:.0f} s; "
                        f"last lines of {log}:\n{_log_tail(str(log))}", "try again on a less busy machine")


def stop_server(timeout: float = 30.0) -> ServerState | None:
    """Stop the server of `server start` (SIGTERM, then SIGKILL after ``timeout`` s) and forget it.

    Returns its state, or None when none was recorded or its process had already gone.
    """
    state = read_state()
    if state is None:
        return None
    stopped = None
    stop_runner(state)
    if _alive(state.pid) and _is_our_server(state.pid):
        _terminate(state.pid, timeout)
        stopped = state
    state_path().unlink(missing_ok=True)
    return stopped


def _is_our_runner(pid: int | None) -> bool:
    if not pid or not _alive(pid):
        return False
    try:
        return b"aurora_cli.command_runner" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def start_runner(state: ServerState, progress=None, timeout: float = RUNNER_STARTUP_TIMEOUT_S) -> ServerState:
    """Start the warm command runner for the server ``state`` names, unless it is already up;
    wait until it answers. Returns the state, with the runner's pid when it answers.

    A runner that does not come up is not an error: the commands then run in their own
    processes (slower), and `server status` says so.
    """
    path = command_runner.socket_path()
    if _is_our_runner(state.runner_pid) and command_runner.ping(path):
        return state
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    choose_api(env)  # the settings a command started from this shell will have
    env["PYTHONUNBUFFERED"] = "1"
    log = prefect_home() / command_runner.RUNNER_LOG
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "aurora_cli.command_runner", str(path)], stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   cwd=prefect_home(), start_new_session=True)
    state = ServerState(**{**asdict(state), "runner_pid": process.pid})
    state_path().write_text(json.dumps(asdict(state), indent=2))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if command_runner.ping(path):
            return state
        time.sleep(0.2)
    if progress is not None:
        progress(f"aurora-pipeline server: the warm command runner did not start (see {log}); "
                 "commands run in their own processes, each paying Prefect's import")
    return state


def stop_runner(state: ServerState) -> None:
    if _is_our_runner(state.runner_pid):
        _terminate(state.runner_pid, 10.0)


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM, then SIGKILL when ``pid`` is still alive after ``timeout`` seconds."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect the exit status when the server is our own child (the test that started it)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def server_status() -> dict:
    """``{"running": bool, "api_url", "pid", "port", "log", "started"}`` (the last five when recorded)."""
    state = read_state()
    if state is None:
        return {"running": False, "state_file": str(state_path())}
    up = _alive(state.pid) and _is_our_server(state.pid) and is_healthy(state.api_url)
    runner = up and _is_our_runner(state.runner_pid) and command_runner.ping(command_runner.socket_path())
    return {"running": up, **asdict(state), "runner": bool(runner), "state_file": str(state_path())}
