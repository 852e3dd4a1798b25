"""Real local stand-ins for the services the pipeline talks to at scale.

Each helper starts a genuine server on 127.0.0.1 (never a mock object), so a test
exercises the same network code paths as a production run:

- :func:`start_s3_server`: an S3 API (moto's server) for the Zarr store and checkpoints.
- :func:`serve_directory`: an HTTP archive mirror laid out like the THEMIS
  tree, with Apache-style directory listings, ``Range`` requests, injectable
  ``503`` failures and held downloads (a GET that waits until the test releases it).
- :func:`start_dask_cluster`: a ``distributed`` scheduler with worker *processes*.
- :func:`start_prefect_server` / :func:`start_worker`: a Prefect API server and a
  process worker, each a subprocess of the venv's ``prefect`` CLI.

Every subprocess writes to a log file; :meth:`ManagedProcess.log_tail` returns
its end so that a failing test can show why. The pytest fixtures that wrap these
helpers live in ``tests/conftest.py``.
"""

from __future__ import annotations

import html
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# Dummy credentials for moto; exported by tests/conftest.py as well, so that
# s3fs, botocore and Dask worker processes all see the same ones.
TEST_AWS_KEY = "testing"
TEST_AWS_SECRET = "testing"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- S3


@dataclass
class S3Server:
    """A running moto S3 server on 127.0.0.1.

    Our code can reach it in two ways, both verified in tests/test_servers.py:
    pass :meth:`storage_options` to fsspec / zarr / xarray, or set the standard
    ``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``) environment variable, which
    botocore, aiobotocore and therefore s3fs honour natively.
    """

    endpoint_url: str  # e.g. "http://127.0.0.1:40393"
    _server: Any = field(repr=False)

    def storage_options(self) -> dict[str, Any]:
        """fsspec ``storage_options`` for ``s3://`` URLs that target this server."""
        return {
            "key": TEST_AWS_KEY,
            "secret": TEST_AWS_SECRET,
            "client_kwargs": {"endpoint_url": self.endpoint_url},
        }

    def filesystem(self):
        """A fresh (uncached) ``s3fs.S3FileSystem`` bound to this server."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options())

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (no error if it exists) and return ``"s3://name"``.

        Raises:
            ValueError: ``name`` is not a valid S3 bucket name (3-63 lower-case
                letters, digits, dots and hyphens).
        """
        if not (3 <= len(name) <= 63) or name != name.lower() or "_" in name:
            raise ValueError(
                f"bucket name {name!r} is not valid for S3: use 3 to 63 lower-case "
                "letters, digits, '.' and '-'"
            )
        fs = self.filesystem()
        if not fs.exists(name):
            fs.mkdir(name)
        return f"s3://{name}"

    def stop(self) -> None:
        self._server.stop()


class _SerialWrites:
    """WSGI middleware: moto handles one PUT, POST or DELETE at a time, as S3 makes them atomic.

    moto checks a conditional write (``If-None-Match: *``) and then stores the object in two
    steps, so two writers racing on its threaded server can both "create" one key: the
    store's S3 lock (aurora_pipeline.store.locks) would then be held twice, which real S3
    never allows. Reads stay concurrent.
    """

    def __init__(self, app):
        self.app, self.lock = app, threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") not in ("PUT", "POST", "DELETE"):
            return self.app(environ, start_response)
        with self.lock:
            return list(self.app(environ, start_response))


def start_s3_server() -> S3Server:
    """Start moto's S3 server on a free port of 127.0.0.1 in a daemon thread, one write at a time."""
    # werkzeug logs every request at INFO; keep test output readable.
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    server._server.app = _SerialWrites(server._server.app)  # werkzeug reads server.app per request
    host, port = server.get_host_and_port()
    return S3Server(endpoint_url=f"http://{host}:{port}", _server=server)


# ------------------------------------------------------------------ HTTP mirror


@dataclass(frozen=True)
class MirrorRequest:
    """One request the mirror answered."""

    method: str  # "GET" or "HEAD"
    path: str  # URL path relative to the mirror root, no leading slash ("" is the root)
    status: int  # HTTP status sent back
    range: str | None  # the request's Range header, if any


class _MirrorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, sort_links: bool) -> None:
        super().__init__(("127.0.0.1", 0), _MirrorHandler)
        self.root = root.resolve()
        self.sort_links = sort_links
        self.lock = threading.Lock()
        self.failures: dict[str, tuple[int, int]] = {}  # path -> (remaining, status)
        self.holds: dict[str, "Hold"] = {}  # path -> a hold on its GETs
        self.log: list[MirrorRequest] = []


