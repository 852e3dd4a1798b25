"""Reading THEMIS ASI CDF files: the real Gakona file, both layouts, and every kind of bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cdflib.cdfwrite import CDF

from aurora_pipeline.source.archive import relative_path
from aurora_pipeline.source.cdf import parse_archive_name, read_asi_cdf
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.source.sites import SITES
from aurora_pipeline.synth.archive import write_asi_cdf
from hostile_cdf import patched_cdf

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
REAL = DATA / "themis" / "thg_l1_asf_gako_2011010617_v01.cdf"
GOOD_NAME = "thg_l1_asf_gako_2011010604_v01.cdf"


@pytest.fixture
def real_file() -> Path:
    if not REAL.is_file():
        pytest.skip(f"real THEMIS file not found at {REAL} (../shared/data is absent)")
    return REAL


def frames(n: int = 6, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Times with odd milliseconds and frames that use the full uint16 range and are not symmetric."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 65536, (n, size, size), dtype=np.uint16)
    images[:, 0, 0], images[:, -1, -1] = 0, 65535
    images[:, 3, size - 5] = 12345  # a marker off the diagonal: a transposed frame would move it
    offsets = np.arange(n) * 3000 + np.array([53, 38, 18, 23, 13, 999, 1, 500, 0, 7][:n] + [11] * max(0, n - 10))
    times = np.datetime64("2011-01-06T04", "ms") + offsets.astype("timedelta64[ms]")
    return times, images


def write_raw(path: Path, variables: dict) -> Path:
    """A CDF with exactly the given variables: name -> (data type, record dims, data, varies by record)."""
    with CDF(path) as cdf:
        for name, (dtype, dims, data, rec_vary) in variables.items():
            spec = dict(Variable=name, Data_Type=dtype, Num_Elements=1, Rec_Vary=rec_vary, Dim_Sizes=dims)
            cdf.write_var(spec, {}, data)
    return path


def rejects(source, match: str, label: str | None = None, **kwargs) -> BadInputError:
    with pytest.raises(BadInputError, match=match) as info:
        read_asi_cdf(source, **kwargs)
    label = label or Path(source).name
    assert label in str(info.value)
    return info.value


# --- the real file ---------------------------------------------------------------------------


def test_real_gakona_file(real_file):
    got = read_asi_cdf(real_file, expected_site="gako")
    assert got.site == "gako" and got.layout == "legacy"
    assert got.images.shape == (23, 256, 256) and got.images.dtype == np.uint16
    assert got.times.dtype == np.dtype("datetime64[ms]")
    assert got.times[0] == np.datetime64("2011-01-06T17:00:00.053")
    assert got.times[-1] == np.datetime64("2011-01-06T17:01:06.020")
    assert np.all(np.diff(got.times) > np.timedelta64(0, "ms"))
    assert got.images.min() == 2223 and got.images.max() == 65535
    assert got.source == str(real_file)


def test_real_file_from_bytes_matches_path(real_file):
    from_path = read_asi_cdf(real_file)
    from_bytes = read_asi_cdf(real_file.read_bytes(), name="s3://bucket/" + real_file.name)
    assert from_bytes.source == "s3://bucket/" + real_file.name
    np.testing.assert_array_equal(from_bytes.images, from_path.images)
    np.testing.assert_array_equal(from_bytes.times, from_path.times)


def test_real_file_under_another_sites_name_is_refused(real_file):
    err = rejects(real_file, "site 'gako'.*says 'gill'", expected_site="gill")
    assert err.source == str(real_file)


# --- both layouts ------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["legacy", "v2024"])
@pytest.mark.parametrize("n", [1, 6, 11])
def test_layouts_round_trip_exactly(tmp_path, layout, n):
    times, images = frames(n)
    path = write_asi_cdf(tmp_path / GOOD_NAME, "gako", times, images, layout=layout)
    got = read_asi_cdf(path, expected_site="gako")
    assert got.layout == layout and got.site == "gako"
    assert got.images.dtype == np.uint16 and got.images.shape == (n, 32, 32)
    np.testing.assert_array_equal(got.images, images)
    np.testing.assert_array_equal(got.times, times)
    assert got.images[0, 3, 27] == 12345  # frames are not transposed


def test_v2024_file_with_256_frames_is_not_mistaken_for_legacy(tmp_path):
    """(256, 256, 256) is both layouts' shape; the per-record dimensions decide."""
    times, images = frames(256, size=256)
    path = write_asi_cdf(tmp_path / GOOD_NAME, "gako", times, images, layout="v2024")
    got = read_asi_cdf(path)
    assert got.layout == "v2024"
    np.testing.assert_array_equal(got.images[[0, 255]], images[[0, 255]])


