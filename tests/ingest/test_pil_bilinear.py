"""``pil_resize`` against PIL itself (Pillow, installed with torchvision): the same bytes for every size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from aurora_pipeline.ingest.pil_bilinear import pil_resize, pil_weights


def _pil(frames: np.ndarray, size: int) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(f, "L").resize((size, size), Image.BILINEAR)) for f in frames])


def _frames(shape) -> np.ndarray:
    rng = np.random.default_rng(sum(shape))
    frames = rng.integers(0, 256, shape).astype(np.uint8)
    frames[0] = 255                                            # saturated: the weights' sum above 1 is clipped
    frames[1] = 0
    frames[2] = (np.indices(shape[1:]).sum(axis=0) % 2) * 255  # a checkerboard: every rounding is exercised
    return frames


# 128 and 64: the 2x reduction's integer shortcut; 224 (the published encoder's input), odd sizes and
# enlargements: the banded product
@pytest.mark.parametrize("size", [128, 64, 224, 100, 255, 256, 300, 512, 31, 8])
def test_square_frames_are_pils_bytes(size):
    frames = _frames((5, 256, 256))
    np.testing.assert_array_equal(pil_resize(frames, size), _pil(frames, size))


@pytest.mark.parametrize("shape, size", [((3, 218, 218), 109), ((3, 6, 6), 3), ((3, 512, 512), 128)])
def test_other_square_frames_are_pils_bytes(shape, size):
    frames = _frames(shape)
    np.testing.assert_array_equal(pil_resize(frames, size), _pil(frames, size))


@pytest.mark.parametrize("shape, size", [((4, 200, 256), 100), ((4, 256, 130), 65)])
def test_oblong_frames_are_within_one_level_of_pil(shape, size):
    # for some oblong shapes Pillow takes the vertical pass first; the passes' uint8 rounding then differs
    frames = _frames(shape)
    diff = np.abs(pil_resize(frames, size).astype(int) - _pil(frames, size))
    assert diff.max() <= 1


def test_the_2x_weights_are_pils_one_three_three_one_eighths():
    first, weights = pil_weights(256, 128)
    assert tuple(weights[5, :4]) == (1 << 19, 3 << 19, 3 << 19, 1 << 19) and first[5] == 9
    assert tuple(weights[0, :3]) == (1797559, 1797559, 599186) and first[0] == 0   # 3/7, 3/7, 1/7 at the edge


def test_frames_are_resized_independently():
    frames = _frames((6, 256, 256))
    whole = pil_resize(frames, 128)
    np.testing.assert_array_equal(np.concatenate([pil_resize(frames[:1], 128), pil_resize(frames[1:], 128)]), whole)
