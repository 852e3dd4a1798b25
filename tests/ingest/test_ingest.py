"""Ingest end to end: real and synthetic CDFs, both layouts, bad input, reruns, kills and late hours."""

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import aurora_pipeline
from aurora_pipeline.dask_cluster import dask_client
from aurora_pipeline.source.archive import list_archive, relative_path
from aurora_pipeline.store.failures import read_failures
from aurora_pipeline.ingest.driver import ingest
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.store import Store, hour_facts, read_inventory
from aurora_pipeline.synth.archive import render_site_hour, write_asi_cdf, write_synthetic_archive

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
REAL = SHARED / "themis" / "thg_l1_asf_gako_2011010617_v01.cdf"
SMALL = PreprocessConfig(image_size=32)


def _store_snapshot(path: Path) -> dict:
    """Every file of a store and its bytes, minus nothing: 'exactly as one run would'."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _frames_by_time(store, site):
    ds = aurora_pipeline.open_site(store, site)
    return ds.time.values, ds.frames.values


def test_real_themis_file_keeps_milliseconds(tmp_path):
    if not REAL.exists():
        pytest.skip(f"real THEMIS file not found at {REAL} (../shared/data is absent)")
    archive = tmp_path / "archive"
    target = archive / relative_path("gako", "2011-01-06T17")
    target.parent.mkdir(parents=True)
    shutil.copy(REAL, target)
    report = ingest(list_archive(archive, sites=["gako"]), tmp_path / "s.zarr", SMALL)
    assert report.summary()["files_ingested"] == 1
    ds = aurora_pipeline.open_site(tmp_path / "s.zarr", "gako")
    assert ds.sizes["time"] == 23
    assert ds.time.values[0] == np.datetime64("2011-01-06T17:00:00.053")
    facts = hour_facts(Store.open(tmp_path / "s.zarr"), "gako")
    assert facts["source_sha256"].tolist() == ["ced04f7ac30fb683eee85aa810244c263de39c6c1b91323fa8b3d330d70b9a0a"]
    assert facts["source_layout"].tolist() == ["legacy"]
    assert ds.attrs["preprocess_fov_shrink"] == 0.15 and Store.open(tmp_path / "s.zarr").preprocess["image_size"] == 32


def test_both_layouts_give_the_same_store_content(tmp_path):
    stores = {}
    for layout in ("legacy", "v2024"):
        archive = tmp_path / layout
        write_synthetic_archive(archive, sites=["gill"], start="2011-01-06T04", hours=1, frames_per_hour=20, layout=layout)
        store = tmp_path / f"{layout}.zarr"
        ingest(list_archive(archive), store, SMALL)
        stores[layout] = _frames_by_time(store, "gill")
    np.testing.assert_array_equal(stores["legacy"][0], stores["v2024"][0])
    np.testing.assert_array_equal(stores["legacy"][1], stores["v2024"][1])


def test_rerun_leaves_the_store_exactly_as_one_run(tmp_path):
    archive = tmp_path / "archive"
    write_synthetic_archive(archive, sites=["gako", "gill"], hours=2, frames_per_hour=10)
    store = tmp_path / "s.zarr"
    first = ingest(list_archive(archive), store, SMALL)
    before = _store_snapshot(store)
    second = ingest(list_archive(archive), store, SMALL)
    assert len(first.ingested) == 4 and len(second.ingested) == 0 and len(second.skipped) == 4
    assert _store_snapshot(store) == before


def test_a_run_with_nothing_new_starts_no_cluster(tmp_path):
    archive = tmp_path / "archive"
    write_synthetic_archive(archive, sites=["gako"], hours=2, frames_per_hour=10)
    store = tmp_path / "s.zarr"
    started = []

    @contextlib.contextmanager
    def cluster():
        with dask_client(n_workers=2, threads=True) as client:
            started.append(client)
            yield client

    first = ingest(list_archive(archive), store, SMALL, cluster=cluster)
    assert len(first.ingested) == 2 and len(started) == 1  # the files ran on the cluster it started
    second = ingest(list_archive(archive), store, SMALL, cluster=cluster)
    assert len(second.skipped) == 2 and len(started) == 1  # nothing new: no cluster


def test_on_a_cluster_the_largest_files_go_first(tmp_path):
    # the last files to finish, each alone on a worker, are then the smallest
    archive = tmp_path / "archive"
    first = np.datetime64("2011-01-06T04", "h")
    for i, frames in enumerate([8, 24, 16]):
        times, images, _ = render_site_hour("gako", first + i, frames, 0, size=64)
        write_asi_cdf(archive / relative_path("gako", first + i), "gako", times, images)
    done = []
    with dask_client(n_workers=1, threads=True) as client:  # one worker: files run in the order given to it
        report = ingest(list_archive(archive), tmp_path / "s.zarr", SMALL, client=client, on_outcome=done.append)
    assert [o.frames for o in done] == [24, 16, 8]
    assert [o.frames for o in report.ingested] == [8, 24, 16]  # the report stays in hour order


def _frame_chunks(store: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in (store / "gako" / "2011" / "frames" / "c").rglob("*") if p.is_file()}


def test_late_hour_lands_in_place_without_rewriting_history(tmp_path):
    archive, store = tmp_path / "archive", tmp_path / "s.zarr"
    write_synthetic_archive(archive, sites=["gako"], start="2011-01-06T17", hours=1, frames_per_hour=12)
    ingest(list_archive(archive), store, SMALL)
    hour17 = _frame_chunks(store)
    write_synthetic_archive(archive, sites=["gako"], start="2011-01-06T16", hours=1, frames_per_hour=12)
    report = ingest(list_archive(archive), store, SMALL)
    assert [o.file.hour_code for o in report.ingested] == ["2011010616"]
    times, _ = _frames_by_time(store, "gako")
    assert len(times) == 24 and (np.diff(times) > np.timedelta64(0)).all()
    after = _frame_chunks(store)
    assert len(after) == len(hour17) + 1  # the late hour's own chunk, nothing else
    assert {p: m for p, m in after.items() if p in hour17} == hour17


def _bad_files(archive: Path) -> dict[str, Path]:
    """One archive file per kind of bad input, each named where the official tree puts it."""
    hour = np.datetime64("2011-01-06T05", "h")
    times, images, _ = render_site_hour("gako", hour, 6, 0, size=64)
    bad = {}
    good = write_asi_cdf(archive / relative_path("gako", hour), "gako", times, images)
    truncated = archive / relative_path("gako", hour + 1)
    truncated.parent.mkdir(parents=True, exist_ok=True)
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    bad["truncated"] = truncated
    t2, i2, _ = render_site_hour("gako", hour + 2, 6, 0, size=64)
    bad["not increasing"] = write_asi_cdf(archive / relative_path("gako", hour + 2), "gako", t2[::-1].copy(), i2)
    t3, i3, _ = render_site_hour("gill", hour + 3, 6, 0, size=64)
    bad["site"] = write_asi_cdf(archive / relative_path("gako", hour + 3), "gill", t3, i3)  # content says gill
    t4, i4, _ = render_site_hour("gako", hour + 4, 6, 0, size=64)
    bad["hour"] = write_asi_cdf(archive / relative_path("gako", hour + 4), "gako", t4 + np.timedelta64(2, "h"), i4)
    bad["shape"] = write_asi_cdf(archive / relative_path("gako", hour + 5), "gako", t4[:3], i4[:3, :, :40])
    return bad


def test_bad_files_are_recorded_and_never_stop_the_others(tmp_path):
    archive, store = tmp_path / "archive", tmp_path / "s.zarr"
    bad = _bad_files(archive)
    report = ingest(list_archive(archive, sites=["gako"]), store, SMALL)
    assert [o.file.hour_code for o in report.ingested] == ["2011010605"]
    failures = read_failures(store)
    assert len(failures) == len(bad)
    for kind, path in bad.items():
        row = failures[failures["source"].str.endswith(path.name)]
        assert len(row) == 1, kind
        assert row["problem"].iloc[0] and row["fix"].iloc[0]
    problems = " ".join(failures["problem"]).lower()
    for word in ("increasing", "gill", "outside the hour"):
        assert word in problems
    # the good hour reads fine and nothing half-written is visible
    assert read_inventory(store)["hour"].astype(str).tolist() == ["2011-01-06 05:00:00"]
    # plain pandas/xarray reads the failures table
    assert len(xr.open_zarr(store, group="failures", consolidated=False).to_dataframe()) == len(bad)


def test_a_store_with_no_failures_has_an_empty_failures_table(tmp_path):
    # the README's read-back block reads it with plain xarray right after `make demo`
    archive, store = tmp_path / "archive", tmp_path / "s.zarr"
    write_synthetic_archive(archive, sites=["gako"], hours=1, frames_per_hour=4)
    assert len(ingest(list_archive(archive), store, SMALL).failed) == 0
    log = xr.open_zarr(store, group="failures", consolidated=False).to_dataframe()
    assert log.empty and {"source", "site", "hour", "problem", "fix", "outcome"} <= set(log.columns)
    assert read_failures(store).empty


def test_unknown_site_code_is_reported(tmp_path):
    archive, store = tmp_path / "archive", tmp_path / "s.zarr"
    hour = np.datetime64("2011-01-06T05", "h")
    times, images, _ = render_site_hour("gako", hour, 4, 0, size=64)
    write_asi_cdf(archive / relative_path("zzzz", hour), "zzzz", times, images)
    report = ingest(list_archive(archive), store, SMALL)  # listed from the tree, not asked for
    assert len(report.failed) == 1 and "zzzz" in report.failed[0].problem


def test_fixed_file_leaves_the_failures_table(tmp_path):
    archive, store = tmp_path / "archive", tmp_path / "s.zarr"
    hour = np.datetime64("2011-01-06T05", "h")
    times, images, _ = render_site_hour("gako", hour, 4, 0, size=64)
    path = write_asi_cdf(archive / relative_path("gako", hour), "gako", times, images)
    good = path.read_bytes()
    path.write_bytes(good[:100])
    ingest(list_archive(archive), store, SMALL)
    assert len(read_failures(store)) == 1
    path.write_bytes(good)  # the archive re-issues the file
    ingest(list_archive(archive), store, SMALL)
    assert len(read_failures(store)) == 0
    assert aurora_pipeline.open_site(store, "gako").sizes["time"] == 4


KILLABLE = """
import sys
from aurora_pipeline.source.archive import list_archive
from aurora_pipeline.ingest.driver import ingest
from aurora_pipeline.ingest.preprocess import PreprocessConfig
ingest(list_archive(sys.argv[1]), sys.argv[2], PreprocessConfig(image_size=128))
"""


def test_killed_run_resumes_with_nothing_lost_or_doubled(tmp_path):
    archive = tmp_path / "archive"
    write_synthetic_archive(archive, sites=["gako"], hours=4, frames_per_hour=200)
    killed, clean = tmp_path / "killed.zarr", tmp_path / "clean.zarr"
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(archive), str(killed)])
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(_frame_chunks(killed) if (killed / "gako" / "2011").exists() else {}) >= 2 * 2:
            break  # two hours' frames written (two chunks an hour at 128 px and 200 frames)
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    started = len(_frame_chunks(killed)) // 2
    assert 1 <= started < 4, "the run was not killed half way; make the archive larger"
    assert read_inventory(killed).empty  # written frames without their facts are invisible
    ingest(list_archive(archive), killed, PreprocessConfig(image_size=128))
    ingest(list_archive(archive), clean, PreprocessConfig(image_size=128))
    t1, f1 = _frames_by_time(killed, "gako")
    t2, f2 = _frames_by_time(clean, "gako")
    assert len(t1) == 4 * 200
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(f1, f2)


def test_archive_without_the_official_tree_is_refused(tmp_path):
    from aurora_pipeline.errors import BadInputError

    with pytest.raises(BadInputError, match="thg/l1/asi"):
        list_archive(tmp_path / "not-an-archive")


def test_ingest_with_another_image_size_is_refused(tmp_path):
    from aurora_pipeline.errors import StoreError

    archive, store = tmp_path / "archive", tmp_path / "s.zarr"
    write_synthetic_archive(archive, sites=["gako"], hours=1, frames_per_hour=4)
    ingest(list_archive(archive), store, SMALL)
    write_synthetic_archive(archive, sites=["gako"], start="2011-01-06T05", hours=1, frames_per_hour=4)
    with pytest.raises(StoreError, match=r"image_size=32 \(asked 64\)"):
        ingest(list_archive(archive), store, PreprocessConfig(image_size=64))
    assert len(read_inventory(store)) == 1
    report = ingest(list_archive(archive), store)  # no setting given: the store's own
    assert len(report.ingested) == 1


def test_a_bug_in_preprocessing_is_raised_not_recorded(tmp_path, monkeypatch):
    import aurora_pipeline.ingest.driver as driver

    archive, store = tmp_path / "archive", tmp_path / "s.zarr"
    write_synthetic_archive(archive, sites=["gako"], hours=2, frames_per_hour=4)

    def broken(images, cfg, fov=None):
        raise ZeroDivisionError("injected bug")

    monkeypatch.setattr(driver, "preprocess_frames", broken)
    with pytest.raises(RuntimeError, match="unexpected error.*ZeroDivisionError.*not bad input"):
        ingest(list_archive(archive), store, SMALL)
    assert read_failures(store).empty


def test_stored_frames_are_the_preprocessing_of_the_whole_file(tmp_path):
    """ingest_file preprocesses a block at a time while the next block is decoded: the stored
    frames are byte for byte those of preprocess_frames on the whole file's counts."""
    from aurora_pipeline.ingest.preprocess import preprocess_frames
    from aurora_pipeline.source.cdf import read_asi_cdf

    archive = tmp_path / "archive"
    write_synthetic_archive(archive, sites=["gako"], hours=1, frames_per_hour=250)
    (file,) = list_archive(archive)
    cfg = PreprocessConfig(image_size=64)
    ingest([file], tmp_path / "s.zarr", cfg)
    stored = aurora_pipeline.open_site(tmp_path / "s.zarr", "gako").frames.values
    np.testing.assert_array_equal(stored, preprocess_frames(read_asi_cdf(file.url).images, cfg))