def test_v2024_times_round_to_the_millisecond(tmp_path):
    times, images = frames(3)
    unix_s = times.astype(np.int64) / 1000.0 + np.array([0.0004, -0.0004, 0.0002])  # float noise under 0.5 ms
    write_raw(tmp_path / GOOD_NAME, {
        "thg_asf_gako": (CDF.CDF_UINT2, [32, 32, 3], np.moveaxis(images, 0, -1)[None], True),
        "thg_asf_gako_time": (CDF.CDF_REAL8, [], unix_s, True),
    })
    got = read_asi_cdf(tmp_path / GOOD_NAME)
    np.testing.assert_array_equal(got.times, times)


# --- bad files ---------------------------------------------------------------------------------


@pytest.fixture
def good_bytes(tmp_path) -> bytes:
    times, images = frames(10)
    return write_asi_cdf(tmp_path / GOOD_NAME, "gako", times, images).read_bytes()


@pytest.mark.parametrize("keep", [0, 3, 5, 30, 0.5, -1])
def test_truncated_file(tmp_path, good_bytes, keep):
    cut = int(len(good_bytes) * keep) if isinstance(keep, float) else keep % len(good_bytes)  # -1: all but one byte
    path = tmp_path / "thg_l1_asf_gako_2011010605_v01.cdf"
    path.write_bytes(good_bytes[:cut])
    rejects(path, "truncated|not a CDF file")


