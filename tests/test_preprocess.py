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
    cfg = PreprocessConfig()
    rows, cols, mask = fov_geometry((256, 256), cfg)
    side = rows.stop - rows.start
    assert abs(side - 2 * 128 * 0.85) <= 2
    assert mask[side // 2, side // 2] and not mask[0, 0]


def test_output_is_resized_uint8_and_uses_full_range():
    gradient = np.linspace(2000, 60000, 256)[None, :, None] * np.ones((5, 1, 256))
    frames = gradient.astype(np.uint16)
    out = preprocess_frames(frames, PreprocessConfig(image_size=64))
    assert out.shape == (5, 64, 64) and out.dtype == np.uint8
    assert out.max() >= 250  # the stretch reaches the top of the range


def test_bad_config_is_refused():
    with pytest.raises(BadInputError, match="fov_shrink"):
        PreprocessConfig(fov_shrink=1.5)
    with pytest.raises(BadInputError, match="percentiles"):
        PreprocessConfig(low_percentile=99, high_percentile=1)


def test_attrs_round_trip():
    cfg = PreprocessConfig(image_size=96)
    assert PreprocessConfig.from_attrs(cfg.as_attrs()) == PreprocessConfig(image_size=96, block_frames=cfg.block_frames)


@pytest.mark.parametrize("shape,size", [((3, 218, 218), 128), ((2, 100, 60), 150), ((1, 64, 64), 32)])
def test_resize_matches_torch_antialiased_bilinear(shape, size):
    import torch
    import torch.nn.functional as F

    from aurora_pipeline.ingest.preprocess import resize

    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    expected = F.interpolate(torch.from_numpy(x)[None], size=(size, size), mode="bilinear", antialias=True,
                             align_corners=False)[0].numpy()
    np.testing.assert_allclose(resize(x, size), expected, atol=2e-5)
