"""Ingest from an HTTP mirror and from S3 (real local servers), and on a real Dask cluster."""

import shutil

import numpy as np
import pytest
import xarray as xr

import aurora_pipeline
from aurora_pipeline.source.archive import list_archive
from aurora_pipeline.dask_cluster import dask_client
from aurora_pipeline.ingest.driver import ingest
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.synth.archive import write_synthetic_archive

SMALL = PreprocessConfig(image_size=32)


@pytest.fixture
def local_reference(tmp_path):
    archive = tmp_path / "archive"
    write_synthetic_archive(archive, sites=["gako", "gill"], start="2011-01-06T04", hours=2, frames_per_hour=8)
    store = tmp_path / "reference.zarr"
    ingest(list_archive(archive), store, SMALL)
    return archive, store


def _same_frames(a, b, site):
    da, db = aurora_pipeline.open_site(a, site), aurora_pipeline.open_site(b, site)
    np.testing.assert_array_equal(da.time.values, db.time.values)
    np.testing.assert_array_equal(da.frames.values, db.frames.values)


def test_https_mirror_lists_only_the_asked_hours_and_retries(https_mirror, local_reference, tmp_path):
    archive, reference = local_reference
    shutil.copytree(archive / "thg", https_mirror.root / "thg")
    https_mirror.fail_next("thg/l1/asi/gako/2011/01/thg_l1_asf_gako_2011010605_v01.cdf", times=1)
    files = list_archive(https_mirror.url, sites=["gako"], start="2011-01-06T05", end="2011-01-06T06")
    assert [f.name for f in files] == ["thg_l1_asf_gako_2011010605_v01.cdf"]
    assert not any("/gill" in r.path for r in https_mirror.requests), "another site was listed"
    store = tmp_path / "http.zarr"
    report = ingest(files, store, SMALL)
    assert len(report.ingested) == 1, report.summary()
    statuses = [r.status for r in https_mirror.requests_for("thg/l1/asi/gako/2011/01/thg_l1_asf_gako_2011010605_v01.cdf")]
    assert 503 in statuses and statuses[-1] in (200, 206), f"the 503 was not retried: {statuses}"
    ref = aurora_pipeline.open_site(reference, "gako", start="2011-01-06T05", end="2011-01-06T06")
    np.testing.assert_array_equal(aurora_pipeline.open_site(store, "gako").frames.values, ref.frames.values)


def test_s3_archive_and_s3_store(s3_env, local_reference):
    archive, reference = local_reference
    fs = s3_env.filesystem()
    bucket = s3_env.make_bucket("themis-test")
    fs.put(str(archive / "thg"), "themis-test/mirror/thg", recursive=True)
    files = list_archive(f"{bucket}/mirror", sites=["gako", "gill"])
    assert len(files) == 4 and all(f.url.startswith("s3://") for f in files)
    store = f"{bucket}/stores/asi.zarr"
    report = ingest(files, store, SMALL)
    assert len(report.ingested) == 4, report.summary()
    for site in ("gako", "gill"):
        _same_frames(store, reference, site)
    tree = xr.open_datatree(store, engine="zarr", consolidated=False)
    assert "gako" in tree.children
    assert len(ingest(files, store, SMALL).ingested) == 0  # idempotent on S3 too


def test_real_dask_cluster_with_two_workers(dask_cluster, local_reference, tmp_path):
    archive, reference = local_reference
    store = tmp_path / "dask.zarr"
    with dask_client(dask_cluster) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        report = ingest(list_archive(archive), store, SMALL, client=client)
        workers = {w["id"] for w in client.scheduler_info()["workers"].values()}
    assert len(report.ingested) == 4 and len(workers) == 2
    for site in ("gako", "gill"):
        _same_frames(store, reference, site)


def test_s3_archive_and_store_on_the_local_clusters_worker_threads(s3_env, local_reference):
    """The command's local cluster (worker threads of one process): two files at a time fetched from
    S3 and written to an S3 store, the same frames as the serial local ingest."""
    archive, reference = local_reference
    fs = s3_env.filesystem()
    bucket = s3_env.make_bucket("themis-threads")
    fs.put(str(archive / "thg"), "themis-threads/mirror/thg", recursive=True)
    files = list_archive(f"{bucket}/mirror", sites=["gako", "gill"])
    store = f"{bucket}/stores/asi.zarr"
    with dask_client(n_workers=2, threads=True) as client:
        report = ingest(files, store, SMALL, client=client)
    assert len(report.ingested) == 4, report.summary()
    for site in ("gako", "gill"):
        _same_frames(store, reference, site)