@dataclass
class Hold:
    """GETs of one path wait until ``release()``; ``arrived`` is set when the first one comes."""

    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


class _MirrorHandler(BaseHTTPRequestHandler):
    """GET/HEAD over a directory: files (with single byte ranges) and HTML listings."""

    server: _MirrorHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive, as real mirrors and aiohttp expect

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # requests are recorded in server.log instead of stderr

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        url_path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        rel = url_path.lstrip("/")
        status = self._dispatch(url_path, rel, send_body)
        with self.server.lock:
            self.server.log.append(
                MirrorRequest(self.command, rel, int(status), self.headers.get("Range"))
            )

    def _dispatch(self, url_path: str, rel: str, send_body: bool) -> int:
        with self.server.lock:
            remaining, fail_status = self.server.failures.get(rel.rstrip("/"), (0, 0))
            if remaining > 0:
                self.server.failures[rel.rstrip("/")] = (remaining - 1, fail_status)
            hold = self.server.holds.get(rel.rstrip("/")) if send_body else None
        if hold is not None:
            hold.arrived.set()
            hold.released.wait(timeout=300)  # bounded: a test that forgets to release cannot hang the server
        if remaining > 0:
            return self._send_bytes(
                fail_status, b"injected failure\n", "text/plain", send_body, {"Retry-After": "0"}
            )
        target = (self.server.root / rel).resolve()
        if target != self.server.root and self.server.root not in target.parents:
            return self._send_bytes(404, b"not found\n", "text/plain", send_body)
        if target.is_dir():
            if not url_path.endswith("/"):
                # Apache redirects a directory without its slash; clients follow.
                return self._send_bytes(
                    301, b"", "text/plain", send_body, {"Location": url_path + "/"}
                )
            listing = self._listing(url_path, target)
            return self._send_bytes(200, listing, "text/html; charset=utf-8", send_body)
        if target.is_file():
            return self._send_file(target, send_body)
        return self._send_bytes(404, b"not found\n", "text/plain", send_body)

    def _listing(self, url_path: str, directory: Path) -> bytes:
        """An Apache-style index: optional sort links, parent link, then entries."""
        lines = [f"<html><head><title>Index of {html.escape(url_path)}</title></head><body>"]
        lines.append(f"<h1>Index of {html.escape(url_path)}</h1><pre>")
        if self.server.sort_links:
            lines.append('<a href="?C=N;O=D">Name</a> <a href="?C=M;O=A">Last modified</a> '
                         '<a href="?C=S;O=A">Size</a>')
        if url_path != "/":
            # Apache writes an absolute parent link; for a top-level folder that is
            # "/", which fsspec would list as an entry of the folder, so use "../".
            parent = url_path.rstrip("/").rpartition("/")[0] + "/"
            href = parent if parent != "/" else "../"
            lines.append(f'<a href="{html.escape(href)}">Parent Directory</a>')
        for entry in sorted(directory.iterdir()):
            name = entry.name + ("/" if entry.is_dir() else "")
            size = "-" if entry.is_dir() else str(entry.stat().st_size)
            href = urllib.parse.quote(name)
            lines.append(f'<a href="{href}">{html.escape(name)}</a> {size}')
        lines.append("</pre></body></html>")
        return "\n".join(lines).encode()

    def _send_file(self, target: Path, send_body: bool) -> int:
        size = target.stat().st_size
        header = self.headers.get("Range")
        if header is None:
            return self._send_bytes(
                200, target.read_bytes() if send_body else None, "application/octet-stream",
                send_body, {"Accept-Ranges": "bytes"}, length=size,
            )
        span = _parse_range(header, size)
        if span is None:
            return self._send_bytes(
                416, b"", "text/plain", send_body, {"Content-Range": f"bytes */{size}"}
            )
        start, stop = span  # inclusive stop, as in the header
        with target.open("rb") as f:
            f.seek(start)
            body = f.read(stop - start + 1)
        return self._send_bytes(
            206, body, "application/octet-stream", send_body,
            {"Accept-Ranges": "bytes", "Content-Range": f"bytes {start}-{stop}/{size}"},
        )

    def _send_bytes(
        self,
        status: int,
        body: bytes | None,
        content_type: str,
        send_body: bool,
        headers: Mapping[str, str] | None = None,
        length: int | None = None,
    ) -> int:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is None:
            length = len(body or b"")
        self.send_header("Content-Length", str(length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if send_body and body:
            self.wfile.write(body)
        return status


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Parse one ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` range; None if unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            start, stop = max(size - int(last), 0), size - 1
        else:
            start = int(first)
            stop = min(int(last), size - 1) if last else size - 1
    except ValueError:
        return None
    if start >= size or start > stop:
        return None
    return start, stop


@dataclass
class HttpMirror:
    """A running HTTP server that mirrors the directory ``root``.

    ``url`` ends with a slash; ``url_for("thg/l1/asi/")`` builds URLs under it.
    Listings look like Apache's: with ``sort_links`` (the default) they include
    ``?C=N;O=D`` sort links and an absolute "Parent Directory" link, exactly the
    noise a real mirror adds, so fsspec's ``ls`` returns entries such as
    ``.../?C=N;O=D`` that archive code must filter by file-name pattern.
    """

    root: Path
    url: str
    _server: _MirrorHTTPServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def url_for(self, relpath: str = "") -> str:
        return self.url + relpath.lstrip("/")

    def fail_next(
        self, relpath: str, times: int = 1, status: int = HTTPStatus.SERVICE_UNAVAILABLE
    ) -> None:
        """Answer the next ``times`` requests (GET or HEAD) for ``relpath`` with ``status``."""
        with self._server.lock:
            self._server.failures[relpath.strip("/")] = (times, int(status))

    def hold(self, relpath: str) -> Hold:
        """Make GETs of ``relpath`` wait until the returned hold is released (HEADs are answered)."""
        hold = Hold()
        with self._server.lock:
            self._server.holds[relpath.strip("/")] = hold
        return hold

    @property
    def requests(self) -> list[MirrorRequest]:
        """A copy of the request log, oldest first."""
        with self._server.lock:
            return list(self._server.log)

    def requests_for(self, relpath: str) -> list[MirrorRequest]:
        return [r for r in self.requests if r.path.strip("/") == relpath.strip("/")]

    def clear_log(self) -> None:
        with self._server.lock:
            self._server.log.clear()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def serve_directory(root: Path, *, sort_links: bool = True) -> HttpMirror:
    """Serve ``root`` over plain HTTP on a free port of 127.0.0.1 (a daemon thread)."""
    server = _MirrorHTTPServer(Path(root), sort_links)
    thread = threading.Thread(target=server.serve_forever, name="http-mirror", daemon=True)
    thread.start()
    port = server.server_address[1]
    url = f"http://127.0.0.1:{port}/"
    return HttpMirror(root=Path(root), url=url, _server=server, _thread=thread)


# ------------------------------------------------------------------------- Dask


def start_dask_cluster(n_workers: int = 2, env: Mapping[str, str] | None = None):
    """Start a ``distributed.LocalCluster``: scheduler in this process, workers as processes.

    Args:
        n_workers: worker processes, one thread each.
        env: extra environment variables for the worker processes (on top of
            this process's environment, which they inherit).

    Returns:
        The cluster; ``cluster.scheduler_address`` is ``"tcp://127.0.0.1:<port>"``.
        Close it with ``cluster.close()``.
    """
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",  # a free port: None would mean 8787, shared with any other cluster
        env=dict(env or {}),
        silence_logs=logging.WARNING,
    )


# ------------------------------------------------------------ Prefect processes


def prefect_executable() -> Path:
    """The ``prefect`` CLI of the virtualenv running the tests."""
    return Path(sys.executable).parent / "prefect"


@dataclass
class ManagedProcess:
    """A subprocess whose stdout and stderr go to ``log_path``.

    ``stop_signals`` are sent in turn by :meth:`stop`, each followed by up to ``timeout``
    seconds of waiting: a Prefect process worker takes a first SIGINT as "take no new
    runs" and keeps polling, and only a second one stops it (Prefect 3.8).
    """

    name: str
    process: subprocess.Popen
    log_path: Path
    stop_signals: tuple[int, ...] = (signal.SIGTERM,)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return f"(no log at {self.log_path})"
        return "\n".join(text.splitlines()[-lines:])

    def describe(self) -> str:
        """Name, exit status and log tail, for assertion messages."""
        code = self.process.poll()
        state = "running" if code is None else f"exited with {code}"
        return f"{self.name} ({state}); last lines of {self.log_path}:\n{self.log_tail()}"

    def stop(self, timeout: float = 15.0) -> None:
        """Send ``stop_signals`` one by one (3 s apart, ``timeout`` s after the last), then kill."""
        for i, sig in enumerate(self.stop_signals):
            if self.process.poll() is not None:
                return
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout if i == len(self.stop_signals) - 1 else min(timeout, 3.0))
                return
            except subprocess.TimeoutExpired:
                continue
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=timeout)


def _spawn(
    name: str, args: list[str], env: Mapping[str, str], cwd: Path, log_path: Path
) -> ManagedProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            args, cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return ManagedProcess(name=name, process=process, log_path=log_path)


def prefect_env(
    api_url: str | None, home: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Environment for a ``prefect`` subprocess: this process's env, pointed at ``api_url``."""
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_CLI_PROMPT="false",  # never wait on an interactive question
        PYTHONUNBUFFERED="1",
    )
    env.pop("PREFECT_API_URL", None)
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    env.update(extra or {})
    return env


@dataclass
class PrefectServer:
    """A running ``prefect server start`` subprocess with its own home and SQLite DB."""

    api_url: str  # "http://127.0.0.1:<port>/api"
    home: Path
    managed: ManagedProcess

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a CLI or worker subprocess that should talk to this server."""
        return prefect_env(self.api_url, self.home, extra)

    def cli(self, *args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None,
            timeout: float = 180.0) -> subprocess.CompletedProcess:
        """Run ``prefect <args>`` against this server; raise with its output if it fails.

        Raises:
            RuntimeError: non-zero exit, with the command's output and the server log tail.
        """
        result = subprocess.run(
            [str(prefect_executable()), *args], cwd=cwd, env=self.env(env),
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"`prefect {' '.join(args)}` exited with {result.returncode}\n"
                f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}\n"
                f"server: {self.managed.describe()}"
            )
        return result

    def stop(self) -> None:
        self.managed.stop()


def wait_for_http(url: str, timeout: float, process: ManagedProcess | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if ``process`` exits.

    Raises:
        RuntimeError: timeout or process exit, with the process's log tail.
    """
    import httpx

    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if process is not None and process.process.poll() is not None:
            raise RuntimeError(f"{url} never came up: {process.describe()}")
        try:
            response = httpx.get(url, timeout=5.0)
            if response.status_code == 200:
                return
            last_error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last_error = repr(exc)
        time.sleep(0.25)
    detail = process.describe() if process is not None else ""
    raise RuntimeError(f"{url} not healthy after {timeout:.0f} s ({last_error}). {detail}")


def start_prefect_server(workdir: Path, timeout: float = 120.0) -> PrefectServer:
    """Start ``prefect server start`` on a free port of 127.0.0.1 and wait for ``/api/health``.

    ``workdir`` receives the server's PREFECT_HOME (``home/``), its SQLite database
    (``prefect.db``) and its log (``prefect-server.log``). The UI is disabled.
    """
    workdir = Path(workdir)
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = prefect_env(None, home, {
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{workdir / 'prefect.db'}",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    })
    managed = _spawn(
        "prefect server",
        [str(prefect_executable()), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env, workdir, workdir / "prefect-server.log",
    )
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        wait_for_http(f"{api_url}/health", timeout, managed)
    except BaseException:
        managed.stop()
        raise
    return PrefectServer(api_url=api_url, home=home, managed=managed)


def start_worker(
    api_url: str,
    pool: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    *,
    worker_type: str = "process",
    log_path: Path | None = None,
    home: Path | None = None,
) -> ManagedProcess:
    """Start ``prefect worker start --pool <pool> --type <worker_type>`` in ``cwd``.

    The worker polls every second (``PREFECT_WORKER_QUERY_SECONDS=1``) so tests
    do not wait the default 10 s. Stop it with ``.stop()`` (SIGINT twice, as Ctrl-C twice:
    Prefect's process worker ignores a single one); read ``.log_tail()`` when a flow run
    does not finish.
    """
    log_dir = Path(tempfile.mkdtemp(prefix=f"prefect-worker-{pool}-"))
    extra = {"PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5"}
    extra.update(env or {})
    worker_env = prefect_env(api_url, home or log_dir / "home", extra)
    worker = _spawn(
        f"prefect worker ({pool})",
        [str(prefect_executable()), "worker", "start", "--pool", pool, "--type", worker_type,
         "--name", f"test-{pool}-{os.getpid()}"],
        worker_env, Path(cwd), log_path or log_dir / "worker.log",
    )
    worker.stop_signals = (signal.SIGINT, signal.SIGINT)  # as Ctrl-C twice in a terminal
    return worker
