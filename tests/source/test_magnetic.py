"""AACGM-v2 magnetic coordinates: against aacgmv2 called directly, site positions against the real skymaps,
what open_site / open_sites carry, the years outside AACGM's range, the silenced start-up output."""

import datetime as dt
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import aurora_pipeline
from aurora_pipeline.source import magnetic
from aurora_pipeline.synth.labelled_store import write_labelled_store

aacgmv2 = pytest.importorskip("aacgmv2")
SKYMAPS = Path(__file__).resolve().parents[3] / "shared" / "data" / "themis" / "skymaps"
REAL = {"gako": "themis_skymap_gako_20110305-+_vXX.sav", "atha": "themis_skymap_atha_20230115-+_v02.sav"}


def _direct(lat, lon, when):
    """(mlat, MLT) from aacgmv2 itself, one call per time."""
    mlat, _, mlt = aacgmv2.get_aacgm_coord(lat, lon, 110.0, when.astype(object))
    return float(mlat), float(mlt)


def test_gakona_at_110_km_on_2012_01_10_08_ut():
    lat, lon, _ = magnetic.site_position("gako")
    mlat, mlt = magnetic.zenith_coordinates(np.array(["2012-01-10T08"], "datetime64[ms]"), lat, lon)
    assert round(float(mlat[0]), 1) == 63.2 and round(float(mlt[0]), 1) == 21.3


def test_zenith_coordinates_agree_with_aacgmv2_at_sample_times():
    rng = np.random.default_rng(0)
    start = np.datetime64("1990-01-01", "s").astype(np.int64)
    stop = np.datetime64("2029-12-31T23", "s").astype(np.int64)
    times = np.sort(rng.integers(start, stop, 12)).astype("datetime64[s]").astype("datetime64[ms]")
    times = np.r_[times, np.array(["2011-12-31T23:59:59", "2012-01-01T00:00:01", "2029-12-31T23:30"],
                                  "datetime64[ms]")]
    for site in ("gako", "atha", "nrsq"):
        lat, lon, _ = magnetic.site_position(site)
        mlat, mlt = magnetic.zenith_coordinates(times, lat, lon)
        for t, a, b in zip(times, mlat, mlt):
            want_lat, want_mlt = _direct(lat, lon, t)
            assert abs(a - want_lat) < 2e-3, (site, t)
            assert abs((b - want_mlt + 12) % 24 - 12) * 3600 < 10.0, (site, t, b, want_mlt)


def test_outside_aacgm_years_values_are_missing():
    times = np.array(["1989-12-31T23", "2030-01-01T00", "2012-01-10T08"], "datetime64[ms]")
    mlat, mlt = magnetic.zenith_coordinates(times, 62.4, -145.2)
    assert np.isnan(mlat[:2]).all() and np.isnan(mlt[:2]).all() and np.isfinite(mlat[2])
    assert magnetic.outside_valid_years(times) == 2
    assert np.isnan(magnetic.pixel_coordinates(np.array([62.0]), np.array([-145.0]), 110, times[0])[0]).all()


@pytest.mark.parametrize("site", ["gako", "atha"])
def test_the_table_positions_against_the_real_skymaps(site):
    from aurora_pipeline.source.skymap import read_skymap

    if not (SKYMAPS / REAL[site]).exists():
        pytest.skip(f"real skymap not found at {SKYMAPS / REAL[site]} (../shared/data is absent)")
    sky = read_skymap(SKYMAPS / REAL[site])
    lat, lon = magnetic.THEMIS_POSITIONS[site]
    # gako's row is the skymap's position; atha's (asilib's THEMIS row) is ~26 km from its 2023 skymap
    tolerance = {"gako": (0.01, 0.01), "atha": (0.15, 0.4)}[site]
    assert abs(lat - sky.site_lat) < tolerance[0] and abs(lon - sky.site_lon) < tolerance[1]
    when = np.array([np.datetime64(sky.valid_from, "ms")])
    from_table = magnetic.zenith_coordinates(when, lat, lon)[0][0]
    from_skymap = magnetic.zenith_coordinates(when, sky.site_lat, sky.site_lon)[0][0]
    assert abs(from_table - from_skymap) < 0.2
    assert magnetic.site_position(site, (sky.site_lat, sky.site_lon, sky.site_alt_m))[:2] == (
        pytest.approx(sky.site_lat), pytest.approx(sky.site_lon))


def test_open_site_carries_lazy_mlat_and_mlt_from_the_table_position(tmp_path):
    store = tmp_path / "s.zarr"
    write_labelled_store(store, "gako", ["2012-01-10T08", "2013-06-01T02"], lambda h, t: np.zeros(len(t), np.int8),
                         frames_per_hour=10, cadence_ms=360_000)
    import dask.array as da

    ds = aurora_pipeline.open_site(store, "gako")
    assert isinstance(ds["mlt"].data, da.Array) and isinstance(ds["mlat"].data, da.Array)  # nothing computed on open
    assert ds.attrs["site_position_source"].startswith("THEMIS_POSITIONS") and ds.mlt.attrs["units"] == "hour"
    lat, lon = magnetic.THEMIS_POSITIONS["gako"]
    for t, a, b in zip(ds.time.values, ds.mlat.values, ds.mlt.values):
        want_lat, want_mlt = _direct(lat, lon, t)
        assert abs(a - want_lat) < 2e-3 and abs((b - want_mlt + 12) % 24 - 12) * 3600 < 10.0
    both = aurora_pipeline.open_sites(store)
    np.testing.assert_array_equal(both.mlt.values, ds.mlt.values)


