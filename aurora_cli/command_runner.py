"""The warm command runner of `aurora-pipeline server start`: a command costs its work, not Prefect's import.

A new ``aurora-pipeline`` process spends about 5 s importing Prefect, the flows and the
library before any work (Prefect alone is ~2.7 s on a 2-core machine), while running a
flow through an already-started Prefect server costs well under a second. So
`aurora-pipeline server start` starts, beside the Prefect server, a runner: one process
that has done those imports and waits on a Unix socket. A command that would use that
server hands the runner its arguments, working directory, environment, umask and its
terminal (stdin, stdout and stderr, passed as file descriptors). The runner forks; the
child, a copy of the warm process, runs the command exactly as a new ``aurora-pipeline``
process would (the same ``main``, the same flows and Prefect server, its output on the
same terminal) and sends the exit code back. Ctrl-C and other signals the command's
process gets are passed on to the child's process group.

The runner is used only when it would do what a new process does:

- the same installation: the command's interpreter and packages are the runner's (two
  checkouts that share a Prefect home each run their own code);
- the same code: the ``.py`` files (and compiled ``.so``) of ``aurora_pipeline``, ``flows`` and ``aurora_cli`` and the
  installed distributions are unchanged since it started (otherwise it restarts itself, and this
  one command runs in its own process);
- the same settings that are read when a module is imported: every ``PREFECT_*``,
  ``DASK_*``, ``OMP_*``, ``MKL_*``, ``OPENBLAS_*``, ``TORCH_*``, ``PYTORCH_*`` and
  ``CUDA_*`` variable, and the Prefect profiles file;
- ``AURORA_PIPELINE_NO_RUNNER`` is not set to a non-empty value.

Otherwise, or when no runner answers, the command runs in its own process as before.
The runner's log is ``$PREFECT_HOME/aurora-pipeline-runner.log``.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib
import json
import os
import signal
import socket
import struct
import sys
import tempfile
import threading
import traceback
from pathlib import Path

import aurora_cli
import aurora_pipeline
import flows
from aurora_cli.prefect_home import prefect_home

IMPORT_TIME_PREFIXES = ("PREFECT_", "DASK_", "OMP_", "MKL_", "OPENBLAS_", "TORCH_", "PYTORCH_", "CUDA_")
PACKAGES = (aurora_pipeline, flows, aurora_cli)  # the project's code: its .py and .so files are the fingerprint
OFF_SWITCH = "AURORA_PIPELINE_NO_RUNNER"
RUNNER_LOG = "aurora-pipeline-runner.log"
MAX_MESSAGE = 16 * 1024 * 1024      # one request (arguments + environment) is a few KB
CONNECT_TIMEOUT_S = 2.0
REPLY_TIMEOUT_S = 30.0               # the runner forks at once; a busy machine can still take seconds
# the module whose main(argv) a child runs: named, not imported, as aurora_cli.main imports this one
COMMAND = "aurora_cli.main"
PRELOAD = (  # what commands import; the runner imports it once, its children never again
    "aurora_cli.main", "aurora_cli.local_server", "aurora_cli.terminal", "flows.ingest", "flows.pretrain",
    "flows.embed", "flows.classify", "flows.cluster", "flows.label_archive", "flows.demo", "flows.oath_benchmark",
    "flows.build_index", "aurora_pipeline.store.read", "aurora_pipeline.synth.archive", "aurora_pipeline.keograms",
    "aurora_pipeline.events", "aurora_pipeline.ingest.driver", "aurora_pipeline.embed.driver",
    "aurora_pipeline.encoder.train", "aurora_pipeline.classify.driver", "aurora_pipeline.cluster.driver",
    "aurora_pipeline.search.driver", "aurora_pipeline.encoder.backbone", "sklearn.linear_model", "sklearn.cluster",
    # what Prefect's flow and task engines and a Dask LocalCluster import on their first use
    "prefect.logging.configuration", "prefect.engine", "prefect.flow_engine", "prefect.task_engine",
    "prefect.utilities.visualization", "prefect.telemetry.run_telemetry", "prefect._internal.control_listener",
    "prefect._internal.attempt_control", "prefect.concurrency.v1", "anyio._backends._asyncio", "fastapi",
    "distributed", "distributed.http.scheduler", "distributed.http.prometheus", "distributed.dashboard",
    "distributed.diagnostics.websocket", "tornado.platform.asyncio", "multiprocessing.synchronize",
    "rich._emoji_codes", "pydantic.color", "fsspec.implementations.chained",
    # what xarray (a new store's template: `dask.array`, 0.16 s), the failures table and the LocalCluster's
    # dashboard routes import on their first use
    "dask.array", "pandas.core.methods.to_dict", "distributed.http.health",
    "distributed.http.statics", "distributed.http.scheduler.info", "distributed.http.scheduler.json",
    "distributed.http.scheduler.missing_bokeh", "distributed.http.scheduler.prometheus",
    "distributed.http.worker.prometheus",
)


# --------------------------------------------------------------------------- where it listens

def socket_path(environ: dict | None = None) -> Path:
    """The runner's socket for this Prefect home: short (a Unix socket path has ~100 bytes),
    in a folder only this user can enter."""
    home = str(prefect_home(environ).resolve())
    folder = Path(tempfile.gettempdir()) / f"aurora-pipeline-{os.getuid()}"
    return folder / f"runner-{hashlib.sha256(home.encode()).hexdigest()[:16]}.sock"


def _private_folder(folder: Path, create: bool) -> bool:
    """True when ``folder`` exists (created when asked), belongs to this user and only to them."""
    if create:
        folder.mkdir(mode=0o700, exist_ok=True)
    try:
        info = folder.lstat()
    except FileNotFoundError:
        return False
    return folder.is_dir() and not folder.is_symlink() and info.st_uid == os.getuid() and not info.st_mode & 0o077


def import_time_settings(environ: dict) -> dict:
    """The variables a module may read when it is imported, and the Prefect profiles file."""
    chosen = {k: v for k, v in environ.items() if k.startswith(IMPORT_TIME_PREFIXES)}
    profiles = Path(environ.get("PREFECT_PROFILES_PATH") or prefect_home(environ) / "profiles.toml").expanduser()
    try:
        chosen[" profiles.toml"] = hashlib.sha256(profiles.read_bytes()).hexdigest()
    except OSError:
        chosen[" profiles.toml"] = None
    return chosen


def _install() -> list[str]:
    """Which installation a process runs: its interpreter and where its packages are imported from."""
    return [sys.executable] + [str(Path(package.__file__).parent) for package in PACKAGES]


def code_fingerprint() -> str:
    """Changes when a ``.py`` file or a compiled extension (``.so``, e.g. the rebuilt OATH framing kernel)
    of the packages changes, or a distribution is installed or removed."""
    digest = hashlib.sha256(sys.executable.encode())
    for package in PACKAGES:
        root = Path(package.__file__).parent
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(f for f in files if f.endswith((".py", ".so"))):
                info = os.stat(os.path.join(folder, name))
                digest.update(f"{folder}/{name}:{info.st_mtime_ns}:{info.st_size}\n".encode())
    for entry in sys.path:
        if entry.endswith("site-packages") and os.path.isdir(entry):
            digest.update(f"{entry}:{os.stat(entry).st_mtime_ns}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- messages

def _send(sock: socket.socket, message: dict) -> None:
    data = json.dumps(message).encode()
    sock.sendall(struct.pack("!I", len(data)) + data)


def _receive(sock: socket.socket) -> dict | None:
    """One message, or None at end of stream."""
    head = _exactly(sock, 4)
    if head is None:
        return None
    (length,) = struct.unpack("!I", head)
    if length > MAX_MESSAGE:
        raise ValueError(f"message of {length} bytes")
    body = _exactly(sock, length)
    return None if body is None else json.loads(body)


def _exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = sock.recv(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _peer_uid(sock: socket.socket) -> int | None:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):  # no SO_PEERCRED: the private folder is the only guard
        return os.getuid()
    return struct.unpack("3i", creds)[1]


# --------------------------------------------------------------------------- the command's side

def run_in_runner(argv: list[str], environ: dict | None = None, debug: bool = False) -> int | None:
    """Run ``aurora-pipeline ARGV`` in the warm runner; its exit code, or None when the runner
    is absent or would not run it the way a new process does (the caller runs it itself)."""
    env = os.environ if environ is None else environ
    if env.get(OFF_SWITCH):
        if debug:
            print(f"aurora-pipeline: the warm runner is not used: {OFF_SWITCH} is set; running here", file=sys.stderr)
        return None
    path = socket_path(env)
    if not _private_folder(path.parent, create=False) or not path.exists():
        if debug:
            print(f"aurora-pipeline: the warm runner is not used: none listens for the Prefect home "
                  f"{prefect_home(env)} (no {path}); running here", file=sys.stderr)
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT_S)
        sock.connect(str(path))
        sock.settimeout(REPLY_TIMEOUT_S)
        socket.send_fds(sock, [b"r"], [0, 1, 2])
        umask = os.umask(0)
        os.umask(umask)
        _send(sock, {"argv": list(argv), "cwd": os.getcwd(), "env": dict(env), "umask": umask,
                     "install": _install()})
        reply = _receive(sock)
    except OSError as err:
        sock.close()
        if debug:
            print(f"aurora-pipeline: the warm runner at {path} did not answer ({err}); running here",
                  file=sys.stderr)
        return None
    if not reply or "pid" not in reply:
        sock.close()
        if debug:
            print(f"aurora-pipeline: the warm runner did not run this command "
                  f"({(reply or {}).get('why', 'no answer')}); running here", file=sys.stderr)
        return None
    return _wait_for(sock, reply["pid"])


def _wait_for(sock: socket.socket, pid: int) -> int:
    """Pass signals on to the command's process group until it reports its exit code."""
    def forward(signum, frame):
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, forward)
    sock.settimeout(None)
    try:
        done = _receive(sock)
    finally:
        sock.close()
    if done is None or "exit" not in done:
        print(f"aurora-pipeline: the command's process (pid {pid}, in the warm runner) ended without an exit "
              f"code: it was killed (out of memory?); see {RUNNER_LOG} in the Prefect home", file=sys.stderr)
        return 1
    return int(done["exit"])


