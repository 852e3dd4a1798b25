"""The format-2 store: positions, visibility, reads, tables, locks and refusals."""

import json
import multiprocessing as mp

import numpy as np
import pytest
import xarray as xr
import zarr

import aurora_pipeline
from aurora_pipeline.errors import StoreError
from aurora_pipeline.store import SLOTS_PER_HOUR, Store, open_site, open_sites, read_inventory, read_slots
from aurora_pipeline.store.facts import write_facts
from aurora_pipeline.store.failures import Failure, read_failure_log, read_failures, record_failures
from aurora_pipeline.store.runs import append_run, read_runs
from aurora_pipeline.store.writer import HourWrite, commit_hours, ensure_labels, set_stage, write_frames, write_hour, write_small


def _hour(stamp: str, n=5, offset_ms=53, size=8):
    start = np.datetime64(f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[8:10]}", "ms")
    times = start + np.arange(n) * np.timedelta64(3000, "ms") + np.timedelta64(offset_ms, "ms")
    frames = (np.arange(n)[:, None, None] + np.zeros((n, size, size))).astype(np.uint8)
    return np.datetime64(start, "h"), times, frames


def _store(path, size=8) -> Store:
    st = Store.open(path, mode="a")
    st.set_preprocess({"image_size": size}, {})
    return st


def test_late_hour_lands_in_time_order_at_its_own_slots(tmp_path):
    st = _store(tmp_path / "s.zarr")
    for stamp in ["2011010617", "2011010616"]:  # 17 first, then the late 16
        hour, times, frames = _hour(stamp)
        write_hour(st, "gako", hour, times, frames, source_file=stamp)
    ds = aurora_pipeline.open_site(tmp_path / "s.zarr", "gako")
    t = ds.time.values
    assert len(t) == 10 and (np.diff(t) > np.timedelta64(0)).all()
    assert str(t[0]).startswith("2011-01-06T16:00:00.053")
    assert ds.frames.chunks is not None  # lazy, Dask-backed
    group = zarr.open_group(tmp_path / "s.zarr", path="gako/2011", mode="r")
    h16 = (5 * 24 + 16) * SLOTS_PER_HOUR  # 6 January 16 UT is hour 136 of 2011
    assert (group["frames"][h16 + 4] == 4).all() and (group["frames"][h16 + 5] == 0).all()


def test_times_keep_milliseconds_and_read_with_plain_xarray(tmp_path):
    st = _store(tmp_path / "s.zarr")
    hour, times, frames = _hour("2011010617", n=3, offset_ms=1)
    times = times + np.array([0, 7, 999]).astype("timedelta64[ms]")
    write_hour(st, "gako", hour, times, frames)
    np.testing.assert_array_equal(open_site(st, "gako").time.values.astype("datetime64[ms]"), times)
    raw = xr.open_zarr(tmp_path / "s.zarr", group="gako/2011", consolidated=False)
    assert raw.time.encoding["units"] == "milliseconds since 1970-01-01"
    slot = (5 * 24 + 17) * SLOTS_PER_HOUR
    np.testing.assert_array_equal(raw.time[slot: slot + 3].values.astype("datetime64[ms]"), times)
    assert np.isnat(raw.time[slot + 3].values)  # unused slots decode to missing


def test_hour_without_its_facts_is_invisible_and_redone(tmp_path):
    st = _store(tmp_path / "s.zarr")
    hour, times, frames = _hour("2011010617")
    write_frames(st, "gako", hour, frames)  # a worker wrote the frames; the driver died before the facts
    assert read_inventory(st).empty
    with pytest.raises(StoreError, match="no stored hours"):
        open_site(st, "gako")
    write_hour(st, "gako", hour, times, frames)  # the next run redoes it
    write_hour(st, "gako", hour, times, frames)
    assert open_site(st, "gako").sizes["time"] == 5


