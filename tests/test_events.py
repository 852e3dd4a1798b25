"""The event catalogue: known label sequences give known intervals."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.events import (
    COLUMNS,
    events_from_dataset,
    label_events,
    parse_duration,
    read_events,
    write_events,
)

NAMES = ["arc", "diffuse", "discrete", "cloudy", "moon", "clear"]
T0 = np.datetime64("2011-01-06T04:00:00.000", "ms")


def _times(n: int, cadence_s: float = 3.0, start=T0) -> np.ndarray:
    return start + (np.arange(n) * cadence_s * 1000).astype("timedelta64[ms]")


def _labels(*runs: tuple[int, int]) -> np.ndarray:
    return np.concatenate([np.full(n, code) for code, n in runs])


def _one_hot(labels, p=0.8):
    prob = np.full((len(labels), len(NAMES)), (1 - p) / (len(NAMES) - 1))
    prob[np.arange(len(labels)), labels] = p
    return prob


def test_a_known_sequence_gives_the_known_intervals():
    labels = _labels((0, 10), (1, 20), (2, 5))
    prob = _one_hot(labels)
    prob[12, 1] = 0.55  # the least sure diffuse frame
    ev = label_events(_times(35), labels, prob, class_names=NAMES, site="gako", smooth=0, min_duration=0)
    assert list(ev.columns) == COLUMNS
    assert ev["label"].tolist() == ["arc", "diffuse", "discrete"]
    assert ev["n_frames"].tolist() == [10, 20, 5]
    assert ev["start"].tolist() == [pd.Timestamp(T0), pd.Timestamp(T0 + np.timedelta64(30, "s")),
                                    pd.Timestamp(T0 + np.timedelta64(90, "s"))]
    assert ev["end"].iloc[0] == ev["start"].iloc[1] and ev["end"].iloc[1] == ev["start"].iloc[2]  # they tile
    assert ev["duration_s"].tolist() == [30.0, 60.0, 15.0]  # the last frame counts one cadence
    assert ev["site"].unique().tolist() == ["gako"]
    assert ev["min_probability"].iloc[1] == pytest.approx(0.55)
    assert ev["mean_probability"].iloc[1] == pytest.approx((19 * 0.8 + 0.55) / 20)
    assert ev["end"].dtype == "datetime64[ms]"


def test_frame_order_does_not_matter():
    labels = _labels((0, 10), (1, 20))
    times = _times(30)
    order = np.random.default_rng(0).permutation(30)
    a = label_events(times, labels, class_names=NAMES, smooth=0, min_duration=0)
    b = label_events(times[order], labels[order], class_names=NAMES, smooth=0, min_duration=0)
    pd.testing.assert_frame_equal(a, b)


def test_flickers_shorter_than_the_minimum_are_merged():
    labels = _labels((0, 30), (1, 2), (0, 30), (3, 1), (0, 40))
    ev = label_events(_times(len(labels)), labels, class_names=NAMES, smooth=0, min_duration="60s")
    assert ev["label"].tolist() == ["arc"] and ev["n_frames"].tolist() == [103]
    # kept apart when the minimum is shorter than the flicker
    ev = label_events(_times(len(labels)), labels, class_names=NAMES, smooth=0, min_duration="5s")
    assert ev["label"].tolist() == ["arc", "diffuse", "arc"]  # cloudy (3 s) merged, diffuse (6 s) kept
    assert ev["n_frames"].tolist() == [30, 2, 71]


def test_a_flicker_between_two_labels_joins_the_one_it_resembles():
    labels = _labels((0, 30), (2, 3), (1, 30))
    prob = _one_hot(labels)
    prob[30:33] = [0.05, 0.4, 0.45, 0.03, 0.04, 0.03]  # discrete, but close to diffuse
    ev = label_events(_times(63), labels, prob, class_names=NAMES, smooth=0, min_duration="60s")
    assert ev["label"].tolist() == ["arc", "diffuse"] and ev["n_frames"].tolist() == [30, 33]
    prob[30:33] = [0.4, 0.05, 0.45, 0.03, 0.04, 0.03]  # now closer to arc
    ev = label_events(_times(63), labels, prob, class_names=NAMES, smooth=0, min_duration="60s")
    assert ev["n_frames"].tolist() == [33, 30]
    assert ev["min_probability"].iloc[0] == pytest.approx(0.4)  # the merged frames' own probability of arc


def test_a_gap_splits_an_event_and_nothing_is_merged_across_it():
    first, second = _times(20), _times(23, start=T0 + np.timedelta64(5, "m"))
    labels = np.r_[np.zeros(20, int), np.full(3, 2), np.zeros(20, int)]
    ev = label_events(np.r_[first, second], labels, class_names=NAMES, smooth=0, min_duration=0)
    assert ev["label"].tolist() == ["arc", "discrete", "arc"] and ev["n_frames"].tolist() == [20, 3, 20]
    assert ev["end"].iloc[0] == pd.Timestamp(first[-1] + np.timedelta64(3, "s"))  # ends at the gap, not after it
    assert ev["start"].iloc[1] == pd.Timestamp(second[0])
    # the short run after the gap joins the arc of its own segment, never the one before the gap
    ev = label_events(np.r_[first, second], labels, class_names=NAMES, smooth="30s", min_duration="60s")
    assert ev["label"].tolist() == ["arc", "arc"] and ev["n_frames"].tolist() == [20, 23]
    # a segment shorter than the minimum, alone between two gaps, stays an event of its own
    third = _times(20, start=T0 + np.timedelta64(10, "m"))
    ev = label_events(np.r_[first, second[:3], third], labels, class_names=NAMES, smooth="30s", min_duration="60s")
    assert ev["label"].tolist() == ["arc", "discrete", "arc"] and ev["n_frames"].tolist() == [20, 3, 20]
    # an explicit max_gap longer than the hole joins them again
    ev = label_events(np.r_[first, _times(20, start=T0 + np.timedelta64(5, "m"))], np.zeros(40, int),
                      class_names=NAMES, max_gap="10min")
    assert len(ev) == 1 and ev["n_frames"].iloc[0] == 40


def test_unlabelled_frames_are_missing_data():
    labels = _labels((0, 20), (-1, 200), (0, 20)).astype(float)
    labels[5] = np.nan
    ev = label_events(_times(len(labels)), labels, class_names=NAMES, smooth=0, min_duration=0)
    assert ev["n_frames"].tolist() == [19, 20]  # 200 unlabelled frames (10 min) make a gap


def test_smoothing_is_a_moving_mode_of_labels_and_a_mean_of_probabilities():
    labels = _labels((0, 10), (1, 1), (0, 10))
    ev = label_events(_times(21), labels, class_names=NAMES, smooth="30s", min_duration=0)
    assert ev["label"].tolist() == ["arc"]  # the single frame is outvoted within +-15 s
    ev = label_events(_times(21), labels, class_names=NAMES, smooth=0, min_duration=0)
    assert ev["label"].tolist() == ["arc", "diffuse", "arc"]
    # with probabilities, one confident frame outvotes two hesitant neighbours
    labels = _labels((1, 1), (0, 1), (1, 1))
    prob = np.array([[0.3, 0.4, 0.1, 0.1, 0.05, 0.05], [0.95, 0.01, 0.01, 0.01, 0.01, 0.01],
                     [0.3, 0.4, 0.1, 0.1, 0.05, 0.05]])
    ev = label_events(_times(3), labels, prob, class_names=NAMES, smooth="10s", min_duration=0)
    assert ev["label"].tolist() == ["arc"]


def test_events_of_a_dataset_per_site_in_time_order():
    t = np.r_[_times(40), _times(40)]
    labels = np.r_[_labels((0, 20), (5, 20)), _labels((3, 40))].astype(np.int8)
    ds = xr.Dataset({"label": ("time", labels, {"flag_values": list(range(6)), "flag_meanings": " ".join(NAMES)}),
                     "label_probability": (("time", "class"), _one_hot(labels).astype(np.float32))},
                    coords={"time": t, "site": ("time", np.r_[np.full(40, "gill"), np.full(40, "gako")])})
    ev = events_from_dataset(ds.sortby("time"), smooth=0, min_duration=0)
    assert ev[["site", "label"]].values.tolist() == [["gako", "cloudy"], ["gill", "arc"], ["gill", "clear"]]
    assert ev["mean_probability"].tolist() == pytest.approx([0.8, 0.8, 0.8])
    with pytest.raises(BadInputError, match="classify"):
        events_from_dataset(ds.drop_vars("label"))


def test_csv_round_trip_and_parquet_needs_an_engine(tmp_path):
    import importlib.util

    labels = _labels((0, 10), (1, 20))
    ev = label_events(_times(30), labels, _one_hot(labels), class_names=NAMES, site="gako", smooth=0, min_duration=0)
    back = read_events(write_events(ev, tmp_path / "out" / "events.csv"))
    pd.testing.assert_frame_equal(back, ev, check_dtype=False)
    assert (tmp_path / "out" / "events.csv").read_text().splitlines()[1].startswith("gako,2011-01-06T04:00:00.000,")
    if any(importlib.util.find_spec(m) for m in ("pyarrow", "fastparquet")):
        pd.testing.assert_frame_equal(read_events(write_events(ev, tmp_path / "events.parquet")), ev, check_dtype=False)
    else:
        with pytest.raises(BadInputError, match="pip install pyarrow"):
            write_events(ev, tmp_path / "events.parquet")
        assert not (tmp_path / "events.parquet").exists()
    with pytest.raises(BadInputError, match=".csv"):
        write_events(ev, tmp_path / "events.json")


def test_durations_are_parsed_and_bad_input_refused():
    assert parse_duration("30s") == 30_000 and parse_duration("2min") == 120_000 and parse_duration("1.5h") == 5_400_000
    assert parse_duration("500ms") == 500 and parse_duration(45) == 45_000 and parse_duration("10") == 10_000
    assert parse_duration(datetime.timedelta(minutes=1)) == 60_000 and parse_duration(np.timedelta64(2, "s")) == 2000
    for bad in ("soon", "-5s", -1):
        with pytest.raises(BadInputError):
            parse_duration(bad)
    with pytest.raises(BadInputError, match="0..5"):
        label_events(_times(3), [0, 7, 1], class_names=NAMES)
    with pytest.raises(BadInputError, match="probabilities"):
        label_events(_times(3), [0, 1, 1], np.ones((3, 2)), class_names=NAMES)
    assert label_events(_times(0), [], class_names=NAMES).columns.tolist() == COLUMNS


def test_random_flickery_labels_leave_no_short_event_beside_another():
    rng = np.random.default_rng(3)
    n = 3000
    labels = np.repeat(rng.integers(0, 6, 400), rng.integers(1, 15, 400))[:n]
    times = _times(len(labels)) + np.where(np.arange(len(labels)) > 1500, np.timedelta64(10, "m"), np.timedelta64(0))
    prob = _one_hot(labels, 0.5) + rng.uniform(0, 0.2, (len(labels), 6))
    ev = label_events(times, labels, prob, class_names=NAMES, smooth="15s", min_duration="45s")
    assert ev["n_frames"].sum() == len(labels)
    gap = np.datetime64(_times(1501)[-1] + np.timedelta64(10, "m"))
    for i, row in ev.iterrows():
        touches = (i > 0 and ev["end"].iloc[i - 1] == row["start"]) or \
                  (i + 1 < len(ev) and ev["start"].iloc[i + 1] == row["end"])
        if touches:
            assert row["duration_s"] >= 45.0
        if i + 1 < len(ev) and ev["end"].iloc[i] == ev["start"].iloc[i + 1]:
            assert ev["label"].iloc[i] != ev["label"].iloc[i + 1]  # neighbours differ, or they would be one
    assert (ev["start"] < pd.Timestamp(gap)).sum() >= 1 and (ev["start"] >= pd.Timestamp(gap)).sum() >= 1


def _store_hours(path, hours):
    """A real store with labels only (no frames needed): hours = [(hour, labels)], committed in that order."""
    from aurora_pipeline.ingest.preprocess import PreprocessConfig
    from aurora_pipeline.store import Store
    from aurora_pipeline.store.layout import hour_position
    from aurora_pipeline.store.writer import HourWrite, commit_hours, ensure_labels, set_stage, write_small

    st = Store.open(path, mode="a")
    cfg = PreprocessConfig(image_size=16)
    st.set_preprocess(cfg.setting(), cfg.as_attrs())
    for hour, labels in hours:
        hour = np.datetime64(hour, "h")
        times = _times(len(labels), 3600 / len(labels), hour.astype("datetime64[ms]"))
        commit_hours(st, "gako", [HourWrite(hour=hour, times=times, source_file=f"{hour}.cdf")])
        year, index = hour_position(hour)
        ensure_labels(st, "gako", year, NAMES)
        write_small(st, "gako", year, {"label": {index: labels.astype(np.int8)},
                                       "label_probability": {index: _one_hot(labels).astype(np.float32)}})
        set_stage(st, "gako", year, np.array([index]), "classifier", "test")


def test_events_of_a_store_land_in_time_order_across_a_late_hour(tmp_path):
    from aurora_pipeline.events import store_events

    store = str(tmp_path / "store.zarr")
    # hour 05 is labelled first; the late hour 04 arrives after it; the aurora runs across 05:00
    _store_hours(store, [("2011-01-06T05", _labels((0, 600), (5, 600))),
                         ("2011-01-06T04", _labels((3, 600), (0, 600)))])
    ev = store_events(store, smooth="30s", min_duration="60s")
    assert ev["label"].tolist() == ["cloudy", "arc", "clear"]
    assert ev["start"].is_monotonic_increasing
    assert ev["start"].iloc[1] == pd.Timestamp("2011-01-06T04:30") and ev["end"].iloc[1] == pd.Timestamp("2011-01-06T05:30")
    assert ev["n_frames"].tolist() == [600, 1200, 600]  # one arc across the hour boundary
    later = store_events(store, start="2011-01-06T05", smooth=0, min_duration=0)
    assert later["label"].tolist() == ["arc", "clear"] and later["start"].iloc[0] == pd.Timestamp("2011-01-06T05")
    # and the command
    import argparse

    from aurora_cli import keogram_events

    parser = argparse.ArgumentParser()
    keogram_events.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["events", "--store", store, "--out", str(tmp_path / "ev.csv"), "--min-duration", "2min"])
    result = keogram_events.HANDLERS["events"](args)
    assert result["events"] == 3 and result["by_label"] == {"arc": 1, "clear": 1, "cloudy": 1}
    assert result["hours_of_each_label"] == {"arc": 1.0, "clear": 0.5, "cloudy": 0.5}
    pd.testing.assert_frame_equal(read_events(tmp_path / "ev.csv"), ev, check_dtype=False)


def test_the_nightly_catalogue_in_the_store_takes_a_late_hour_in_time_order(tmp_path):
    from aurora_pipeline.events import read_recorded_events, record_events

    store = str(tmp_path / "store.zarr")
    _store_hours(store, [("2011-01-06T05", _labels((0, 600), (5, 600)))])
    first = record_events(store, "gako", "2011-01-06T05", "2011-01-06T06")  # tonight's run: hour 05 labelled
    assert first["label"].tolist() == ["arc", "clear"]
    _store_hours(store, [("2011-01-06T04", _labels((3, 600), (0, 600)))])   # the late hour 04 arrives
    record_events(store, "gako", "2011-01-06T04", "2011-01-06T05")
    ev = read_recorded_events(store)
    assert ev["label"].tolist() == ["cloudy", "arc", "clear"] and ev["start"].is_monotonic_increasing
    # the arc that began in the late hour and went on into 05 is one event, recomputed whole
    assert ev["start"].iloc[1] == pd.Timestamp("2011-01-06T04:30") and ev["end"].iloc[1] == pd.Timestamp("2011-01-06T05:30")
    assert ev["n_frames"].tolist() == [600, 1200, 600]
    # the same catalogue as computing it from scratch
    from aurora_pipeline.events import store_events

    pd.testing.assert_frame_equal(ev, store_events(store), check_dtype=False)
    assert read_recorded_events(store, start="2011-01-06T05:40")["label"].tolist() == ["clear"]
    # a rerun of the same window replaces its rows instead of doubling them
    record_events(store, "gako", "2011-01-06T04", "2011-01-06T05")
    pd.testing.assert_frame_equal(read_recorded_events(store), ev)
