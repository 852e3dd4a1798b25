"""Synthetic archive: official tree, real-looking CDF files, millisecond frame times, merged labels."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import cdflib
import numpy as np
import pytest

from aurora_pipeline.source.cdf import parse_archive_name, read_asi_cdf
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.synth.archive import merge_labels, write_synthetic_archive
from aurora_pipeline.synth.scenes import CLASSES

SMALL = dict(frames_per_hour=20, size=64)  # tiny files: the layout and the bookkeeping are what is tested here


def read_labels(root: Path) -> list[dict]:
    with (root / "labels.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_files_land_in_the_official_tree(tmp_path):
    paths = write_synthetic_archive(tmp_path, sites=("gako", "gill"), start="2011-01-06T23", hours=2, **SMALL)
    relative = [p.relative_to(tmp_path).as_posix() for p in paths]
    assert relative == [
        "thg/l1/asi/gako/2011/01/thg_l1_asf_gako_2011010623_v01.cdf",
        "thg/l1/asi/gako/2011/01/thg_l1_asf_gako_2011010700_v01.cdf",
        "thg/l1/asi/gill/2011/01/thg_l1_asf_gill_2011010623_v01.cdf",
        "thg/l1/asi/gill/2011/01/thg_l1_asf_gill_2011010700_v01.cdf",
    ]
    on_disk = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert on_disk == sorted([p.name for p in paths] + ["labels.csv"])  # no temporary files left behind
    for path in paths:
        site, hour = parse_archive_name(path.name)
        frames = read_asi_cdf(path, expected_site=site)
        assert frames.images.shape == (20, 64, 64)
        assert frames.times[0] == hour.astype("datetime64[ms]") + np.timedelta64(53, "ms")
        assert frames.times[-1] < (hour + np.timedelta64(1, "h")).astype("datetime64[ms]")


def test_file_mimics_the_real_variables_and_attributes(tmp_path):
    (path,) = write_synthetic_archive(tmp_path, sites=("gako",), hours=1, frames_per_hour=12)
    cdf = cdflib.CDF(path)
    assert set(cdf.cdf_info().zVariables) == {
        "thg_asf_gako", "thg_asf_gako_column", "thg_asf_gako_row", "thg_asf_gako_time",
        "thg_asf_gako_tend", "thg_asf_gako_epoch", "thg_asf_gako_epoch0", "range_epoch"}
    image = cdf.varinq("thg_asf_gako")
    assert image.Data_Type_Description == "CDF_UINT2" and image.Dim_Sizes == [256, 256] and image.Last_Rec == 11
    assert image.Compress > 0  # gzip, like the real files
    assert cdf.varinq("thg_asf_gako_epoch").Data_Type_Description == "CDF_EPOCH"
    assert cdf.varinq("thg_asf_gako_time").Data_Type_Description == "CDF_REAL8"
    assert cdf.varattsget("thg_asf_gako")["DEPEND_0"] == "thg_asf_gako_epoch"
    assert cdf.globalattsget()["Logical_file_id"] == ["thg_l1_asf_gako_2011010604_v01"]
    seconds = cdf.varget("thg_asf_gako_time")
    assert np.all(seconds == np.floor(seconds))  # whole seconds, as in the real legacy file
    assert cdf.varget("thg_asf_gako_epoch0") == 62167219200000.0
    images = cdf.varget("thg_asf_gako")
    assert 2150 < np.median(images[:, :8, :8]) < 2500 and images.max() > 4000


def test_frame_times_are_on_the_cadence_with_millisecond_jitter(tmp_path):
    (path,) = write_synthetic_archive(tmp_path, sites=("gill",), hours=1, frames_per_hour=120, size=32)
    times = read_asi_cdf(path).times
    offsets = (times - np.datetime64("2011-01-06T04", "ms")).astype(np.int64)
    slots, ms = np.divmod(offsets, 30_000)
    np.testing.assert_array_equal(slots, np.arange(120))  # 30-s cadence, one frame per slot
    assert ms[0] == 53 and ms.min() >= 10 and ms.max() <= 60
    assert len(set(ms.tolist())) > 20  # the milliseconds really vary


@pytest.mark.parametrize("layout", ["legacy", "v2024"])
def test_layout_does_not_change_what_is_read(tmp_path, layout):
    (legacy,) = write_synthetic_archive(tmp_path / "a", sites=("gako",), hours=1, layout="legacy", **SMALL)
    (other,) = write_synthetic_archive(tmp_path / "b", sites=("gako",), hours=1, layout=layout, **SMALL)
    a, b = read_asi_cdf(legacy), read_asi_cdf(other)
    assert b.layout == layout
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.times, b.times)
    if layout == "v2024":
        assert cdflib.CDF(other).varinq("thg_asf_gako").Dim_Sizes == [64, 64, 20]


def test_a_site_hour_is_the_same_whatever_else_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr("time.time", lambda: 1.0e9)  # gzip stamps streams with the time unless told not to
    together = write_synthetic_archive(tmp_path / "a", sites=("gako", "gill"), start="2011-01-06T04", hours=3,
                                       **SMALL)
    monkeypatch.setattr("time.time", lambda: 2.0e9)
    alone = write_synthetic_archive(tmp_path / "b", sites=("gill",), start="2011-01-06T05", hours=1, **SMALL)
    monkeypatch.undo()
    assert together[4].name == alone[0].name
    assert together[4].read_bytes() == alone[0].read_bytes()
    other_seed = write_synthetic_archive(tmp_path / "c", sites=("gill",), start="2011-01-06T05", hours=1, seed=1,
                                         **SMALL)
    assert not np.array_equal(read_asi_cdf(other_seed[0]).images, read_asi_cdf(alone[0]).images)


def test_labels_cover_every_frame_and_come_in_runs(tmp_path):
    paths = write_synthetic_archive(tmp_path, sites=("gako", "gill"), hours=3, frames_per_hour=120, size=32)
    rows = read_labels(tmp_path)
    assert len(rows) == 2 * 3 * 120
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", r["time"]) for r in rows)
    assert {r["class"] for r in rows} <= set(CLASSES)
    assert rows == sorted(rows, key=lambda r: (r["site"], r["time"]))
    frames = read_asi_cdf(paths[0])
    gako = [r for r in rows if r["site"] == "gako"][:120]
    assert [r["time"] for r in gako] == list(np.datetime_as_string(frames.times, unit="ms"))
    changes = sum(a["class"] != b["class"] for a, b in zip(rows, rows[1:]) if a["site"] == b["site"])
    assert 1 <= changes < 0.05 * len(rows)  # scenes last minutes, not frames


def test_labels_merge_when_more_hours_are_written(tmp_path):
    write_synthetic_archive(tmp_path, sites=("gako",), start="2011-01-06T04", hours=1, **SMALL)
    first = read_labels(tmp_path)
    write_synthetic_archive(tmp_path, sites=("gako", "gill"), start="2011-01-06T06", hours=1, **SMALL)
    write_synthetic_archive(tmp_path, sites=("gako",), start="2011-01-06T02", hours=1, **SMALL)
    write_synthetic_archive(tmp_path, sites=("gako",), start="2011-01-06T04", hours=1, **SMALL)  # again: no duplicates
    rows = read_labels(tmp_path)
    assert len(rows) == 4 * 20
    assert rows == sorted(rows, key=lambda r: (r["site"], r["time"]))
    hours = sorted({(r["site"], r["time"][:13]) for r in rows})
    assert hours == [("gako", "2011-01-06T02"), ("gako", "2011-01-06T04"), ("gako", "2011-01-06T06"),
                     ("gill", "2011-01-06T06")]
    assert [r for r in rows if r["time"].startswith("2011-01-06T04")] == first


def test_labels_file_with_other_columns_is_not_overwritten(tmp_path):
    (tmp_path / "labels.csv").write_text("picNum,class6\n00001,2\n")
    with pytest.raises(BadInputError, match="expected"):
        merge_labels(tmp_path / "labels.csv", [("gako", "2011-01-06T04:00:00.053", "arc")])
    assert (tmp_path / "labels.csv").read_text() == "picNum,class6\n00001,2\n"


@pytest.mark.parametrize("kwargs, problem", [
    (dict(sites=("zzzz",)), "unknown THEMIS ASI site"),
    (dict(layout="v2025"), "unknown file layout"),
    (dict(start="2011-01-06T04:30"), "not on a whole hour"),
    (dict(start="yesterday"), "not a date"),
    (dict(hours=0), "at least 1"),
    (dict(frames_per_hour=0), "between 1 and 36000"),
    (dict(seed=-1), "non-negative"),
])
def test_bad_arguments(tmp_path, kwargs, problem):
    with pytest.raises(BadInputError, match=problem):
        write_synthetic_archive(tmp_path, **{**SMALL, **kwargs})
    assert not any(tmp_path.iterdir())