def test_rewrite_with_fewer_frames_leaves_nothing_behind(tmp_path):
    st = _store(tmp_path / "s.zarr")
    hour, times, frames = _hour("2011010617", n=6)
    write_hour(st, "gako", hour, times, frames + 1)
    write_hour(st, "gako", hour, times[:2], frames[:2] + 1)
    ds = open_site(st, "gako")
    assert ds.sizes["time"] == 2
    group = zarr.open_group(tmp_path / "s.zarr", path="gako/2011", mode="r")
    slot = (5 * 24 + 17) * SLOTS_PER_HOUR
    assert (group["frames"][slot + 2: slot + 6] == 0).all()


def test_rewrite_with_fewer_frames_clears_every_derived_value_of_the_hour(tmp_path):
    from aurora_pipeline.store.writer import ensure_cluster, ensure_embedding, write_embedding

    st = _store(tmp_path / "s.zarr")
    hour, times, frames = _hour("2011010617", n=6)
    write_hour(st, "gako", hour, times, frames)
    index = 5 * 24 + 17
    ensure_embedding(st, "gako", 2011, 4)
    write_embedding(st, "gako", 2011, index, np.ones((6, 4), np.float32))
    ensure_labels(st, "gako", 2011, ["arc", "moon"])
    ensure_cluster(st, "gako", 2011, 3)
    write_small(st, "gako", 2011, {"label": {index: np.ones(6, np.int8)},
                                   "label_probability": {index: np.full((6, 2), 0.5, np.float32)},
                                   "cluster": {index: np.full(6, 2, np.int16)}})
    write_hour(st, "gako", hour, times[:4], frames[:4])  # a re-issued file with fewer frames
    slots = np.arange(index * SLOTS_PER_HOUR, index * SLOTS_PER_HOUR + 6)
    assert np.isnan(read_slots(st, "gako", 2011, slots, "embedding")).all()
    assert (read_slots(st, "gako", 2011, slots, "label") == -1).all()
    assert np.isnan(read_slots(st, "gako", 2011, slots, "label_probability")).all()
    assert (read_slots(st, "gako", 2011, slots, "cluster") == -1).all()


def test_open_site_time_range_and_plain_datatree(tmp_path):
    st = _store(tmp_path / "s.zarr")
    for stamp in ["2011010616", "2011010617", "2011010618"]:
        write_hour(st, "gako", *_hour(stamp))
    ds = open_site(tmp_path / "s.zarr", "gako", start="2011-01-06T17", end="2011-01-06T18")
    assert ds.sizes["time"] == 5 and str(ds.time.values[0]).startswith("2011-01-06T17")
    part = open_site(tmp_path / "s.zarr", "gako", start="2011-01-06T17:00:04", end="2011-01-06T17:00:10")
    assert part.sizes["time"] == 2
    tree = xr.open_datatree(tmp_path / "s.zarr", engine="zarr", consolidated=False)
    assert tree["gako/2011"].dataset.frames.attrs["units"] == "1"
    assert int(tree["gako/2011"].dataset.hour_frames.sum()) == 15


def test_hours_span_years_in_one_dataset(tmp_path):
    st = _store(tmp_path / "s.zarr")
    for stamp in ["2011123123", "2012010100"]:
        write_hour(st, "gako", *_hour(stamp))
    ds = open_site(st, "gako")
    assert ds.sizes["time"] == 10 and st.years("gako") == [2011, 2012]
    assert (np.diff(ds.time.values) > np.timedelta64(0)).all()


