"""Values checked once, by the library's own parsers: time ranges, site lists, counts, sizes (issue 18).

The command line (tests/cli/test_cli_values.py) refuses with the same functions, so a
library caller and a user of a command get the same refusal for the same value.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from aurora_pipeline.store.read import hour_facts

from aurora_pipeline.errors import AuroraError, BadInputError
from aurora_pipeline.hours import time_range, to_hour, to_time
from aurora_pipeline.source.sites import check_site, parse_sites
from aurora_pipeline.store import Store, open_site, open_sites
from aurora_pipeline.store.writer import write_hour
from aurora_pipeline.values import positive_int

REVERSED = ("2011-01-06T06", "2011-01-06T04")


def small_store(path, size: int = 8) -> Store:
    """A store with gako 2011-01-06T04 (5 frames of ``size`` px)."""
    st = Store.open(path, mode="a")
    st.set_preprocess({"image_size": size}, {})
    start = np.datetime64("2011-01-06T04", "ms")
    times = start + np.arange(5) * np.timedelta64(3000, "ms")
    write_hour(st, "gako", np.datetime64(start, "h"), times, np.zeros((5, size, size), np.uint8), source_file="x")
    return st


# --- the one time-range parser ------------------------------------------------------------------

def test_reversed_and_empty_ranges_are_refused_with_both_values():
    with pytest.raises(BadInputError, match=r"2011-01-06T06 \.\. 2011-01-06T04: the time range is reversed"):
        time_range(*REVERSED)
    with pytest.raises(BadInputError, match="the time range is empty: the end equals the start"):
        time_range("2011-01-06T04", "2011-01-06T04:00:00")
    assert time_range("2011-01-06T04", None) == (np.datetime64("2011-01-06T04:00", "ms"), None)


def test_utc_offsets_are_converted_to_ut_without_a_numpy_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "no explicit representation of timezones" would fail here
        assert to_time("2011-01-06T09:30+05:00") == np.datetime64("2011-01-06T04:30", "ms")
        assert to_time("2011-01-06T03:00-01:30") == np.datetime64("2011-01-06T04:30", "ms")
        assert to_hour("2011-01-06T04:10Z") == np.datetime64("2011-01-06T04", "h")
        assert to_hour("2011-01-06") == np.datetime64("2011-01-06T00", "h")  # "-06" of a date is no offset
    with pytest.raises(BadInputError, match=r"UTC offset \+15:00 outside"):
        to_time("2011-01-06T04+15:00")


@pytest.mark.parametrize("read", [
    lambda st: open_site(st, "gako", *REVERSED),
    lambda st: open_sites(st, ["gako"], *REVERSED),
    lambda st: hour_facts(st, "gako", *REVERSED),
])
def test_store_reads_refuse_a_reversed_range(tmp_path, read):
    st = small_store(tmp_path / "s.zarr")
    with pytest.raises(BadInputError, match="the time range is reversed"):
        read(st)


def test_every_stage_driver_refuses_a_reversed_range(tmp_path):
    from aurora_pipeline.embed.driver import hours_to_embed
    from aurora_pipeline.encoder.training_frames import load_training_frames
    from aurora_pipeline.events import store_events
    from aurora_pipeline.keograms import keogram

    st = small_store(tmp_path / "s.zarr")
    calls = {"embed": lambda: hours_to_embed(st, ["gako"], *REVERSED, "simclr-x", False),
             "pretrain": lambda: load_training_frames(st, ["gako"], *REVERSED),
             "events": lambda: store_events(st, None, *REVERSED),
             "keogram": lambda: keogram(st, "gako", *REVERSED)}
    for name, call in calls.items():
        with pytest.raises(BadInputError, match="the time range is reversed"):
            call()


def test_archive_listing_refuses_a_reversed_range_and_lists_hours_overlapping_the_range(tmp_path):
    from aurora_pipeline.source.archive import list_archive
    from aurora_pipeline.synth.archive import write_synthetic_archive

    write_synthetic_archive(tmp_path, sites=["gako"], start="2011-01-06T04", hours=2, frames_per_hour=4)
    with pytest.raises(BadInputError, match="the time range is reversed"):
        list_archive(tmp_path, start=REVERSED[0], end=REVERSED[1])
    inside = list_archive(tmp_path, start="2011-01-06T04:10", end="2011-01-06T04:20")  # within one hour
    assert [f.hour_code for f in inside] == ["2011010604"]


# --- the one site-list parser -----------------------------------------------------------------

def test_site_lists_and_codes_are_checked_by_one_parser():
    assert parse_sites(" GAKO,gill,,gako") == ["gako", "gill"]
    assert parse_sites(["gill"]) == ["gill"] and parse_sites(None) is None
    with pytest.raises(BadInputError, match=r"--sites: unknown THEMIS ASI site code\(s\) \['gakk'\]"):
        parse_sites("gako,gakk")
    with pytest.raises(BadInputError, match="empty list of sites"):
        parse_sites(",")
    with pytest.raises(BadInputError, match=r"unknown THEMIS ASI site code\(s\) \['../x'\]"):
        check_site("../x")


def test_an_unknown_site_code_is_named_as_such_not_as_missing_hours(tmp_path):
    from aurora_pipeline.keograms import keogram

    st = small_store(tmp_path / "s.zarr")
    for call in (lambda: open_site(st, "../x"), lambda: keogram(st, "gakk")):
        with pytest.raises(BadInputError, match="unknown THEMIS ASI site code"):
            call()


# --- counts and sizes: 0 is a value, refused, never "unset" ---------------------------------------

def test_counts_must_be_positive():
    assert positive_int(3, "--max-frames") == 3
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(BadInputError, match="--max-frames: must be a positive whole number"):
            positive_int(bad, "--max-frames")


@pytest.mark.parametrize("max_frames", [0, -1])
def test_training_frames_refuse_a_count_below_one(tmp_path, max_frames):
    from aurora_pipeline.encoder.training_frames import load_training_frames

    st = small_store(tmp_path / "s.zarr")
    with pytest.raises(BadInputError, match="max_frames: must be a positive whole number"):
        load_training_frames(st, max_frames=max_frames)


@pytest.mark.parametrize("size", [0, -8])
def test_ingest_image_size_zero_is_refused_not_taken_as_unset(tmp_path, size):
    from flows.ingest import ingest_config

    with pytest.raises(BadInputError, match="image_size: must be a whole number of pixels in 8..512"):
        ingest_config.fn(str(tmp_path / "new.zarr"), size, None, 13.5, 110.0)


# --- a damaged store is bad input that names the damaged object ------------------------------------

def _truncate(path) -> None:
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


@pytest.mark.parametrize("damaged, named", [("zarr.json", "the store's root group"),
                                            ("gako/2011/frames/zarr.json", "array frames of gako/2011")])
def test_a_truncated_zarr_json_is_named_with_what_to_do(tmp_path, damaged, named):
    small_store(tmp_path / "s.zarr")
    _truncate(tmp_path / "s.zarr" / damaged)
    with pytest.raises(BadInputError) as caught:
        open_site(tmp_path / "s.zarr", "gako")
    message = str(caught.value)
    assert f"s.zarr/{damaged} ({named})" in message and "metadata is damaged" in message
    assert "restore those files from a backup" in message and "\n" not in message
    assert not isinstance(caught.value.__cause__, json.JSONDecodeError)


def test_a_store_with_no_damage_still_raises_its_own_errors(tmp_path):
    from aurora_pipeline.store.damage import damage_error

    small_store(tmp_path / "s.zarr")
    assert damage_error(tmp_path / "s.zarr") is None
    with pytest.raises(AuroraError, match="no stored hours for site 'gill'"):
        open_site(tmp_path / "s.zarr", "gill")
