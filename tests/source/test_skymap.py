"""Skymaps: the two real UCalgary files in ../shared/data, read, oriented, listed and chosen."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.source.skymap import (
    SkymapFile,
    choose_skymap,
    elevation_mask,
    list_skymaps,
    parse_skymap_name,
    read_skymap,
    read_skymap_file,
    skymaps_for_hours,
    to_frame_orientation,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "themis"
SKYMAPS = DATA / "skymaps"
GAKO = SKYMAPS / "themis_skymap_gako_20110305-+_vXX.sav"
ATHA = SKYMAPS / "themis_skymap_atha_20230115-+_v02.sav"
GAKO_CDF = DATA / "thg_l1_asf_gako_2011010617_v01.cdf"
real = pytest.mark.skipif(not GAKO.is_file() or not ATHA.is_file(),
                          reason=f"the real skymaps are not in {SKYMAPS} (../shared/data is absent)")


@pytest.fixture(scope="module")
def gako():
    return read_skymap(GAKO)


@real
@pytest.mark.parametrize("path", [GAKO, ATHA], ids=["gako", "atha"])
def test_zenith_pixel_looks_down_on_the_imager(path):
    sky = read_skymap(path)
    row, col = sky.zenith()
    assert sky.el[row, col] > 89.0
    for alt in (90, 110, 150):
        assert abs(sky.lat_at(alt)[row, col] - sky.site_lat) < 0.1
        assert abs(sky.lon_at(alt)[row, col] - sky.site_lon) < 0.1
    assert -180 <= sky.site_lon < 180 and np.nanmin(sky.lon) >= -180 and np.nanmax(sky.lon) < 180


@real
def test_file_facts_come_through(gako):
    assert (gako.site, gako.imager, gako.el.shape, gako.lat.shape) == ("gako", "themis20", (256, 256), (3, 256, 256))
    assert gako.valid_from == np.datetime64("2011-03-05") and gako.valid_interval_start == np.datetime64("2011-03-05T08")
    assert abs(gako.site_lat - 62.41) < 1e-4 and abs(gako.site_lon - (214.84 - 360)) < 1e-4
    assert len(gako.sha256) == 64 and gako.file == GAKO.name


@real
def test_elevation_falls_from_the_centre_to_the_edge(gako):
    row, col = gako.zenith()
    for dy, dx in [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)]:
        ray = []
        for t in range(256):
            r, c = row + dy * t, col + dx * t
            if not (0 <= r < 256 and 0 <= c < 256) or np.isnan(gako.el[r, c]):
                break
            ray.append(gako.el[r, c])
        assert len(ray) > 80 and np.all(np.diff(ray) < 0) and ray[-1] < 5.0


@real
def test_mask_keeps_the_pixels_above_the_threshold_only(gako):
    for threshold in (0.0, 13.5, 30.0):
        mask = elevation_mask(gako, threshold)
        assert mask.any() and (~mask).any()
        assert (gako.el[mask] >= threshold).all()
        outside = gako.el[~mask]
        assert (np.isnan(outside) | (outside < threshold)).all()
    assert elevation_mask(gako, 30).sum() < elevation_mask(gako, 13.5).sum() < elevation_mask(gako, 0).sum()
    with pytest.raises(BadInputError, match="min_elevation"):
        elevation_mask(gako, 95)


@real
def test_arrays_come_out_north_along_rows_east_along_columns_like_the_frames(gako):
    row, col = gako.zenith()
    lat, lon = gako.lat_at(110), gako.lon_at(110)
    # north of the zenith is further down the rows (higher row index), east along the columns
    assert np.all(np.diff(lat[row - 60: row + 60, col]) > 0)
    assert np.all(np.diff(lon[row, col - 60: col + 60]) > 0)
    assert abs(((gako.az[row + 40, col] + 180) % 360) - 180) < 30      # about north (the camera is turned 23 deg)
    assert abs(gako.az[row, col + 40] - 90) < 30                        # about east
    # readsav's own arrays are the same, turned by 180 degrees
    np.testing.assert_array_equal(to_frame_orientation(gako.el)[::-1, ::-1], gako.el)


# J2000 right ascension (h) and declination (deg) of bright stars, good to ~0.2 deg for 2011
STARS = {"Arcturus": (14.261, 19.18), "Vega": (18.616, 38.78), "Capella": (5.278, 46.00),
         "Deneb": (20.690, 45.28), "Regulus": (10.139, 11.97), "Pollux": (7.755, 28.03),
         "Castor": (7.577, 31.89), "Dubhe": (11.062, 61.75), "Alioth": (12.900, 55.96),
         "Alkaid": (13.792, 49.31), "Kochab": (14.845, 74.16), "Eltanin": (17.943, 51.49),
         "Alphecca": (15.578, 26.71), "Merak": (11.031, 56.38), "Mizar": (13.399, 54.93),
         "Algieba": (10.333, 19.84), "Mirfak": (3.405, 49.86)}


def _star_el_az(time: np.datetime64, lat: float, lon: float) -> np.ndarray:
    days = (time - np.datetime64("2000-01-01T12:00:00")) / np.timedelta64(1, "s") / 86400.0
    lst = (18.697374558 + 24.06570982441908 * days + lon / 15.0) % 24.0
    ra, dec = np.array(list(STARS.values())).T
    ha, d, p = np.radians((lst - ra) * 15.0), np.radians(dec), np.radians(lat)
    el = np.arcsin(np.sin(d) * np.sin(p) + np.cos(d) * np.cos(p) * np.cos(ha))
    az = np.arctan2(-np.cos(d) * np.sin(ha), np.sin(d) * np.cos(p) - np.cos(d) * np.sin(p) * np.cos(ha))
    return np.stack([np.degrees(el), np.degrees(az) % 360.0], axis=1)


def _matched_stars(frame_stars: np.ndarray, el: np.ndarray, az: np.ndarray, catalogue: np.ndarray) -> int:
    pe, pa = np.radians(el[frame_stars[:, 0], frame_stars[:, 1]]), np.radians(az[frame_stars[:, 0], frame_stars[:, 1]])
    matched = 0
    for star_el, star_az in np.radians(catalogue):
        cos_sep = np.sin(star_el) * np.sin(pe) + np.cos(star_el) * np.cos(pe) * np.cos(star_az - pa)
        matched += np.nanmax(cos_sep) > np.cos(np.radians(2.5))
    return matched


@real
@pytest.mark.skipif(not GAKO_CDF.is_file(), reason=f"the real CDF file is not in {DATA}")
def test_stars_in_the_real_frames_sit_where_the_skymap_says(gako):
    """The orientation check against the sky itself: bright stars of the real Gakona
    frames land on the skymap's az/el of their catalogue positions. (The skymap starts
    2011-03-05, two months after the frames; the camera did not move.)"""
    from scipy import ndimage

    from aurora_pipeline.source.cdf import read_asi_cdf

    frames = read_asi_cdf(GAKO_CDF)
    image = np.median(frames.images.astype(np.float64), axis=0)
    residual = image - ndimage.median_filter(image, size=9)
    peaks = np.argwhere((residual == ndimage.maximum_filter(residual, size=7)) & (residual > 100))
    peaks = peaks[np.argsort(-residual[peaks[:, 0], peaks[:, 1]])[:60]]  # the 60 brightest point sources
    catalogue = _star_el_az(frames.times[len(frames.times) // 2], gako.site_lat, gako.site_lon)
    catalogue = catalogue[catalogue[:, 0] > 15.0]
    assert len(catalogue) >= 14
    assert _matched_stars(peaks, gako.el, gako.az, catalogue) >= 0.75 * len(catalogue)
    # the file's arrays as readsav returns them (not turned) put the stars elsewhere
    unturned_el, unturned_az = gako.el[::-1, ::-1], gako.az[::-1, ::-1]
    assert _matched_stars(peaks, unturned_el, unturned_az, catalogue) <= 2


def _files(*names):
    out = []
    for n in names:
        site, day, version = parse_skymap_name(n)
        out.append(SkymapFile(f"/x/{n}", site, day, version))
    return out


def test_the_newest_skymap_at_or_before_the_hour_is_chosen():
    files = _files("themis_skymap_gako_20070301-+_v01.sav", "themis_skymap_gako_20110305-+_vXX.sav",
                   "themis_skymap_gako_20110305-+_v02.sav", "themis_skymap_gako_20140101-+_v01.sav")
    assert choose_skymap(files, "gako", "2010-12-31T23").name == "themis_skymap_gako_20070301-+_v01.sav"
    assert choose_skymap(files, "gako", "2011-03-05T00").name == "themis_skymap_gako_20110305-+_v02.sav"
    assert choose_skymap(files, "gako", "2013-12-31T23").name == "themis_skymap_gako_20110305-+_v02.sav"
    assert choose_skymap(files, "gako", np.datetime64("2020-01-06T04")).valid_from == np.datetime64("2014-01-01")
    chosen = skymaps_for_hours(files, "gako", ["2011-03-04T23", "2011-03-05T01"])
    assert [f.valid_from for f in chosen.values()] == [np.datetime64("2007-03-01"), np.datetime64("2011-03-05")]


def test_an_hour_before_the_first_skymap_names_site_hour_and_date():
    files = _files("themis_skymap_gako_20110305-+_vXX.sav", "themis_skymap_atha_20010101-+_v01.sav")
    with pytest.raises(BadInputError) as err:
        choose_skymap(files, "gako", "2011-01-06T17")
    text = str(err.value)
    assert "gako" in text and "2011-01-06T17" in text and "2011-03-05" in text
    with pytest.raises(BadInputError, match="no skymap"):
        choose_skymap(files, "gill", "2011-01-06T17")


def test_bad_names_and_files_are_refused(tmp_path):
    with pytest.raises(BadInputError, match="not named like"):
        parse_skymap_name("skymap_gako.sav")
    with pytest.raises(BadInputError, match="impossible date"):
        parse_skymap_name("themis_skymap_gako_20111305-+_v01.sav")
    junk = tmp_path / "themis_skymap_gako_20110305-+_v01.sav"
    junk.write_bytes(b"not an IDL save file at all")
    with pytest.raises(BadInputError, match="not a readable IDL save file"):
        read_skymap(junk)
    with pytest.raises(BadInputError, match="file not found"):
        read_skymap(tmp_path / "themis_skymap_gako_20110305-+_v02.sav")


@real
def test_a_file_named_after_another_site_is_refused(tmp_path):
    wrong = tmp_path / "themis_skymap_gill_20110305-+_v01.sav"
    shutil.copy(GAKO, wrong)
    with pytest.raises(BadInputError, match="site 'gako' but its name says 'gill'"):
        read_skymap(wrong)


@real
def test_bytes_read_like_the_file(gako):
    again = read_skymap(GAKO.read_bytes(), name=GAKO.name, url="https://example.org/" + GAKO.name)
    assert again.sha256 == gako.sha256 and again.url.startswith("https://")
    np.testing.assert_array_equal(again.lat, gako.lat)


def _ucalgary_tree(root: Path) -> None:
    """The UCalgary layout <root>/<site>/<site>_<YYYYMMDD>/<file>, plus noise to ignore."""
    for path in (GAKO, ATHA):
        site, day, _ = parse_skymap_name(path.name)
        folder = root / site / f"{site}_{str(day).replace('-', '')}"
        folder.mkdir(parents=True)
        shutil.copy(path, folder / path.name)
    (root / "gako" / "README.txt").write_text("not a skymap")
    (root / "gako" / "gako_20110305" / "themis_skymap_gako_20110305-+_vXX.png").write_text("a picture")


@real
def test_local_folder_listing_finds_the_tree_and_flat_folders(tmp_path):
    _ucalgary_tree(tmp_path / "tree")
    files = list_skymaps(str(tmp_path / "tree"), "gako")
    assert [f.name for f in files] == [GAKO.name]
    assert read_skymap_file(files[0], tmp_path / "cache").sha256 == read_skymap(GAKO).sha256
    assert [f.site for f in list_skymaps(str(SKYMAPS), "atha")] == ["atha"]  # a flat folder
    with pytest.raises(BadInputError, match="no skymap file of site 'gill'"):
        list_skymaps(str(tmp_path / "tree"), "gill")
    with pytest.raises(BadInputError, match="does not exist"):
        list_skymaps(str(tmp_path / "nowhere"), "gako")


@real
def test_https_mirror_of_the_ucalgary_tree(https_mirror, tmp_path):
    _ucalgary_tree(https_mirror.root)
    files = list_skymaps(https_mirror.url, "gako")
    assert [f.name for f in files] == [GAKO.name] and files[0].url.startswith("http://127.0.0.1")
    sky = read_skymap_file(choose_skymap(files, "gako", "2011-03-06T04"), tmp_path / "cache")
    assert sky.sha256 == read_skymap(GAKO).sha256 and sky.url == files[0].url


@real
def test_s3_skymaps(s3_env, tmp_path):
    s3_env.make_bucket("skymaps")
    fs = s3_env.filesystem()
    fs.put(str(ATHA), f"skymaps/ucalgary/atha/atha_20230115/{ATHA.name}")
    files = list_skymaps("s3://skymaps/ucalgary", "atha")
    assert [f.url for f in files] == [f"s3://skymaps/ucalgary/atha/atha_20230115/{ATHA.name}"]
    sky = read_skymap_file(files[0], tmp_path / "cache")
    assert sky.site == "atha" and sky.sha256 == read_skymap(ATHA).sha256


@real
def test_skymaps_for_archive_files_keep_going_past_a_bad_hour(tmp_path):
    from aurora_pipeline.source.archive import ArchiveFile
    from aurora_pipeline.source.skymap import skymaps_for_files

    _ucalgary_tree(tmp_path / "tree")
    files = [ArchiveFile(f"/a/thg_l1_asf_{site}_{hour}_v01.cdf", site, hour, 1, 10)
             for site, hour in [("gako", "2011010617"), ("gako", "2011030605"), ("atha", "2023011604"),
                                ("gill", "2011030605")]]
    chosen, errors = skymaps_for_files(files, str(tmp_path / "tree"))
    assert {f.url: s.name for f, s in ((f, chosen[f.url]) for f in files if f.url in chosen)} == {
        files[1].url: GAKO.name, files[2].url: ATHA.name}
    assert "2011-03-05" in str(errors[files[0].url]) and "2011-01-06T17" in str(errors[files[0].url])
    assert "gill" in str(errors[files[3].url])