def test_truncated_bytes_name_the_file(good_bytes):
    rejects(good_bytes[: len(good_bytes) // 3], "truncated: .* bytes, but its header says", label="remote/x.cdf",
            name="remote/x.cdf")


def test_corrupt_compressed_frames(tmp_path):
    times, _ = frames(10)
    smooth = np.tile(np.arange(32, dtype=np.uint16) * 100 + 2300, (10, 32, 1))  # compressible, so gzip is used
    damaged = bytearray(write_asi_cdf(tmp_path / GOOD_NAME, "gako", times, smooth).read_bytes())
    stream = damaged.find(b"\x1f\x8b\x08")  # the first gzip stream: compressed image records
    assert stream > 0
    damaged[stream + 20 : stream + 84] = b"\xff" * 64
    path = tmp_path / "damaged.cdf"
    path.write_bytes(bytes(damaged))
    rejects(path, "variable thg_asf_gako cannot be read")


def test_text_file_is_not_a_cdf(tmp_path):
    path = tmp_path / "notes.cdf"
    path.write_text("<html>404 Not Found</html>\n")
    rejects(path, "not a CDF file")


def test_missing_file(tmp_path):
    rejects(tmp_path / "nowhere.cdf", "file not found")


def test_missing_image_variable(tmp_path):
    times, _ = frames(3)
    unix_s = times.astype(np.int64) / 1e3
    path = write_raw(tmp_path / "noimage.cdf", {"thg_asf_gako_time": (CDF.CDF_REAL8, [], unix_s, True)})
    rejects(path, "no image variable thg_asf_<site>")


def test_misnamed_image_variable(tmp_path):
    _, images = frames(3)
    path = write_raw(tmp_path / "misnamed.cdf", {"thg_asi_gako": (CDF.CDF_UINT2, [32, 32], images, True)})
    rejects(path, "no image variable")


@pytest.mark.parametrize("layout, missing", [("legacy", "thg_asf_gako_epoch"), ("v2024", "thg_asf_gako_time")])
def test_missing_time_variable(tmp_path, layout, missing):
    times, images = frames(3)
    epoch = (times.astype(np.int64) + 62_167_219_200_000).astype(float)
    variables = {
        "thg_asf_gako": (CDF.CDF_UINT2, [32, 32], images, True) if layout == "legacy"
        else (CDF.CDF_UINT2, [32, 32, 3], np.moveaxis(images, 0, -1)[None], True),
        "thg_asf_gako_epoch": (CDF.CDF_EPOCH, [], epoch, True),
        "thg_asf_gako_time": (CDF.CDF_REAL8, [], times.astype(np.int64) / 1e3, True),
    }
    del variables[missing]
    rejects(write_raw(tmp_path / "notime.cdf", variables), f"no time variable {missing}")


def test_image_variable_without_frames(tmp_path):
    with CDF(tmp_path / "empty.cdf") as cdf:
        cdf.write_var(dict(Variable="thg_asf_gako", Data_Type=CDF.CDF_UINT2, Num_Elements=1, Rec_Vary=True,
                           Dim_Sizes=[32, 32]), {})
    rejects(tmp_path / "empty.cdf", "holds no frames")


def test_image_records_of_wrong_rank(tmp_path):
    lines = np.ones((3, 32), np.uint16)
    path = write_raw(tmp_path / "rank1.cdf", {"thg_asf_gako": (CDF.CDF_UINT2, [32], lines, True)})
    rejects(path, "1-d records")


def test_frames_not_square(tmp_path):
    times = frames(3)[0]
    path = write_asi_cdf(tmp_path / "oblong.cdf", "gako", times, np.ones((3, 32, 48), np.uint16))
    rejects(path, "32 x 48 pixels, not square")


def test_frame_and_time_counts_differ(tmp_path):
    times, images = frames(6)
    path = write_asi_cdf(tmp_path / "short.cdf", "gako", times, images)
    path_bad = write_raw(tmp_path / "counts.cdf", {
        "thg_asf_gako": (CDF.CDF_UINT2, [32, 32], images, True),
        "thg_asf_gako_epoch": (CDF.CDF_EPOCH, [], (times[:5].astype(np.int64) + 62_167_219_200_000) * 1.0, True),
    })
    assert read_asi_cdf(path).images.shape[0] == 6
    rejects(path_bad, "6 frames but 5 frame times")


@pytest.mark.parametrize("layout", ["legacy", "v2024"])
@pytest.mark.parametrize("swap", ["decreasing", "repeated"])
def test_times_not_strictly_increasing(tmp_path, layout, swap):
    times, images = frames(6)
    times = times.copy()
    if swap == "decreasing":
        times[3], times[4] = times[4], times[3]
    else:
        times[4] = times[3]
    path = write_asi_cdf(tmp_path / GOOD_NAME, "gako", times, images, layout=layout)
    rejects(path, "not strictly increasing: frame 4")


def test_fill_value_times(tmp_path):
    times, images = frames(3)
    path = write_raw(tmp_path / "fill.cdf", {
        "thg_asf_gako": (CDF.CDF_UINT2, [32, 32], images, True),
        "thg_asf_gako_epoch": (CDF.CDF_EPOCH, [], np.array([6.3461552400053e13, -1e31, 6.3461552406018e13]), True),
    })
    rejects(path, "outside 1990")


def test_unknown_site_code(tmp_path):
    times, images = frames(3)
    path = write_asi_cdf(tmp_path / "thg_l1_asf_xyzw_2011010604_v01.cdf", "xyzw", times, images)
    rejects(path, "unknown THEMIS ASI site code 'xyzw'")


def test_contents_of_another_site(tmp_path):
    times, images = frames(3)
    path = write_asi_cdf(tmp_path / GOOD_NAME, "gill", times, images)
    rejects(path, "holds images of site 'gill'.*name says 'gako'", expected_site="gako")


# --- archive file names -----------------------------------------------------------------------


def test_parse_archive_name():
    site, hour = parse_archive_name("s3://themis/thg/l1/asi/gako/2011/01/thg_l1_asf_gako_2011010617_v01.cdf")
    assert site == "gako" and hour == np.datetime64("2011-01-06T17", "h") and hour.dtype == np.dtype("datetime64[h]")
    assert relative_path(site, hour) == "thg/l1/asi/gako/2011/01/thg_l1_asf_gako_2011010617_v01.cdf"
    leap_day = Path("/x") / relative_path("gill", "2024-02-29T23")
    assert parse_archive_name(leap_day) == ("gill", np.datetime64("2024-02-29T23"))


@pytest.mark.parametrize("name, problem", [
    ("thg_l1_asf_gako_20110106_v01.cdf", "is not named like"),
    ("thg_l2_asf_gako_2011010617_v01.cdf", "is not named like"),
    ("thg_l1_asf_gako_2011010617_v01.cdf.tmp", "is not named like"),
    (".thg_l1_asf_gako_2011010617_v01.cdf.123.tmp.cdf", "is not named like"),
    ("thg_l1_asf_GAKO_2011010617_v01.cdf", "is not named like"),
    ("thg_l1_asf_gako_2011023117_v01.cdf", "impossible date"),
    ("thg_l1_asf_gako_2011010624_v01.cdf", "impossible date"),
    ("thg_l1_asf_zzzz_2011010617_v01.cdf", "unknown THEMIS ASI site"),
])
def test_parse_archive_name_refuses(name, problem):
    with pytest.raises(BadInputError, match=problem) as info:
        parse_archive_name(name)
    assert name in str(info.value)


def test_site_codes_are_four_lower_case_letters():
    assert {"gako", "gill", "atha", "fsmi", "rank"} <= set(SITES)
    assert all(len(code) == 4 and code.isalpha() and code.islower() for code in SITES)


# --- sizes a file claims: checked before anything is allocated --------------------------------


def test_a_small_file_claiming_65535_square_frames_is_refused_before_allocating(tmp_path):
    path = patched_cdf(tmp_path, dims=(65535, 65535))
    assert path.stat().st_size < 64_000
    err = rejects(path, r"claims 4 frames of 65535 x 65535 pixels .* a THEMIS imager makes at most")
    assert err.source == str(path) and "leave it out" in err.fix


def test_a_file_claiming_more_frames_than_it_can_hold_is_refused(tmp_path):
    path = patched_cdf(tmp_path, last_record=2999)  # 3,000 frames of 64 x 64 = 23 MiB in ~20 KB
    rejects(path, r"claims 3000 frames of 64 x 64 pixels .* more than a [\d,]+-byte file can hold")


def test_cdflib_inflates_the_gzip_blocks_with_libdeflate():
    """The archive's read is mostly inflating gzip blocks: cdflib uses libdeflate (the `deflate`
    package, a pinned dependency) when it is installed, ~1.5x faster than the standard library's."""
    import gzip

    import cdflib.cdfread
    import deflate

    assert cdflib.cdfread.gzip_inflate is deflate.gzip_decompress
    data = np.random.default_rng(1).integers(0, 4000, 300_000).astype(np.uint16).tobytes()
    assert deflate.gzip_decompress(gzip.compress(data, 6)) == data


def test_frames_read_with_libdeflate_equal_those_read_with_the_standard_gzip(tmp_path, monkeypatch):
    import gzip

    import cdflib.cdfread

    path = tmp_path / "thg_l1_asf_gako_2011010604_v01.cdf"
    rng = np.random.default_rng(2)
    times = np.datetime64("2011-01-06T04:00:00", "ms") + np.arange(30) * np.timedelta64(3, "s")
    write_asi_cdf(path, "gako", times, rng.integers(0, 65535, (30, 256, 256)).astype(np.uint16))
    fast = read_asi_cdf(path)
    monkeypatch.setattr(cdflib.cdfread, "gzip_inflate", gzip.decompress)
    plain = read_asi_cdf(path)
    np.testing.assert_array_equal(fast.images, plain.images)
    np.testing.assert_array_equal(fast.times, plain.times)


@pytest.mark.parametrize("layout", ["legacy", "v2024"])
def test_blocks_decode_the_frames_of_a_whole_read(tmp_path, layout):
    from aurora_pipeline.source.cdf import open_asi_cdf

    path = tmp_path / "thg_l1_asf_gako_2011010604_v01.cdf"
    rng = np.random.default_rng(3)
    times = np.datetime64("2011-01-06T04:00:00", "ms") + np.arange(40) * np.timedelta64(3, "s")
    write_asi_cdf(path, "gako", times, rng.integers(0, 65535, (40, 256, 256)).astype(np.uint16), layout=layout)
    whole = read_asi_cdf(path)
    asi = open_asi_cdf(path)
    blocks = list(asi.blocks(frames=16))
    np.testing.assert_array_equal(np.concatenate(blocks), whole.images)
    np.testing.assert_array_equal(asi.times, whole.times)
    if layout == "legacy":  # whole compressed blocks of 7 records each: 14, 14, 12
        assert [len(b) for b in blocks] == [14, 14, 12]
    else:  # one record: decoded whole, handed out in slices
        assert [len(b) for b in blocks] == [16, 16, 8]


def test_blocks_of_the_real_file_equal_its_whole_read():
    from aurora_pipeline.source.cdf import open_asi_cdf

    real = Path(__file__).resolve().parents[3] / "shared" / "data" / "themis" / "thg_l1_asf_gako_2011010617_v01.cdf"
    if not real.is_file():
        pytest.skip(f"the real THEMIS file is not at {real} (../shared/data is absent)")
    blocks = list(open_asi_cdf(real).blocks(frames=7))
    assert [len(b) for b in blocks] == [7, 7, 7, 2]
    np.testing.assert_array_equal(np.concatenate(blocks), read_asi_cdf(real).images)