# --------------------------------------------------------------------------- the runner's side

class Runner:
    """The warm process: imports once, then forks one child per command."""

    def __init__(self, path: Path):
        self.path = path
        self.pid = os.getpid()
        self.settings = import_time_settings(os.environ)
        self.code = code_fingerprint()
        self.listener: socket.socket | None = None

    def serve(self) -> int:
        if not _private_folder(self.path.parent, create=True):
            print(f"runner: {self.path.parent} is not a folder only this user can use; not serving", flush=True)
            return 1
        # Forking a process with Python threads can copy a held lock: refuse. (Native BLAS
        # pools that numpy starts at import re-create themselves after a fork; nothing has
        # run on torch's, which starts on the first operation.)
        threads = threading.active_count()
        if threads != 1:
            print(f"runner: {threads} threads after the imports, forking would not be safe; not serving", flush=True)
            return 1
        self.path.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self.listener.listen(64)
        signal.signal(signal.SIGCHLD, _reap_children)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print(f"runner: pid {self.pid} serving on {self.path}", flush=True)
        try:
            while True:
                conn, _ = self.listener.accept()
                code = self._handle(conn)
                if code is not None:  # in the forked child: the command is done
                    return code
        finally:
            if os.getpid() == self.pid:
                self.listener.close()
                self.path.unlink(missing_ok=True)

    def _handle(self, conn: socket.socket) -> int | None:
        try:
            conn.settimeout(REPLY_TIMEOUT_S)
            if _peer_uid(conn) != os.getuid():
                conn.close()
                return None
            _, fds, _, _ = socket.recv_fds(conn, 1, 3)
            request = _receive(conn)
        except (OSError, ValueError) as err:
            print(f"runner: a request could not be read ({err})", flush=True)
            conn.close()
            return None
        why = self._refusal(request or {}, fds)
        if why:
            for fd in fds:
                os.close(fd)
            try:
                _send(conn, {"why": why})
            except OSError:
                pass
            conn.close()
            if why.startswith("the code changed"):
                self._restart()
            return None
        pid = os.fork()
        if pid:
            print(f"runner: pid {pid} runs `aurora-pipeline {' '.join(request['argv'])}` in {request['cwd']}",
                  flush=True)
            for fd in fds:
                os.close(fd)
            conn.close()
            return None
        return self._child(conn, fds, request)

    def _refusal(self, request: dict, fds: list[int]) -> str | None:
        if request.get("ping"):
            return "ping"
        if len(fds) != 3 or not isinstance(request.get("argv"), list):
            return "malformed request"
        if request.get("install") != _install():
            return (f"the command comes from another installation ({request.get('install')}) than the runner's "
                    f"({_install()})")
        theirs = import_time_settings(request["env"])
        if theirs != self.settings:
            changed = sorted(k.strip() for k in set(theirs) | set(self.settings) if theirs.get(k) != self.settings.get(k))
            return f"settings read at import differ from the runner's: {', '.join(changed)}"
        if code_fingerprint() != self.code:
            return "the code changed since the runner started (it restarts now)"
        return None

    def _restart(self) -> None:
        print("runner: the code changed; restarting", flush=True)
        self.listener.close()
        self.path.unlink(missing_ok=True)
        os.execv(sys.executable, [sys.executable, "-m", "aurora_cli.command_runner", str(self.path)])

    def _child(self, conn: socket.socket, fds: list[int], request: dict) -> int:
        """In the forked child: become the command's process and run it."""
        self.listener.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.setpgid(0, 0)  # its own process group: a forwarded Ctrl-C reaches its Dask workers too
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        _new_standard_streams()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.umask(int(request["umask"]))
        sys.argv = ["aurora-pipeline", *request["argv"]]
        outcome = {"exit": 1}
        atexit.register(_report_exit, conn, outcome)  # registered first, so it runs after every other handler
        _send(conn, {"pid": os.getpid()})
        threading.Thread(target=_interrupt_when_gone, args=(conn, outcome), daemon=True).start()

        # prefect: only in the runner's child (the CLI's hand-over to the runner does without)
        from prefect.logging.configuration import setup_logging

        setup_logging(incremental=False)  # Prefect's console handlers on this command's stderr
        main = importlib.import_module(COMMAND).main  # preloaded: a dictionary look-up

        try:
            outcome["exit"] = _exit_code(main(request["argv"]))
        except SystemExit as done:
            outcome["exit"] = _exit_code(done.code)
        except KeyboardInterrupt:
            traceback.print_exc()
            outcome["exit"] = 130
        except BaseException:  # noqa: BLE001 - what Python prints for an uncaught exception, exit 1
            traceback.print_exc()
            outcome["exit"] = 1
        return outcome["exit"]


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") prints it and exits 1
    return 1