def test_missing_labels_decode_as_missing_and_are_skipped(tmp_path):
    st = _store(tmp_path / "s.zarr")
    hours = []
    for stamp in ["2011010616", "2011010617"]:
        hour, times, frames = _hour(stamp)
        write_hour(st, "gako", hour, times, frames)
        hours.append(hour)
    ensure_labels(st, "gako", 2011, ["arc", "clear"])
    h16 = 5 * 24 + 16
    write_small(st, "gako", 2011, {"label": {h16: np.ones(5, np.int8)},
                                    "label_probability": {h16: np.tile([0.2, 0.8], (5, 1)).astype(np.float32)}})
    set_stage(st, "gako", 2011, np.array([h16]), "classifier", "clf-1")  # hour 17 never classified
    ds = open_site(st, "gako")
    assert np.isnan(ds.label.values[5:]).all() and (ds.label.values[:5] == 1).all()
    assert ds.label.attrs["flag_meanings"] == "arc clear"
    assert open_sites(st, label="clear").sizes["time"] == 5
    assert open_sites(st, label="arc").sizes["time"] == 0


def test_sites_come_from_the_catalogue_not_group_names(tmp_path):
    st = _store(tmp_path / "s.zarr")
    write_hour(st, "gako", *_hour("2011010617"))
    append_run(st, {"archive": "a", "files_new": 0}, "now")  # a `runs` table: four letters, not a site
    record_failures(st, [Failure("x", "gill", "2011010617", "bad", "fix", "now")], set(), "now")
    assert st.sites() == ["gako"]
    assert open_sites(tmp_path / "s.zarr").sizes["time"] == 5


def test_failures_table_round_trip_and_resolution(tmp_path):
    st = _store(tmp_path / "s.zarr")
    assert read_failures(st).empty and list(read_failures(st).columns)[:2] == ["source", "site"]
    bad = Failure("a/thg_l1_asf_gako_2011010617_v01.cdf", "gako", "2011010617", "truncated", "re-download", "now")
    record_failures(st, [bad], set(), "now")
    df = xr.open_zarr(tmp_path / "s.zarr", group="failures", consolidated=False).to_dataframe()
    assert list(df["problem"]) == ["truncated"]
    record_failures(st, [], {"b/thg_l1_asf_gako_2011010617_v01.cdf"}, "later")
    assert len(read_failures(st)) == 0 and list(read_failure_log(st)["outcome"]) == ["failed", "resolved"]


def _record_one_failure(args):
    path, i = args
    st = Store.open(path, mode="a")
    record_failures(st, [Failure(f"f{i}.cdf", "gako", "2011010617", f"problem {i}", "fix", "now")], set(), "now")
    append_run(st, {"archive": f"run {i}"}, "now")


def test_concurrent_writers_keep_every_row(tmp_path):
    path = str(tmp_path / "s.zarr")
    _store(path)
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_record_one_failure, [(path, i) for i in range(12)])
    assert sorted(read_failures(path)["problem"]) == sorted(f"problem {i}" for i in range(12))
    assert sorted(read_runs(path)["archive"]) == sorted(f"run {i}" for i in range(12))
    assert json.loads(read_runs(path)["summary"].iloc[0])["archive"].startswith("run ")


def _create_and_write(args):
    path, site = args
    st = Store.open(path, mode="a")
    st.set_preprocess({"image_size": 8}, {})
    write_hour(st, site, *_hour("2011010617"))


def test_two_runs_creating_one_store_at_once_both_land(tmp_path):
    path = str(tmp_path / "new.zarr")
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_create_and_write, [(path, "gako"), (path, "gill")])
    assert Store.open(path).sites() == ["gako", "gill"]
    assert len(read_inventory(path)) == 2


def _write_hour_frames(args):
    path, stamp = args
    hour, times, frames = _hour(stamp, n=40, size=32)
    return write_frames(Store.open(path, mode="a"), "gako", hour, frames)


def test_parallel_hours_never_share_a_chunk(tmp_path):
    path = str(tmp_path / "s.zarr")
    _store(path, size=32)
    with mp.get_context("spawn").Pool(2) as pool:
        keys = pool.map(_write_hour_frames, [(path, "2011010616"), (path, "2011010617")])
    assert keys[0] and keys[1] and not set(keys[0]) & set(keys[1])
    written = {p.relative_to(tmp_path / "s.zarr" / "gako" / "2011").as_posix()
               for p in (tmp_path / "s.zarr" / "gako" / "2011" / "frames").rglob("*") if p.is_file() and p.name != "zarr.json"}
    assert written == set(keys[0]) | set(keys[1])


