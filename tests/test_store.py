import numpy as np
import pytest
import xarray as xr
import zarr

import aurora_pipeline
from aurora_pipeline.errors import StoreError
from aurora_pipeline.store.failures import Failure, read_failures, update_failures
from aurora_pipeline.store.zarr_layout import COMPLETE, list_hours, write_hour_frames, zarr_store


def _hour(site_hour: str, n=5, offset_ms=53):
    start = np.datetime64(f"{site_hour[:4]}-{site_hour[4:6]}-{site_hour[6:8]}T{site_hour[8:10]}", "ms")
    times = start + np.arange(n) * np.timedelta64(3000, "ms") + np.timedelta64(offset_ms, "ms")
    frames = (np.arange(n)[:, None, None] + np.zeros((n, 8, 8))).astype(np.uint8)
    return times, frames


def test_late_hour_lands_in_time_order(tmp_path):
    zs = zarr_store(tmp_path / "s.zarr")
    for hour in ["2011010617", "2011010616"]:  # 17 first, then the late 16
        times, frames = _hour(hour)
        write_hour_frames(zs, "gako", hour, times, frames, {"aurora_source_file": hour})
    ds = aurora_pipeline.open_site(tmp_path / "s.zarr", "gako")
    t = ds.time.values
    assert len(t) == 10 and (np.diff(t) > np.timedelta64(0)).all()
    assert str(t[0]) .startswith("2011-01-06T16:00:00.053")
    assert ds.frames.chunks is not None  # lazy, Dask-backed


def test_times_keep_milliseconds(tmp_path):
    zs = zarr_store(tmp_path / "s.zarr")
    times, frames = _hour("2011010617", n=3, offset_ms=1)
    times = times + np.array([0, 7, 999]).astype("timedelta64[ms]")
    write_hour_frames(zs, "gako", "2011010617", times, frames, {})
    back = xr.open_zarr(tmp_path / "s.zarr", group="gako/20110106T17").time.values.astype("datetime64[ms]")
    np.testing.assert_array_equal(back, times)


def test_incomplete_hour_is_ignored_and_rewrite_replaces(tmp_path):
    zs = zarr_store(tmp_path / "s.zarr")
    times, frames = _hour("2011010617")
    write_hour_frames(zs, "gako", "2011010617", times, frames, {})
    zarr.open_group(zs, path="gako/20110106T17", mode="r+").attrs[COMPLETE] = False  # as if killed half way
    assert list_hours(zs, "gako") == []
    with pytest.raises(StoreError, match="no complete hours"):
        aurora_pipeline.open_site(tmp_path / "s.zarr", "gako")
    write_hour_frames(zs, "gako", "2011010617", times, frames, {})
    write_hour_frames(zs, "gako", "2011010617", times, frames, {})
    assert aurora_pipeline.open_site(tmp_path / "s.zarr", "gako").sizes["time"] == 5


def test_open_site_time_range_and_plain_datatree(tmp_path):
    zs = zarr_store(tmp_path / "s.zarr")
    for hour in ["2011010616", "2011010617", "2011010618"]:
        write_hour_frames(zs, "gako", hour, *_hour(hour), {})
    ds = aurora_pipeline.open_site(tmp_path / "s.zarr", "gako", start="2011-01-06T17", end="2011-01-06T18")
    assert ds.sizes["time"] == 5 and str(ds.time.values[0]).startswith("2011-01-06T17")
    tree = xr.open_datatree(tmp_path / "s.zarr", engine="zarr")
    assert tree["gako/20110106T17"].dataset.frames.attrs["units"] == "1"


def test_failures_table_round_trip_and_clearing(tmp_path):
    zs = zarr_store(tmp_path / "s.zarr")
    bad = Failure("a/thg_l1_asf_gako_2011010617_v01.cdf", "gako", "2011010617", "truncated", "re-download", "now")
    update_failures(zs, [bad], set())
    df = xr.open_zarr(tmp_path / "s.zarr", group="failures").to_dataframe()
    assert list(df["problem"]) == ["truncated"]
    update_failures(zs, [], {"b/thg_l1_asf_gako_2011010617_v01.cdf"})
    assert len(read_failures(zs)) == 0


def test_inventory_lists_complete_hours_with_checksums(tmp_path):
    from aurora_pipeline.store.zarr_layout import read_inventory

    zs = zarr_store(tmp_path / "s.zarr")
    times, frames = _hour("2011010617")
    attrs = {"aurora_source_file": "thg_l1_asf_gako_2011010617_v01.cdf", "aurora_source_sha256": "ab" * 32,
             "aurora_source_size": 123, "aurora_frames": 5}
    write_hour_frames(zs, "gako", "2011010617", times, frames, attrs)
    write_hour_frames(zs, "gako", "2011010618", *_hour("2011010618"), {})
    zarr.open_group(zs, path="gako/20110106T18", mode="r+").attrs[COMPLETE] = False
    table = read_inventory(tmp_path / "s.zarr")
    assert table.to_dict("records") == [{"site": "gako", "hour": "20110106T17", "file": attrs["aurora_source_file"],
                                         "sha256": "ab" * 32, "size": 123, "frames": 5}]
