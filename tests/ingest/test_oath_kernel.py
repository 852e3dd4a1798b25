"""The compiled OATH framing kernel against its NumPy reference: the same bytes, always."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from aurora_pipeline.ingest import oath_kernel
from aurora_pipeline.ingest.preprocess import (PreprocessConfig, oath_circle, oath_frames_numpy, percentile_ranks,
                                               preprocess_oath_frames)

GAKO_CDF = Path(__file__).resolve().parents[3] / "shared" / "data" / "themis" / "thg_l1_asf_gako_2011010617_v01.cdf"


def _frames(shape=(12, 256, 256), seed=0) -> np.ndarray:
    """Auroral-looking counts: a smooth background, a bright arc, noise, and the hard cases."""
    rng = np.random.default_rng(seed)
    n, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.empty(shape, np.uint16)
    for i in range(n):
        arc = 6000 * np.exp(-((yy - h * (0.3 + 0.04 * i)) / (0.05 * h)) ** 2)
        frames[i] = np.clip(2200 + arc + rng.normal(0, 40 + 10 * i, (h, w)), 0, 65535)
    if n > 1:
        frames[1, :4, :4] = 65535                  # saturated pixels: the counts span the whole range
    if n > 2:
        frames[2] = 5000                           # flat: zeros
    if n > 3:
        frames[3] = 100
        frames[3, h // 2 : h // 2 + 3, w // 2 : w // 2 + 3] = 4000   # p99 at the floor: stretched by its maximum
    if n > 4:
        frames[4] = rng.integers(0, 65536, (h, w))  # white noise over every count
    if n > 5:
        frames[5] //= 16                           # few distinct counts: many ties at the percentiles
    return frames


def test_the_kernel_is_built_in_this_install():
    # make install (pip install -e .) compiles it; without it ingest runs the slower NumPy path
    assert oath_kernel.available(), "aurora_pipeline.ingest._oath_framing is not built: run `make install`"


@pytest.mark.parametrize("size", [128, 224, 64, 256, 100, 8])
def test_kernel_bytes_are_the_numpy_paths(size):
    frames = _frames()
    cfg = PreprocessConfig(image_size=size)
    np.testing.assert_array_equal(preprocess_oath_frames(frames, cfg), oath_frames_numpy(frames, cfg))


@pytest.mark.parametrize("shape, size", [((5, 240, 256), 128), ((5, 256, 200), 96), ((4, 31, 33), 16),
                                         ((3, 64, 64), 128)])
def test_kernel_bytes_are_the_numpy_paths_for_other_frames(shape, size):
    frames = _frames(shape, seed=1)
    cfg = PreprocessConfig(image_size=size)
    np.testing.assert_array_equal(preprocess_oath_frames(frames, cfg), oath_frames_numpy(frames, cfg))


@pytest.mark.parametrize("low, high", [(1.0, 99.0), (0.0, 100.0), (5.0, 95.0), (2.5, 99.9)])
def test_kernel_takes_the_settings_percentiles(low, high):
    frames = _frames((4, 128, 128), seed=2)
    cfg = PreprocessConfig(image_size=64, low_percentile=low, high_percentile=high)
    np.testing.assert_array_equal(preprocess_oath_frames(frames, cfg), oath_frames_numpy(frames, cfg))


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32, ">u2"])
def test_other_dtypes_give_the_numpy_paths_bytes(dtype):
    frames = _frames((4, 64, 64), seed=3)
    if np.dtype(dtype) == np.uint8:
        frames = (frames >> 8).astype(np.uint8)
    frames = frames.astype(dtype)
    cfg = PreprocessConfig(image_size=32)
    np.testing.assert_array_equal(preprocess_oath_frames(frames, cfg), oath_frames_numpy(frames, cfg))


def test_flat_frames_are_flagged_and_left_to_the_numpy_path():
    frames = _frames((6, 64, 64))
    cfg = PreprocessConfig(image_size=32)
    around = (percentile_ranks(64 * 64, 1.0), percentile_ranks(64 * 64, 99.0))
    out, flat = oath_kernel.oath_frames(frames, oath_circle((64, 64), cfg).astype(np.uint8), around, 32)
    assert flat.tolist() == [False, False, True, True, False, False]
    assert not out[flat].any()


def test_a_noncontiguous_stack_gives_the_same_bytes():
    frames = _frames((8, 128, 128))
    cfg = PreprocessConfig(image_size=64)
    np.testing.assert_array_equal(preprocess_oath_frames(frames[::2], cfg), oath_frames_numpy(frames[::2], cfg))


def test_the_kernel_refuses_buffers_of_the_wrong_size():
    from aurora_pipeline.ingest import _oath_framing

    frames = _frames((2, 64, 64))
    sky = np.ones((64, 64), np.uint8)
    ranks, fracs = np.array([655 // 16, 655 // 16 + 1, 4054, 4055], np.int64), np.zeros(2, np.float32)
    first, weights = oath_kernel._filter(64, 32)
    out, flat = np.empty((2, 32, 32), np.uint8), np.zeros(2, np.uint8)
    args = [frames, 2, 64, 64, sky, ranks, fracs, 32, first, weights, weights.shape[1], first, weights,
            weights.shape[1], out, flat]
    _oath_framing.frames(*args)                     # as given: fine
    short = list(args)
    short[14] = np.empty((1, 32, 32), np.uint8)
    with pytest.raises(ValueError, match="out has 1024 bytes, expected 2048"):
        _oath_framing.frames(*short)
    outside = list(args)
    outside[8] = first + 40                          # a filter reaching past the frame's edge
    with pytest.raises(ValueError, match="outside the frame"):
        _oath_framing.frames(*outside)


def test_without_the_kernel_the_numpy_path_runs_and_says_so(monkeypatch, caplog):
    frames = _frames((3, 64, 64))
    cfg = PreprocessConfig(image_size=32)
    expected = preprocess_oath_frames(frames, cfg)
    monkeypatch.setattr(oath_kernel, "_oath_framing", None)
    oath_kernel.warn_missing.cache_clear()
    with caplog.at_level(logging.WARNING, logger="aurora_pipeline.ingest.oath_kernel"):
        np.testing.assert_array_equal(preprocess_oath_frames(frames, cfg), expected)
    oath_kernel.warn_missing.cache_clear()
    assert "is not built" in caplog.text and "make install" in caplog.text


def test_kernel_bytes_are_the_numpy_paths_on_the_real_file():
    if not GAKO_CDF.is_file():
        pytest.skip(f"real THEMIS file not found at {GAKO_CDF} (../shared/data is absent)")
    from aurora_pipeline.source.cdf import read_asi_cdf

    raw = read_asi_cdf(GAKO_CDF).images
    for size in (128, 224):
        cfg = PreprocessConfig(image_size=size)
        np.testing.assert_array_equal(preprocess_oath_frames(raw, cfg), oath_frames_numpy(raw, cfg))