def test_inventory_lists_visible_hours_with_checksums(tmp_path):
    st = _store(tmp_path / "s.zarr")
    hour, times, frames = _hour("2011010617")
    write_frames(st, "gako", hour, frames)
    commit_hours(st, "gako", [HourWrite(hour=hour, times=times, source_file="thg_l1_asf_gako_2011010617_v01.cdf",
                                        source_sha256="ab" * 32, source_size=123)])
    write_frames(st, "gako", *_hour("2011010618")[::2])  # frames only: not visible
    table = read_inventory(tmp_path / "s.zarr")
    assert table.assign(hour=table.hour.astype(str)).to_dict("records") == [
        {"site": "gako", "hour": "2011-01-06 17:00:00", "file": "thg_l1_asf_gako_2011010617_v01.cdf",
         "sha256": "ab" * 32, "size": 123, "frames": 5}]


def test_hidden_facts_make_an_hour_invisible(tmp_path):
    st = _store(tmp_path / "s.zarr")
    write_hour(st, "gako", *_hour("2011010617"))
    write_facts(st.year_group("gako", 2011), np.array([5 * 24 + 17]), {"frames": 0})
    assert read_inventory(st).empty


def test_other_preprocessing_setting_is_refused(tmp_path):
    st = _store(tmp_path / "s.zarr", size=8)
    with pytest.raises(StoreError, match=r"image_size=8 \(asked 16\).*--image-size 8"):
        st.set_preprocess({"image_size": 16}, {})


def test_store_path_that_is_a_file_or_read_only_is_refused(tmp_path):
    f = tmp_path / "plain.txt"
    f.write_text("x")
    with pytest.raises(StoreError, match="regular file"):
        Store.open(f, mode="a")
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        import os

        if os.access(locked, os.W_OK):  # root ignores permissions: nothing to show
            pytest.skip("running as root: a read-only directory is writable")
        with pytest.raises(StoreError, match="cannot be written"):
            Store.open(locked / "s.zarr", mode="a")
    finally:
        locked.chmod(0o700)


def _old_layout_store(path):
    times = np.datetime64("2011-01-06T17", "ms") + np.arange(4) * np.timedelta64(3000, "ms")
    ds = xr.Dataset({"frames": (("time", "y", "x"), np.full((4, 8, 8), 9, np.uint8))}, coords={"time": times},
                    attrs={"aurora_ingest_complete": True, "aurora_source_file": "thg_l1_asf_gako_2011010617_v01.cdf",
                           "preprocess_image_size": 8, "preprocess_fov_shrink": 0.15})
    ds.to_zarr(path, group="gako/20110106T17", mode="w", consolidated=False,
               encoding={"time": {"units": "milliseconds since 1970-01-01", "dtype": "int64"}})


def test_old_layout_is_refused_with_the_converter_command(tmp_path):
    _old_layout_store(tmp_path / "old.zarr")
    with pytest.raises(StoreError, match="old one-group-per-hour layout.*convert-store"):
        open_site(tmp_path / "old.zarr", "gako")


def test_convert_store_copies_frames_and_times(tmp_path):
    from aurora_pipeline.store.legacy import convert_store

    _old_layout_store(tmp_path / "old.zarr")
    out = convert_store(str(tmp_path / "old.zarr"), str(tmp_path / "new.zarr"))
    assert out["hours"] == 1
    ds = open_site(tmp_path / "new.zarr", "gako")
    assert ds.sizes["time"] == 4 and int(ds.frames.max()) == 9
    assert read_inventory(tmp_path / "new.zarr").file.tolist() == ["thg_l1_asf_gako_2011010617_v01.cdf"]