def _new_standard_streams() -> None:
    """sys.stdin/stdout/stderr on the command's descriptors, buffered as Python does for a new process."""
    encoding = sys.stdout.encoding if sys.stdout else "utf-8"
    sys.stdin = sys.__stdin__ = open(0, "r", encoding=encoding, closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", encoding=encoding, buffering=1 if os.isatty(1) else -1,
                                       closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", encoding=encoding, errors="backslashreplace", buffering=1,
                                       closefd=False)


def _report_exit(conn: socket.socket, outcome: dict) -> None:
    outcome["reported"] = True
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        _send(conn, {"exit": outcome["exit"]})
    except OSError:
        pass
    # Every other exit handler has run (this one was registered first) and the streams are
    # flushed: skip the interpreter's teardown of the warm process's modules (seconds, with torch)
    os._exit(outcome["exit"])


def _interrupt_when_gone(conn: socket.socket, outcome: dict) -> None:
    """The command's own process went away (killed, terminal closed): interrupt the command."""
    try:
        conn.settimeout(None)
        while conn.recv(1):
            pass
    except OSError:
        pass
    if not outcome.get("reported"):
        os.killpg(0, signal.SIGINT)


def _reap_children(signum, frame) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def ping(path: Path) -> bool:
    """True when a runner answers on ``path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT_S)
        sock.connect(str(path))
        socket.send_fds(sock, [b"p"], [])
        _send(sock, {"ping": True})
        return (_receive(sock) or {}).get("why") == "ping"
    except OSError:
        return False
    finally:
        sock.close()


def warm_up() -> None:
    """Work every command's child would otherwise redo, done once before the runner forks (none of it
    starts a thread): the options' help texts read from the configs' source (``build_parser``, ~30 ms),
    the ``uname -p`` that a Dask worker's first version report runs, and the Prefect settings of a
    command's runs (``heartbeats.settings_without_heartbeats``, ~30 ms of pydantic validation)."""
    # prefect, distributed: preloaded above; imported here, not at the top (the CLI's hand-over does without)
    from distributed.versions import get_versions

    from aurora_cli.heartbeats import settings_without_heartbeats
    from prefect.settings import get_current_settings

    importlib.import_module(COMMAND).build_parser()  # named, not imported: aurora_cli.main imports this module
    get_versions()
    settings_without_heartbeats(get_current_settings())


def main(args: list[str]) -> int:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - only an optimisation: the command imports what it needs itself
            print(f"runner: not preloaded: {name} ({err})", flush=True)
    try:
        warm_up()
    except Exception as err:  # noqa: BLE001 - as the preload: the command does it itself when it needs it
        print(f"runner: not warmed up ({type(err).__name__}: {err})", flush=True)
    return Runner(Path(args[0])).serve()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