def test_a_store_of_the_first_oath_setting_keeps_its_float64_resize(tmp_path):
    """The first OATH-framed stores recorded no ``oath_resize``: they read as "float64", take new
    hours in that setting (the bytes of ``oath_resize="float64"``), and their record is left as it was."""
    import zarr

    from aurora_pipeline.errors import StoreError
    from aurora_pipeline.ingest.preprocess import preprocess_frames
    from aurora_pipeline.source.cdf import read_asi_cdf

    archive, store = tmp_path / "archive", tmp_path / "s.zarr"
    write_synthetic_archive(archive, sites=["gako"], hours=1, frames_per_hour=20)
    old = PreprocessConfig(image_size=64, oath_resize="float64")
    ingest(list_archive(archive), store, old)
    root = zarr.open_group(str(store), mode="r+")
    recorded = {k: v for k, v in root.attrs["aurora_preprocess"].items() if k != "oath_resize"}
    root.attrs["aurora_preprocess"] = recorded            # as the code before oath_resize recorded it
    assert Store.open(store).preprocess["oath_resize"] == "float64"
    write_synthetic_archive(archive, sites=["gako"], start="2011-01-06T05", hours=1, frames_per_hour=20)
    report = ingest(list_archive(archive), store)           # no setting asked: the store's own
    assert len(report.ingested) == 1
    new_file = next(f for f in list_archive(archive) if f.hour_code.endswith("05"))
    stored = aurora_pipeline.open_site(store, "gako").frames.values[20:]
    np.testing.assert_array_equal(stored, preprocess_frames(read_asi_cdf(new_file.url).images, old))
    assert zarr.open_group(str(store), mode="r").attrs["aurora_preprocess"] == recorded
    with pytest.raises(StoreError, match=r"oath_resize='float64' \(asked 'pil'\)"):
        ingest(list_archive(archive), store, PreprocessConfig(image_size=64))
