import numpy as np
import pytest

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.ingest.preprocess import PreprocessConfig, fov_geometry, preprocess_frames, stretch


def test_stretch_matches_equation_1_inside_the_circle():
    rng = np.random.default_rng(0)
    frames = rng.integers(2000, 60000, size=(3, 40, 40)).astype(np.uint16)
    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:35] = True
    out = stretch(frames, mask)
    for x, o in zip(frames.astype(np.float64), out):
        inside = x[mask]
        m = np.percentile(inside, 1)
        big_m = np.percentile(inside - m, 99)
        expected = np.clip((x - m) / big_m, 0, 1)
        np.testing.assert_allclose(o[mask], expected[mask], atol=1e-4)
        assert (o[~mask] == 0).all()


@pytest.mark.parametrize("value", [0, 2500, 65535])
def test_flat_and_saturated_frames_give_zeros_not_nan(value):
    frames = np.full((2, 64, 64), value, dtype=np.uint16)
    out = preprocess_frames(frames, PreprocessConfig(image_size=32))
    assert out.dtype == np.uint8 and out.shape == (2, 32, 32)
    assert (out == 0).all()


def test_crop_removes_15_percent_of_the_radius():
    cfg = PreprocessConfig(fov="circle")  # the cropped setting (the default before OATH framing)
    rows, cols, mask = fov_geometry((256, 256), cfg)
    side = rows.stop - rows.start
    assert abs(side - 2 * 128 * 0.85) <= 2
    assert mask[side // 2, side // 2] and not mask[0, 0]


def test_output_is_resized_uint8_and_uses_full_range():
    gradient = np.linspace(2000, 60000, 256)[None, :, None] * np.ones((5, 1, 256))
    frames = gradient.astype(np.uint16)
    for cfg in (PreprocessConfig(image_size=64, fov="circle"), PreprocessConfig(image_size=64)):
        out = preprocess_frames(frames, cfg)
        assert out.shape == (5, 64, 64) and out.dtype == np.uint8
        # the stretch reaches the top of the range (OATH framing: at the circle's right edge, whose columns
        # lie below the whole frame's 99th percentile)
        assert out.max() >= (250 if cfg.fov == "circle" else 225)


def test_bad_config_is_refused():
    with pytest.raises(BadInputError, match="fov_shrink"):
        PreprocessConfig(fov_shrink=1.5)
    with pytest.raises(BadInputError, match="percentiles"):
        PreprocessConfig(low_percentile=99, high_percentile=1)


def test_attrs_round_trip():
    for cfg in (PreprocessConfig(image_size=96), PreprocessConfig(image_size=96, fov="circle")):
        assert PreprocessConfig.from_attrs(cfg.as_attrs()) == cfg


@pytest.mark.parametrize("shape,size", [((3, 218, 218), 128), ((2, 100, 60), 150), ((1, 64, 64), 32)])
def test_resize_matches_torch_antialiased_bilinear(shape, size):
    import torch
    import torch.nn.functional as F

    from aurora_pipeline.ingest.preprocess import resize

    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    expected = F.interpolate(torch.from_numpy(x)[None], size=(size, size), mode="bilinear", antialias=True,
                             align_corners=False)[0].numpy()
    np.testing.assert_allclose(resize(x, size), expected, atol=2e-5)


# --- byte-identical circle outputs, elevation field of view from a real skymap --------------------

import hashlib  # noqa: E402
from pathlib import Path  # noqa: E402

from aurora_pipeline.ingest.preprocess import (  # noqa: E402
    circle_grid_elevation,
    field_of_view,
    grid_coordinates,
    resize,
    to_uint8,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "themis"
GAKO_SKYMAP = DATA / "skymaps" / "themis_skymap_gako_20110305-+_vXX.sav"
GAKO_CDF = DATA / "thg_l1_asf_gako_2011010617_v01.cdf"
needs_data = pytest.mark.skipif(not GAKO_SKYMAP.is_file() or not GAKO_CDF.is_file(),
                                reason=f"the real THEMIS files are not in {DATA} (../shared/data is absent)")
ELEVATION = PreprocessConfig(fov="elevation")


@pytest.fixture(scope="module")
def gako_sky():
    from aurora_pipeline.source.skymap import read_skymap

    return read_skymap(GAKO_SKYMAP)


def test_circle_outputs_are_the_bytes_of_the_code_before_skymaps():
    # sha256 of the outputs of preprocess.py as committed before the skymap option (55bada4)
    frames = np.random.default_rng(7).integers(2000, 60000, size=(5, 256, 256)).astype(np.uint16)
    out = preprocess_frames(frames, PreprocessConfig(image_size=128, fov="circle"))
    assert hashlib.sha256(out.tobytes()).hexdigest()[:16] == "f83aad0906cef234"


@needs_data
def test_circle_outputs_of_the_real_file_are_unchanged():
    from aurora_pipeline.source.cdf import read_asi_cdf

    out = preprocess_frames(read_asi_cdf(GAKO_CDF).images, PreprocessConfig(image_size=128, fov="circle"))
    assert hashlib.sha256(out.tobytes()).hexdigest()[:16] == "fd4f554616374199"


def test_attrs_say_which_field_of_view():
    circle = PreprocessConfig(fov="circle").as_attrs()
    assert circle["preprocess_fov"] == "circle" and "inscribed circle (no skymap)" in circle["preprocess_method"]
    elevation = ELEVATION.as_attrs()
    assert elevation["preprocess_fov"] == "elevation" and elevation["preprocess_min_elevation"] == 13.5
    assert elevation["preprocess_map_altitude_km"] == 110.0 and "elevation >=" in elevation["preprocess_method"]
    assert PreprocessConfig.from_attrs(elevation) == ELEVATION
    assert PreprocessConfig(fov="circle").setting() == {k[len("preprocess_"):]: (None if v == "none" else v)
                                                        for k, v in circle.items() if k != "preprocess_method"}
    oath = PreprocessConfig().as_attrs()  # the default for new stores
    assert oath["preprocess_fov"] == "oath" and "no crop" in oath["preprocess_method"]


def test_bad_elevation_settings_are_refused():
    with pytest.raises(BadInputError, match="fov"):
        PreprocessConfig(fov="square")
    with pytest.raises(BadInputError, match="min_elevation"):
        PreprocessConfig(fov="elevation", min_elevation=90)
    with pytest.raises(BadInputError, match="map_altitude_km"):
        PreprocessConfig(fov="elevation", map_altitude_km=100)
    with pytest.raises(BadInputError, match="no skymap field of view"):
        preprocess_frames(np.zeros((1, 64, 64), np.uint16), ELEVATION)


@needs_data
def test_elevation_field_of_view_keeps_the_pixels_above_the_threshold(gako_sky):
    from aurora_pipeline.source.skymap import elevation_mask

    fov = field_of_view(gako_sky, ELEVATION)
    full = elevation_mask(gako_sky, 13.5)
    assert fov.rows.stop - fov.rows.start == fov.cols.stop - fov.cols.start  # a square crop
    assert full[fov.rows, fov.cols].sum() == full.sum()                        # nothing kept is cut off
    np.testing.assert_array_equal(fov.mask, full[fov.rows, fov.cols])
    assert (gako_sky.el[fov.rows, fov.cols][fov.mask] >= 13.5).all()
    with pytest.raises(BadInputError, match="fov='elevation'"):
        field_of_view(gako_sky, PreprocessConfig())
    with pytest.raises(BadInputError, match="circle"):
        preprocess_frames(np.zeros((1, 256, 256), np.uint16), PreprocessConfig(fov="circle"), fov)
    with pytest.raises(BadInputError, match="fov='oath'"):
        preprocess_frames(np.zeros((1, 256, 256), np.uint16), PreprocessConfig(), fov)
    with pytest.raises(BadInputError, match="for \\(256, 256\\)"):
        preprocess_frames(np.zeros((1, 128, 128), np.uint16), ELEVATION, fov)


@needs_data
def test_percentiles_are_taken_inside_the_elevation_mask(gako_sky):
    from aurora_pipeline.source.cdf import read_asi_cdf

    raw = read_asi_cdf(GAKO_CDF).images[:4]
    fov = field_of_view(gako_sky, ELEVATION)
    low = np.isfinite(gako_sky.el) & (gako_sky.el < 13.5)
    glaring = raw.copy()
    glaring[:, low] = 65535  # horizon glare below the threshold must not move the stretch
    out, out_glare = preprocess_frames(raw, ELEVATION, fov), preprocess_frames(glaring, ELEVATION, fov)
    np.testing.assert_array_equal(out, out_glare)
    block = raw[:, fov.rows, fov.cols].astype(np.float64)
    inside = block[:, fov.mask]
    m = np.percentile(inside, 1, axis=1)
    big_m = np.percentile(inside - m[:, None], 99, axis=1)
    expected = np.clip((block - m[:, None, None]) / big_m[:, None, None], 0, 1) * fov.mask
    manual = to_uint8(resize(expected.astype(np.float32), 128))
    assert np.abs(manual.astype(int) - out.astype(int)).max() <= 1
    # with the circle, the glare is inside the kept circle and does move it
    circle = PreprocessConfig(fov="circle")
    assert not np.array_equal(preprocess_frames(raw, circle), preprocess_frames(glaring, circle))


@needs_data
def test_coordinates_land_on_the_frames_grid(gako_sky):
    fov = field_of_view(gako_sky, ELEVATION)
    coords = grid_coordinates(gako_sky, fov, ELEVATION)
    assert set(coords) == {"el", "az", "lat", "lon"} and all(v.shape == (128, 128) for v in coords.values())
    # a "frame" whose counts are the elevation itself, cropped and resized like frames, gives the same el
    el_frame = np.nan_to_num(gako_sky.el, nan=0.0)[None, fov.rows, fov.cols].astype(np.float32)
    resized = resize(el_frame, 128)[0]
    inside = coords["el"] > 20
    assert inside.sum() > 5000 and np.abs(resized[inside] - coords["el"][inside]).max() < 1.0
    zenith = np.unravel_index(np.nanargmax(coords["el"]), (128, 128))
    assert coords["el"][zenith] > 88.5
    assert abs(coords["lat"][zenith] - gako_sky.site_lat) < 0.1 and abs(coords["lon"][zenith] - gako_sky.site_lon) < 0.1
    assert np.nanmin(coords["az"]) >= 0 and np.nanmax(coords["az"]) < 360
    # north is up the rows on the grid too, and 150 km maps further out than 90 km
    r, c = zenith
    assert coords["lat"][r + 30, c] > coords["lat"][r, c] > coords["lat"][r - 30, c]
    far = {alt: grid_coordinates(gako_sky, fov, PreprocessConfig(fov="elevation", map_altitude_km=alt))["lat"]
           for alt in (90, 150)}
    assert far[150][r + 40, c] > far[90][r + 40, c]


@pytest.mark.parametrize("fov", ["circle", "oath"])
def test_circle_grid_elevation_is_the_equidistant_fisheye(fov):
    el = circle_grid_elevation(PreprocessConfig(image_size=64, fov=fov))
    assert el.shape == (64, 64) and np.nanmax(el) > 88
    edge = el[32, :][np.isfinite(el[32, :])]
    assert 12.0 < edge.min() < 16.0  # the kept circle ends near 13.5 degrees
    assert np.isnan(el[0, 0])


# --- the fast paths: exact percentiles by histogram, the banded resize ------------------------------

from aurora_pipeline.ingest.preprocess import frame_percentiles, resample_matrix  # noqa: E402


@pytest.mark.parametrize("dtype,k", [(np.uint16, 37_000), (np.uint16, 1), (np.uint16, 2), (np.uint8, 500),
                                     (np.float32, 999), (np.float64, 50)])
def test_frame_percentiles_equal_numpy_percentile(dtype, k):
    rng = np.random.default_rng(3)
    top = 256 if dtype == np.uint8 else 65536
    values = rng.integers(0, top, size=(6, k)).astype(dtype)
    values[1] = values[1, 0]               # a flat frame
    values[2, : k // 2] = top - 1          # half saturated
    before = values.copy()
    qs = (1.0, 99.0, 50.0, 0.0, 100.0)
    got = frame_percentiles(values, qs)
    for q, g in zip(qs, got):
        expected = np.percentile(values.astype(np.float64), q, axis=1)
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, expected, rtol=1e-6)
    np.testing.assert_array_equal(values, before)  # the caller's pixels are not reordered


def test_frame_percentiles_of_counts_and_of_floats_agree_exactly():
    values = np.random.default_rng(4).integers(0, 40_000, size=(8, 10_001)).astype(np.uint16)
    for by_histogram, by_partition in zip(frame_percentiles(values, (1, 99)),
                                          frame_percentiles(values.astype(np.float32), (1, 99))):
        np.testing.assert_array_equal(by_histogram, by_partition)


def test_banded_resize_is_the_full_matrix_product_to_the_bit():
    x = np.random.default_rng(5).random((4, 218, 218), dtype=np.float32)
    x[x < 0.3] = 0.0
    rows, cols = resample_matrix(218, 128), resample_matrix(218, 128)
    full = np.matmul(np.matmul(rows, x.astype(np.float64)), cols.T).astype(np.float32)
    np.testing.assert_array_equal(resize(x, 128), full)


@pytest.mark.parametrize("block_frames", [1, 7, 128])
def test_outputs_do_not_depend_on_the_block_size(block_frames):
    frames = np.random.default_rng(6).integers(2000, 60000, size=(20, 256, 256)).astype(np.uint16)
    frames[3] = 5000  # flat
    reference = preprocess_frames(frames, PreprocessConfig(image_size=128))
    again = preprocess_frames(frames, PreprocessConfig(image_size=128, block_frames=block_frames))
    np.testing.assert_array_equal(again, reference)


def _oath_test_frames() -> np.ndarray:
    frames = np.random.default_rng(7).integers(2000, 60000, size=(6, 256, 256)).astype(np.uint16)
    frames[3] = 5000                                          # flat: zeros
    frames[4] = 3000
    frames[4, :10, :10] = 60000                               # bright only outside the sky circle
    frames[5] = 100
    frames[5, 100:105, 100:105] = 4000                        # p99 at the floor: stretched by its maximum
    return frames


@pytest.mark.parametrize("size, digest", [(128, "8662a054739c43fa"), (64, "c9c4eec2f95e6604"),
                                          (224, "ccefa169d5b5d39c")])
def test_oath_framing_outputs_are_the_bytes_of_the_code_that_made_the_first_oath_stores(size, digest):
    # sha256 of preprocess_oath_frames' outputs as committed in 2d0dbf9 (before issue 22's second pass):
    # the stores made then record no oath_resize, read as "float64", and keep these bytes on a rerun
    out = preprocess_frames(_oath_test_frames(), PreprocessConfig(image_size=size, oath_resize="float64"))
    assert hashlib.sha256(out.tobytes()).hexdigest()[:16] == digest


@pytest.mark.parametrize("size, digest", [(128, "59aa235356474eb9"), (64, "fef034430148e627"),
                                          (224, "0758fa45c864164e")])
def test_oath_framing_outputs_with_pils_resize_are_pinned(size, digest):
    # the bytes of new stores (oath_resize="pil"): pinned so that a later change cannot move them silently
    out = preprocess_frames(_oath_test_frames(), PreprocessConfig(image_size=size))
    assert hashlib.sha256(out.tobytes()).hexdigest()[:16] == digest


def test_oath_framing_resizes_its_uint8_frame_as_pil_does():
    from PIL import Image

    from aurora_pipeline.ingest.preprocess import oath_circle, stretch_whole_frame, to_uint8_truncated

    frames = _oath_test_frames()
    levels = to_uint8_truncated(stretch_whole_frame(frames)) * oath_circle((256, 256), PreprocessConfig())
    for size in (128, 224):
        pil = np.stack([np.asarray(Image.fromarray(f, "L").resize((size, size), Image.BILINEAR)) for f in levels])
        np.testing.assert_array_equal(preprocess_frames(frames, PreprocessConfig(image_size=size)), pil)


@needs_data
@pytest.mark.parametrize("oath_resize, digest", [("float64", "dca56a07b00a19aa"), ("pil", "448b7acd74fe104f")])
def test_oath_framing_outputs_of_the_real_file_are_unchanged(oath_resize, digest):
    from aurora_pipeline.source.cdf import read_asi_cdf

    out = preprocess_frames(read_asi_cdf(GAKO_CDF).images, PreprocessConfig(oath_resize=oath_resize))
    assert hashlib.sha256(out.tobytes()).hexdigest()[:16] == digest


def test_a_recorded_oath_setting_without_oath_resize_reads_as_float64():
    from aurora_pipeline.ingest.config import recorded_setting

    first_stores = {k: v for k, v in PreprocessConfig().setting().items() if k != "oath_resize"}
    assert PreprocessConfig(**recorded_setting(first_stores)).oath_resize == "float64"
    assert PreprocessConfig().setting()["oath_resize"] == "pil"                      # new stores
    assert "oath_resize" not in PreprocessConfig(fov="circle").setting()            # resizes floats either way
    assert recorded_setting(PreprocessConfig(fov="circle").setting()) == PreprocessConfig(fov="circle").setting()
    attrs = {k: v for k, v in PreprocessConfig().as_attrs().items() if k != "preprocess_oath_resize"}
    assert PreprocessConfig.from_attrs(attrs).oath_resize == "float64"
    with pytest.raises(BadInputError, match="oath_resize"):
        PreprocessConfig(oath_resize="bicubic")
