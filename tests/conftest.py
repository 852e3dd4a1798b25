"""Shared pytest set-up: a sealed test environment and fixtures that start real local servers.

The environment is fixed here, at import, because Prefect, botocore and Dask read
their settings when they are first imported. Everything stays on 127.0.0.1:

- Prefect gets a throw-away PREFECT_HOME and no PREFECT_API_URL, so a flow
  called in-process starts Prefect's own temporary ("ephemeral") server with a
  SQLite file in that home, with the start-up timeout the `aurora-pipeline`
  command gives it (``aurora_cli.local_server.choose_api``). Tests that need a real
  API server use ``prefect_server``.
- AWS clients get dummy credentials (valid only against moto) and a region, and
  never ask the EC2 metadata service; ``s3://`` URLs reach the moto server through
  ``s3_server.storage_options()`` or the ``s3_env`` fixture. Any AWS profile,
  session token or endpoint from the developer's shell is removed.

Fixtures (see tests/servers.py for the objects they yield):

=================  ========  =====================================================
``s3_server``      session   moto S3 on 127.0.0.1 -> ``S3Server`` (``endpoint_url``,
                             ``storage_options()``, ``make_bucket(name)``, ``filesystem()``)
``s3_env``         function  ``s3_server``, plus ``AWS_ENDPOINT_URL_S3`` set for this
                             test, so plain ``s3://`` URLs reach moto with no options
``https_mirror``   function  HTTP mirror of a fresh ``tmp_path`` folder -> ``HttpMirror``
                             (``root``, ``url``, ``url_for()``, ``fail_next()``, ``requests``)
``dask_cluster``   session   scheduler + 2 worker processes -> scheduler address (str);
                             workers see the moto endpoint via ``AWS_ENDPOINT_URL_S3``
``prefect_server`` session   ``prefect server start`` subprocess -> ``PrefectServer``
                             (``api_url``, ``cli(...)``, ``env()``, ``managed.log_tail()``)
=================  ========  =====================================================

``start_worker(api_url, pool, cwd, env)`` in tests/servers.py starts a process worker.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# --- environment, set before anything imports prefect, botocore or dask ------------
_TEST_HOME = tempfile.mkdtemp(prefix="aurora-tests-")
# Registered first, so it runs last: after Prefect's own atexit hook has stopped
# the temporary server that keeps its database in this folder.
atexit.register(shutil.rmtree, _TEST_HOME, ignore_errors=True)
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PREFECT_API_KEY", None)
os.environ.pop("PREFECT_PROFILE", None)
os.environ.update(
    {
        "PREFECT_HOME": os.path.join(_TEST_HOME, "prefect-home"),
        "PREFECT_PROFILES_PATH": os.path.join(_TEST_HOME, "prefect-home", "profiles.toml"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_ENABLED": "true",  # in-process flows start their own server
        "PREFECT_CLI_PROMPT": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        # Dummy AWS credentials, valid only against moto; never real ones in tests.
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        # Keep Dask quiet and local.
        "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED": "warning",
    }
)
for _name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL",
              "AWS_ENDPOINT_URL_S3", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"):
    os.environ.pop(_name, None)
os.makedirs(os.environ["PREFECT_HOME"], exist_ok=True)
# `make test` runs two test processes (pytest-xdist). Each gets its share of the cores for
# torch and BLAS, as one would give two jobs sharing a machine: with both at the default
# (all cores each) the OpenMP barriers of two processes collide and a training test ran
# 7x slower (20 s alone, 144 s beside another). A user's own setting is kept.
_TEST_PROCESSES = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _TEST_PROCESSES > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _TEST_PROCESSES)))
# Flows called in this process get their Prefect API exactly as the `aurora-pipeline`
# command gets it (a temporary server with the command's generous start-up timeout);
# tests/cli/test_cli.py checks that the command needs nothing from here.
from aurora_cli.local_server import choose_api  # noqa: E402 - no Prefect import

choose_api()
# ------------------------------------------------------------------------------------

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from servers import (  # noqa: E402
    HttpMirror,
    PrefectServer,
    S3Server,
    serve_directory,
    start_dask_cluster,
    start_prefect_server,
    start_s3_server,
)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server on 127.0.0.1 for the whole session."""
    server = start_s3_server()
    yield server
    server.stop()


def _clear_s3fs_cache() -> None:
    # fsspec caches filesystems by their arguments, not by environment, so a
    # cached S3FileSystem would keep whatever endpoint it was built with.
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """``s3_server`` with ``AWS_ENDPOINT_URL_S3`` pointing at it for this test only."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    _clear_s3fs_cache()
    yield s3_server
    _clear_s3fs_cache()


@pytest.fixture
def https_mirror(tmp_path: Path) -> Iterator[HttpMirror]:
    """An HTTP mirror of the empty folder ``tmp_path / "mirror"``; put files under ``.root``.

    Plain http on 127.0.0.1: archive code treats http:// and https:// alike.
    """
    root = tmp_path / "mirror"
    root.mkdir()
    mirror = serve_directory(root)
    yield mirror
    mirror.stop()


@pytest.fixture(scope="session")
def dask_cluster(s3_server: S3Server) -> Iterator[str]:
    """Address of a Dask scheduler with two single-threaded worker processes."""
    cluster = start_dask_cluster(2, env={"AWS_ENDPOINT_URL_S3": s3_server.endpoint_url})
    yield cluster.scheduler_address
    cluster.close()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real ``prefect server start`` subprocess with its own home and SQLite database."""
    server = start_prefect_server(tmp_path_factory.mktemp("prefect-server"))
    yield server
    server.stop()


# Modules that take minutes, slowest first (`make test PYTEST_ARGS=--durations=0`, summed per module):
# `make test` hands whole modules to its two test processes in this order (--no-loadscope-reorder),
# so the short modules fill the end of the run instead of one long module running alone.
SLOW_MODULES = ("cli/test_cli.py", "flows/test_deployments.py", "search/test_search_store.py", "flows/test_demo.py",
                "flows/test_label_archive.py", "search/test_index_true_to_store.py", "flows/test_oath_classifier.py",
                "flows/test_flow_failures.py", "encoder/test_train.py", "store/test_store.py",
                "ingest/test_ingest_remote.py", "store/test_store_stages.py", "test_servers.py",
                "oath/test_supervised.py", "benchmarks/test_gpu_check.py", "ingest/test_ingest.py",
                "encoder/test_checkpoint.py", "oath/test_oath_protocol.py")


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent

    def rank(item) -> int:
        try:
            module = Path(item.path).relative_to(here).as_posix()
        except ValueError:
            return len(SLOW_MODULES)
        return SLOW_MODULES.index(module) if module in SLOW_MODULES else len(SLOW_MODULES)

    items.sort(key=rank)  # stable: the order within each module is kept
