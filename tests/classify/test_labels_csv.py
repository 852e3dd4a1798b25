"""Tests of aurora_pipeline.classify.labels_csv: reading site,time,class files and matching them to frames."""

from __future__ import annotations

import numpy as np
import pytest

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.classify.labels_csv import match_labels, read_labels_csv

T0 = np.datetime64("2011-01-06T04:00:00.053", "ms")
CADENCE = np.timedelta64(3000, "ms")
SITE_TIMES = {"gako": T0 + CADENCE * np.arange(100), "gill": T0 + CADENCE * np.arange(50)[::-1]}  # gill unsorted


def _write(tmp_path, text, name="labels.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_file_reads_and_matches_exactly(tmp_path):
    path = _write(tmp_path, "# my labels\nSite, Time ,Class\n"
                            "GAKO,2011-01-06T04:00:00.053,arc\n"
                            "gako,2011-01-06 04:00:06.053Z, diffuse\n"
                            "gill,2011-01-06T04:00:03.053+00:00,cloudy\n")
    df = read_labels_csv(path)
    assert list(df.columns) == ["site", "time", "class"]
    assert str(df["time"].dtype) == "datetime64[ms]"
    assert df["site"].tolist() == ["gako", "gako", "gill"] and df["class"].tolist() == ["arc", "diffuse", "cloudy"]
    assert df["time"].iloc[1].to_datetime64() == T0 + 2 * CADENCE

    matched, report = match_labels(df, SITE_TIMES)
    assert report.ok and report.n_rows == report.n_matched == 3
    np.testing.assert_array_equal(matched["gako"].frame_index, [0, 2])
    assert matched["gako"].class_name.tolist() == ["arc", "diffuse"]
    gill = matched["gill"].frame_index
    assert SITE_TIMES["gill"][gill[0]] == T0 + CADENCE  # index into the unsorted array
    np.testing.assert_array_equal(matched["gill"].row, [2])


def test_unknown_and_missing_columns_are_listed(tmp_path):
    path = _write(tmp_path, "site,time,label,quality\ngako,2011-01-06T04:00:00.053,arc,1\n")
    with pytest.raises(BadInputError) as err:
        read_labels_csv(path)
    text = str(err.value)
    assert str(path) in text and "['class']" in text and "['label', 'quality']" in text and "site,time,class" in text


def test_bad_times_and_empty_cells_are_refused(tmp_path):
    bad_time = _write(tmp_path, "site,time,class\ngako,06/01/2011 04:00,arc\ngako,yesterday,arc\n", "a.csv")
    with pytest.raises(BadInputError, match="2 rows have times that are not ISO 8601"):
        read_labels_csv(bad_time)
    empty = _write(tmp_path, "site,time,class\ngako,2011-01-06T04:00:00.053,\n", "b.csv")
    with pytest.raises(BadInputError, match="empty"):
        read_labels_csv(empty)
    with pytest.raises(BadInputError, match="no such file"):
        read_labels_csv(tmp_path / "absent.csv")


def _df(tmp_path, rows):
    return read_labels_csv(_write(tmp_path, "site,time,class\n" + "".join(f"{r}\n" for r in rows)))


def test_unknown_sites_and_unmatched_times_are_counted(tmp_path):
    rows = ["gako,2011-01-06T04:00:00.053,arc"] + ["abcd,2011-01-06T04:00:00.053,arc"] * 12 \
        + ["gako,2011-01-06T04:00:00.054,arc"] * 4 + ["gill,2011-01-06T05:00:00.053,moon"] * 3
    df = _df(tmp_path, rows)
    with pytest.raises(BadInputError) as err:
        match_labels(df, SITE_TIMES, known_sites=["gako", "gill", "fsmi"])
    text = str(err.value)
    assert "12 rows name sites not in the store (abcd: 12)" in text
    assert "7 rows have times that match no frame of their site (first: gako 2011-01-06T04:00:00.054" in text
    assert "labels.csv" in text and "strict=False" in text

    matched, report = match_labels(df, SITE_TIMES, strict=False)
    assert report.unknown_sites == {"abcd": 12} and report.n_unmatched_times == 7 and not report.ok
    assert list(matched) == ["gako"] and matched["gako"].frame_index.tolist() == [0]


def test_tolerance_matches_the_nearest_frame(tmp_path):
    df = _df(tmp_path, ["gako,2011-01-06T04:00:01.053,arc", "gako,2011-01-06T04:00:05.000,moon"])
    with pytest.raises(BadInputError, match="2 rows have times"):
        match_labels(df, SITE_TIMES)
    matched, report = match_labels(df, SITE_TIMES, tolerance_ms=1100)
    assert report.ok and matched["gako"].frame_index.tolist() == [0, 2]  # 04:00:05.000 is nearest 04:00:06.053


def test_known_site_without_frames_and_repeated_rows(tmp_path):
    df = _df(tmp_path, ["fsmi,2011-01-06T04:00:00.053,arc"])
    with pytest.raises(BadInputError, match="1 rows have times that match no frame"):
        match_labels(df, SITE_TIMES, known_sites=["gako", "gill", "fsmi"])

    df = _df(tmp_path, ["gako,2011-01-06T04:00:00.053,arc"] * 2 + ["gako,2011-01-06T04:00:03.053,arc",
                                                                   "gako,2011-01-06T04:00:03.053,moon"])
    with pytest.raises(BadInputError, match="1 frames are given different classes"):
        match_labels(df, SITE_TIMES)
    matched, report = match_labels(df, SITE_TIMES, strict=False)
    assert report.n_duplicates == 1 and report.n_conflicts == 1 and report.n_matched == 1
    assert matched["gako"].frame_index.tolist() == [0] and matched["gako"].row.tolist() == [0]