def test_convert_store_refuses_a_new_place_that_is_not_empty(tmp_path):
    """issue 18 item 1: converting onto an existing store overwrote its hours; now nothing is written."""
    from aurora_pipeline.errors import BadInputError
    from aurora_pipeline.store.legacy import convert_store

    _old_layout_store(tmp_path / "old.zarr")
    existing = _store(tmp_path / "existing.zarr")
    hour, times, frames = _hour("2011010617", n=48)
    write_hour(existing, "gako", hour, times, frames, source_file="mine.cdf")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "existing.zarr").rglob("*") if p.is_file())
    with pytest.raises(BadInputError, match=r"existing\.zarr: is not a new, empty place: it holds an existing store"):
        convert_store(str(tmp_path / "old.zarr"), str(tmp_path / "existing.zarr"))
    after = sorted(p.relative_to(tmp_path) for p in (tmp_path / "existing.zarr").rglob("*") if p.is_file())
    assert after == before and open_site(tmp_path / "existing.zarr", "gako").sizes["time"] == 48
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    with pytest.raises(BadInputError, match=r"it holds other files \(1 entries: mine\.txt\)"):
        convert_store(str(tmp_path / "old.zarr"), str(tmp_path / "notes"))
    (tmp_path / "empty").mkdir()  # an empty folder is a new place
    assert convert_store(str(tmp_path / "old.zarr"), str(tmp_path / "empty"))["hours"] == 1


def test_s3_writers_take_the_lock_and_keep_every_row(s3_env):
    s3_env.make_bucket("locks")
    url = "s3://locks/store.zarr"
    _store(url)
    with mp.get_context("spawn").Pool(3) as pool:
        pool.map(_record_one_failure, [(url, i) for i in range(6)])
    assert sorted(read_failures(url)["problem"]) == sorted(f"problem {i}" for i in range(6))
    assert len(read_runs(url)) == 6


def test_s3_lock_is_exclusive_and_released(s3_env):
    from aurora_pipeline.store.locks import store_lock

    s3_env.make_bucket("excl")
    st = _store("s3://excl/store.zarr")
    with store_lock(st, "gako"):
        with pytest.raises(StoreError, match="held by another writer"):
            with store_lock(st, "gako", wait_s=0.5):
                pass
    with store_lock(st, "gako", wait_s=0.5):  # released on exit
        pass


def test_convert_store_command(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    _old_layout_store(tmp_path / "old.zarr")
    exe = Path(sys.executable).with_name("aurora-pipeline")
    done = subprocess.run([str(exe), "convert-store", str(tmp_path / "old.zarr"), str(tmp_path / "new.zarr")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["hours"] == 1
    bad = subprocess.run([str(exe), "convert-store", str(tmp_path / "missing.zarr"), str(tmp_path / "x.zarr")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "no hour groups of the old layout" in bad.stderr and "Traceback" not in bad.stderr
    again = subprocess.run([str(exe), "convert-store", str(tmp_path / "old.zarr"), str(tmp_path / "new.zarr")],
                           capture_output=True, text=True, timeout=300)  # onto the store it just wrote
    assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr
    assert "is not a new, empty place: it holds an existing store" in again.stderr


def test_the_library_reaches_zarr_only_through_its_public_api():
    # zarr's `Group._async_group` and `Array._async_array` are private fields that a zarr
    # release may rename; the public `zarr.AsyncGroup(metadata, store_path)` and
    # `Array.async_array` do the same job
    import ast
    from pathlib import Path

    private = {"_async_group", "_async_array"}
    root = Path(aurora_pipeline.__file__).parent
    used = [f"{path.relative_to(root)}:{node.lineno} .{node.attr}" for path in sorted(root.rglob("*.py"))
            for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Attribute) and node.attr in private]
    assert not used, used