def test_years_outside_aacgm_warn_once_and_are_missing(tmp_path):
    store = tmp_path / "s.zarr"
    for site in ("gako", "gill"):
        write_labelled_store(store, site, ["2031-01-02T08", "2012-01-10T08"], lambda h, t: np.zeros(len(t), np.int8),
                             frames_per_hour=4)
    with pytest.warns(magnetic.MagneticCoordinatesWarning, match="1990-2030") as caught:
        ds = aurora_pipeline.open_site(store, "gako")
    assert len([w for w in caught if issubclass(w.category, magnetic.MagneticCoordinatesWarning)]) == 1
    late = ds.time.values >= np.datetime64("2031-01-01")
    assert np.isnan(ds.mlt.values[late]).all() and np.isfinite(ds.mlt.values[~late]).all()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        aurora_pipeline.open_sites(store)
    assert len([w for w in caught if issubclass(w.category, magnetic.MagneticCoordinatesWarning)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inside the years: no warning at all
        aurora_pipeline.open_site(store, "gako", "2012-01-01", "2013-01-01")


def test_the_start_up_output_of_aacgmv2_is_silenced(tmp_path):
    env = {**os.environ, "IGRF_COEFFS": str(tmp_path / "other.txt"), "PYTHONPATH": str(Path(__file__).parents[2])}
    plain = subprocess.run([sys.executable, "-c", "import aacgmv2"], env=env, capture_output=True, text=True)
    assert "resetting" in plain.stderr  # what a user would see without the silencing
    ours = subprocess.run([sys.executable, "-c", "from aurora_pipeline.source.magnetic import _aacgmv2; _aacgmv2()"],
                          env=env, capture_output=True, text=True)
    assert ours.returncode == 0 and ours.stderr == "" and ours.stdout == ""


# --- with the real Gakona skymap beside the frames ---------------------------------------------------------
@pytest.fixture(scope="module")
def skymap_store(tmp_path_factory):
    import shutil

    from aurora_pipeline.ingest.driver import ingest
    from aurora_pipeline.ingest.preprocess import PreprocessConfig
    from aurora_pipeline.source.archive import list_archive
    from aurora_pipeline.synth.archive import write_synthetic_archive

    if not (SKYMAPS / REAL["gako"]).exists():
        pytest.skip(f"real skymap not found at {SKYMAPS / REAL['gako']} (../shared/data is absent)")
    root = tmp_path_factory.mktemp("magnetic")
    tree = root / "skymaps"
    tree.mkdir()
    shutil.copy(SKYMAPS / REAL["gako"], tree / REAL["gako"])
    write_synthetic_archive(root / "archive", sites=["gako"], start="2011-03-06T08", hours=1, frames_per_hour=4,
                            size=256)
    ingest(list_archive(root / "archive"), root / "s.zarr", PreprocessConfig(fov="elevation", image_size=32),
           skymaps=str(tree))
    return root / "s.zarr"


def test_the_skymap_position_and_pixel_coordinates(skymap_store):
    from aurora_pipeline.source.skymap import read_skymap

    sky = read_skymap(SKYMAPS / REAL["gako"])
    ds = aurora_pipeline.open_site(skymap_store, "gako")
    assert ds.attrs["site_position_source"] == "skymap"
    assert (ds.attrs["site_lat"], ds.attrs["site_lon"]) == (pytest.approx(sky.site_lat), pytest.approx(sky.site_lon))
    assert ds.pixel_mlat.dims == ("y", "x") and ds.pixel_mlat.attrs["mapping_altitude_km"] == 110.0
    lat, lon = ds.lat.values, ds.lon.values
    mlat, mlon = ds.pixel_mlat.values, ds.pixel_mlon.values
    assert (np.isfinite(mlat) == np.isfinite(lat)).all()
    epoch = np.datetime64(ds.pixel_mlat.attrs["aacgm_epoch"]).astype(dt.datetime)
    for iy, ix in [(16, 16), (10, 20), (22, 9)]:
        want = aacgmv2.convert_latlon(float(lat[iy, ix]), float(lon[iy, ix]), 110.0, epoch, "G2A")
        assert mlat[iy, ix] == pytest.approx(want[0], abs=1e-3) and mlon[iy, ix] == pytest.approx(want[1], abs=1e-3)


def test_the_magnetic_keogram_at_gakona(skymap_store):
    from aurora_pipeline.keograms import magnetic_keogram

    keo = magnetic_keogram(skymap_store, "gako")
    ds = aurora_pipeline.open_site(skymap_store, "gako")
    assert keo.dims == ("time", "mlat") and keo.sizes["time"] == 4
    axis = keo["mlat"].values
    assert (np.diff(axis) > 0).all() and axis[0] < 61 and axis[-1] > 65  # the field of view spans ~56-71 deg
    # the line is the magnetic meridian: one magnetic longitude, the zenith's, within a pixel's spread
    zenith = np.unravel_index(np.nanargmax(ds.el.values), ds.el.shape)
    mlon0 = float(ds.pixel_mlon.values[zenith])
    assert np.nanmax(np.abs((keo["mlon"].values - mlon0 + 180) % 360 - 180)) < 2.5
    # and it passes the zenith at the site's own magnetic latitude
    near = int(np.argmin(np.abs(keo["el"].values - 90)))
    assert abs(float(axis[near]) - float(ds.mlat.values[0])) < 0.5


def test_keogram_magnetic_on_the_command_line(skymap_store, tmp_path):
    import argparse

    from aurora_cli import keogram_events

    parser = argparse.ArgumentParser(prog="aurora-pipeline")
    keogram_events.add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["keogram", "--store", str(skymap_store), "--site", "gako", "--magnetic",
                              "--out", str(tmp_path / "k.png")])
    result = keogram_events.HANDLERS["keogram"](args)
    assert result["frames"] == 4 and "AACGM-v2" in result["geometry"] and (tmp_path / "k.png").stat().st_size > 1000
