"""The local servers behave like the real services the pipeline talks to.

Each test uses a fixture from tests/conftest.py the way pipeline code will: S3
through s3fs and zarr, the archive mirror through fsspec's HTTP filesystem, Dask
through a distributed Client and Prefect's DaskTaskRunner, Prefect through its CLI
with the work pools of infra/. deployments/prefect.yaml is deployed and run by a real
worker in tests/flows/test_deployments.py.
"""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path

import aiohttp
import fsspec
import httpx
import pytest
import zarr

from aurora_cli.local_server import WARM_UP_QUERIES, warm_up_server
from servers import HttpMirror, PrefectServer, S3Server

REPO = Path(__file__).resolve().parents[1]
CDF_DIR = "thg/l1/asi/gako/2011/01"
CDF_NAMES = ("thg_l1_asf_gako_2011010617_v01.cdf", "thg_l1_asf_gako_2011010618_v01.cdf")


# ------------------------------------------------------------------------- S3


def test_s3_round_trip_with_storage_options(s3_server: S3Server) -> None:
    url = s3_server.make_bucket("roundtrip")
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3_server.storage_options())
    fs.pipe(f"{url}/hello.txt", b"aurora")

    assert fs.cat(f"{url}/hello.txt") == b"aurora"
    options = s3_server.storage_options()
    group = zarr.open_group(f"{url}/store.zarr", mode="w", storage_options=options)
    group.create_array("label", shape=(3,), dtype="i1")[:] = [0, 5, 2]
    reread = zarr.open_group(f"{url}/store.zarr", mode="r", storage_options=options)
    assert reread["label"][:].tolist() == [0, 5, 2]


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])
def test_s3_endpoint_from_standard_environment_variable(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    s3_server.make_bucket("from-env")
    s3_server.filesystem().pipe("from-env/x.bin", b"\x01\x02")
    monkeypatch.setenv(variable, s3_server.endpoint_url)

    # No endpoint in the call: botocore reads it from the environment.
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    assert fs.cat("s3://from-env/x.bin") == b"\x01\x02"


def test_s3_env_fixture_makes_plain_s3_urls_reach_moto(s3_env: S3Server) -> None:
    s3_env.make_bucket("plain-urls")
    group = zarr.open_group("s3://plain-urls/store.zarr", mode="w")
    group.attrs["site"] = "gako"

    assert s3_env.filesystem().exists("plain-urls/store.zarr/zarr.json")
    assert os.environ["AWS_ENDPOINT_URL_S3"] == s3_env.endpoint_url


def test_make_bucket_refuses_names_s3_would_refuse(s3_server: S3Server) -> None:
    with pytest.raises(ValueError, match="lower-case"):
        s3_server.make_bucket("Aurora_Store")


# ----------------------------------------------------------------- HTTP mirror


def _fill_mirror(mirror: HttpMirror) -> dict[str, bytes]:
    folder = mirror.root / CDF_DIR
    folder.mkdir(parents=True)
    contents = {}
    for i, name in enumerate(CDF_NAMES):
        data = bytes(range(256)) * (40 + i)
        (folder / name).write_bytes(data)
        contents[f"{CDF_DIR}/{name}"] = data
    return contents


def test_mirror_lists_folders_like_an_apache_archive(https_mirror: HttpMirror) -> None:
    _fill_mirror(https_mirror)
    fs = fsspec.filesystem("http", skip_instance_cache=True)

    listing = fs.ls(https_mirror.url_for(CDF_DIR + "/"), detail=False)
    cdfs = sorted(u for u in listing if u.endswith(".cdf"))
    assert cdfs == [https_mirror.url_for(f"{CDF_DIR}/{n}") for n in CDF_NAMES]
    assert any("?C=N;O=D" in u for u in listing), "Apache sort links are part of a real listing"
    sites = fs.ls(https_mirror.url_for("thg/l1/asi/"), detail=True)
    assert {"name": https_mirror.url_for("thg/l1/asi/gako/"), "size": None, "type": "directory"} in sites
    found = fs.glob(https_mirror.url_for("thg/l1/asi/*/2011/01/*.cdf"))
    assert sorted(found) == cdfs


def test_mirror_serves_whole_files_sizes_and_byte_ranges(https_mirror: HttpMirror) -> None:
    contents = _fill_mirror(https_mirror)
    path, data = next(iter(contents.items()))
    url = https_mirror.url_for(path)
    fs = fsspec.filesystem("http", skip_instance_cache=True)

    assert fs.cat(url) == data
    assert fs.info(url)["size"] == len(data)
    assert fs.cat_file(url, start=1000, end=1100) == data[1000:1100]
    with fs.open(url, block_size=512) as f:
        f.seek(5000)
        assert f.read(64) == data[5000:5064]
    ranged = [r for r in https_mirror.requests_for(path) if r.range]
    assert ranged and all(r.status == 206 for r in ranged)


def test_mirror_answers_bad_ranges_and_paths_outside_its_root(https_mirror: HttpMirror) -> None:
    contents = _fill_mirror(https_mirror)
    path, data = next(iter(contents.items()))
    (https_mirror.root.parent / "secret.txt").write_text("not served")
    host, port = https_mirror.url.split("/")[2].split(":")

    def request(method: str, target: str, headers: dict[str, str] | None = None):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request(method, target, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        return response, body

    response, body = request("GET", f"/{path}", {"Range": "bytes=-10"})
    assert (response.status, body) == (206, data[-10:])
    size = len(data)
    assert response.headers["Content-Range"] == f"bytes {size - 10}-{size - 1}/{size}"
    response, _ = request("GET", f"/{path}", {"Range": f"bytes={len(data)}-"})
    assert response.status == 416
    response, body = request("HEAD", f"/{path}")
    assert (response.status, body, int(response.headers["Content-Length"])) == (200, b"", len(data))
    assert request("GET", "/../secret.txt")[0].status == 404
    assert request("GET", f"/{CDF_DIR}")[0].status == 301  # folder without its slash
    with pytest.raises(FileNotFoundError):
        fsspec.filesystem("http", skip_instance_cache=True).cat(https_mirror.url_for("nope.cdf"))


def test_mirror_fails_the_first_requests_then_recovers(https_mirror: HttpMirror) -> None:
    contents = _fill_mirror(https_mirror)
    path, data = next(iter(contents.items()))
    fs = fsspec.filesystem("http", skip_instance_cache=True)
    https_mirror.fail_next(path, times=2)

    for _ in range(2):
        with pytest.raises(aiohttp.ClientResponseError) as failure:
            fs.cat(https_mirror.url_for(path))
        assert failure.value.status == 503
    assert fs.cat(https_mirror.url_for(path)) == data
    assert [r.status for r in https_mirror.requests_for(path)] == [503, 503, 200]
    https_mirror.clear_log()
    assert https_mirror.requests == []


# ------------------------------------------------------------------------ Dask


def _read_from_moto(key: str) -> tuple[int, bytes]:
    import fsspec  # runs in a worker process

    with fsspec.open(key) as f:  # endpoint from the worker's AWS_ENDPOINT_URL_S3
        return os.getpid(), f.read()


def test_dask_cluster_has_two_worker_processes_that_reach_moto(
    dask_cluster: str, s3_server: S3Server
) -> None:
    from distributed import Client

    s3_server.make_bucket("dask-smoke")
    s3_server.filesystem().pipe("dask-smoke/frame.bin", b"\x07" * 16)
    with Client(dask_cluster) as client:
        pids = client.run(os.getpid)
        futures = [
            client.submit(
                _read_from_moto, "s3://dask-smoke/frame.bin", workers=[address], pure=False
            )
            for address in pids
        ]
        results = client.gather(futures)

    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
    assert sorted(pid for pid, _ in results) == sorted(pids.values())
    assert all(payload == b"\x07" * 16 for _, payload in results)


@pytest.mark.slow
def test_prefect_flow_runs_its_tasks_on_the_dask_workers(
    dask_cluster: str, prefect_server: PrefectServer
) -> None:
    from distributed import Client
    from prefect import flow, task
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_dask import DaskTaskRunner

    @task
    def worker_pid(i: int) -> int:
        return os.getpid()

    @flow(task_runner=DaskTaskRunner(address=dask_cluster))
    def fan_out() -> list[int]:
        return [f.result() for f in [worker_pid.submit(i) for i in range(6)]]

    with Client(dask_cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
    # The session's server, rather than a second, temporary one for this test.
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        pids = fan_out()
    assert set(pids) <= worker_pids


# --------------------------------------------------------------------- Prefect


@pytest.mark.slow
def test_prefect_server_is_healthy_and_accepts_the_infra_work_pools(
    prefect_server: PrefectServer,
) -> None:
    assert httpx.get(f"{prefect_server.api_url}/health", timeout=10).json() is True
    # `aurora-pipeline server start`'s warm-up queries are ones this Prefect server answers
    assert warm_up_server(prefect_server.api_url) == len(WARM_UP_QUERIES)

    for name, kind in (("cpu-process", "process"), ("cpu-kubernetes", "kubernetes"),
                       ("gpu-kubernetes", "kubernetes")):
        template = REPO / "infra" / "work-pools" / f"{name}.json"
        prefect_server.cli("work-pool", "create", f"check-{name}", "--type", kind,
                           "--base-job-template", str(template), "--overwrite")
        pool = httpx.get(f"{prefect_server.api_url}/work_pools/check-{name}", timeout=10).json()
        assert pool["type"] == kind
        assert pool["base_job_template"] == json.loads(template.read_text())
