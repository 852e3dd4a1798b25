"""The OATH framing (``fov="oath"``, the default for new stores) against the published encoder's recipe,
on the real Gakona CDF and the real OATH images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from oath_recipe import recipe

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.ingest.preprocess import (PreprocessConfig, oath_circle, oath_images_to_frames,
                                               preprocess_frames, stretch_whole_frame)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
GAKO_CDF = DATA / "themis" / "thg_l1_asf_gako_2011010617_v01.cdf"
OATH_IMAGES = DATA / "oath" / "images" / "cropped_scaled"


@pytest.fixture(scope="module")
def gako_raw() -> np.ndarray:
    if not GAKO_CDF.is_file():
        pytest.skip(f"real THEMIS file not found at {GAKO_CDF} (../shared/data is absent)")
    from aurora_pipeline.source.cdf import read_asi_cdf

    return read_asi_cdf(GAKO_CDF).images


@pytest.mark.parametrize("size", [224, 64])
def test_real_gakona_frames_are_the_recipes_bytes(gako_raw, size):
    ours = preprocess_frames(gako_raw, PreprocessConfig(image_size=size))     # oath_resize="pil": new stores
    assert ours.shape == (len(gako_raw), size, size) and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, recipe(gako_raw, size))


@pytest.mark.parametrize("size", [224, 64])
def test_real_gakona_frames_of_the_first_oath_stores_are_within_a_level_of_the_recipe(gako_raw, size):
    ours = preprocess_frames(gako_raw, PreprocessConfig(image_size=size, oath_resize="float64"))
    diff = np.abs(ours.astype(int) - recipe(gako_raw, size).astype(int))
    assert diff.max() <= 1 and diff.mean() <= 0.2


def test_the_frame_is_kept_whole_with_the_sky_in_a_circle_of_radius_108(gako_raw):
    full = preprocess_frames(gako_raw[:3], PreprocessConfig(image_size=256))
    lit = np.flatnonzero(full[0, 128] > 0)
    assert (lit[0], lit[-1]) == (20, 236)                 # as in OATH's images
    assert oath_circle((256, 256), PreprocessConfig()).sum() == np.count_nonzero(
        np.hypot(*np.mgrid[-128:128, -128:128]) <= 108)
    cropped = preprocess_frames(gako_raw[:3], PreprocessConfig(image_size=256, fov="circle"))
    assert not np.array_equal(full, cropped)              # the old setting crops to the circle's square


def test_real_oath_images_are_framed_like_the_circle():
    paths = sorted(OATH_IMAGES.glob("*.png"))
    if not paths:
        pytest.skip(f"real OATH images not found in {OATH_IMAGES} (../shared/data is absent)")
    from aurora_pipeline.pngio import read_png16

    outside = ~oath_circle((256, 256), PreprocessConfig())
    green = np.stack([read_png16(p, channel=1) for p in paths])
    # OATH's own circle is drawn on a grid a fraction of a pixel off ours (row 128 is lit from column 20
    # to 236, column 128 from row 19 to 235): ~530 of the 28,911 pixels outside ours are lit in each image
    assert (green[:, outside] > 0).mean(axis=1).max() < 0.025
    assert np.abs((green == 0).mean(axis=(1, 2)) - outside.mean()).max() < 0.005   # 43.8% vs 44.1% zero
    assert (green[:, ~outside] > 0).mean() > 0.99         # the sky itself is lit
    frames = oath_images_to_frames(green, 224)
    assert frames.shape == (len(paths), 224, 224) and frames.dtype == np.uint8
    np.testing.assert_array_equal(oath_images_to_frames(green, 256), (green.astype(np.float64) / 65535 * 255).astype(np.uint8))


def test_a_frame_with_p99_at_the_floor_is_stretched_by_its_maximum():
    frames = np.full((2, 64, 64), 1000, np.uint16)
    frames[0, :4, :4] = 3000                   # 16 of 4096 pixels lit: p99 of x - p1 is 0
    out = stretch_whole_frame(frames)
    assert out[0, 0, 0] == 1.0 and out[0, 10, 10] == 0.0
    assert (out[1] == 0).all()                 # a flat frame stays zeros, never NaN


def test_oath_framing_refuses_a_skymap_field_of_view():
    from aurora_pipeline.ingest.preprocess import FieldOfView

    fov = FieldOfView(slice(0, 8), slice(0, 8), np.ones((8, 8), bool), "elevation", (8, 8))
    with pytest.raises(BadInputError, match="fov='oath'"):
        preprocess_frames(np.zeros((1, 8, 8), np.uint16), PreprocessConfig(image_size=8), fov)
