"""write_synthetic_oath: a stand-in that looks like the release to load_oath and to a reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.oath.dataset import CLASS_NAMES, load_oath
from aurora_pipeline.oath.synth import OATH_HEADER, class_counts, rotate_like_release, write_synthetic_oath
from aurora_pipeline.pngio import read_png16

SHARED_OATH = Path(__file__).resolve().parents[3] / "shared" / "data" / "oath"


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    return write_synthetic_oath(tmp_path_factory.mktemp("flat") / "oath", n=24, seed=5)


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):
    return write_synthetic_oath(tmp_path_factory.mktemp("rot") / "oath", n=24, seed=5, layout="rotated")


def test_header_is_the_releases_comment_block():
    real = SHARED_OATH / "classifications" / "classifications.csv"
    if not real.is_file():
        pytest.skip(f"real OATH label file not found at {real}")
    lines = real.read_text().splitlines(keepends=True)
    assert OATH_HEADER == "".join(lines[:18])
    assert lines[18].strip() == "class2,class6,picNum,picType,rotAng"


def test_label_file_looks_like_the_release(flat):
    text = (flat / "classifications" / "classifications.csv").read_text()
    assert text.startswith(OATH_HEADER + "class2,class6,picNum,picType,rotAng\n")
    rows = [line.split(",") for line in text.splitlines()[19:]]
    assert len(rows) == 24
    for k, (class2, class6, picnum, pictype, rotang) in enumerate(rows):
        assert picnum == f"{k + 1:05d}" and len(rotang) == 3 and 0 <= int(rotang) < 360
        assert pictype == CLASS_NAMES[int(class6)] and int(class2) == (int(class6) >= 3)
    ds = load_oath(flat, expected_counts=None)
    assert dict(zip(CLASS_NAMES, np.bincount(ds.labels).tolist())) == class_counts(24)


def test_split_file_is_five_permutations_written_as_floats(flat):
    lines = (flat / "classifications" / "train_test_split.csv").read_text().splitlines()
    assert len(lines) == 5
    assert all(v.endswith(("e+00", "e+01")) and "." in v for v in lines[0].split(","))  # like 4.604e+03
    ds = load_oath(flat, expected_counts=None)
    assert all(sorted(row) == list(range(24)) for row in ds.splits)


def test_class_counts_follow_the_release_proportions():
    release = {"arc": 774, "diffuse": 1102, "discrete": 1400, "cloudy": 852, "moon": 614, "noaurora": 1082}
    assert class_counts(5824) == release
    for n in (6, 7, 60, 1001):
        counts = class_counts(n)
        assert sum(counts.values()) == n and min(counts.values()) >= 1
    assert class_counts(60) == {"arc": 8, "diffuse": 11, "discrete": 15, "cloudy": 9, "moon": 6, "noaurora": 11}


def test_images_are_16_bit_rgb_with_signal_in_green_only(flat):
    ds = load_oath(flat, expected_counts=None)
    rgb = read_png16(ds.image_path(0))
    assert rgb.shape == (256, 256, 3)
    assert (rgb[..., 0] == 0).all() and (rgb[..., 2] == 0).all()
    assert rgb[..., 1].max() > 10000 and (rgb[..., 1] % 257 != 0).any()
    means = [ds.load_image(i).mean() for i in range(len(ds))]
    assert len(set(np.round(means, 6))) == len(ds)  # every image is its own scene


def test_same_seed_same_files_other_seed_other_files(flat, tmp_path):
    again = write_synthetic_oath(tmp_path / "again", n=24, seed=5)
    other = write_synthetic_oath(tmp_path / "other", n=24, seed=6)
    for rel in ("classifications/classifications.csv", "images/cropped_scaled/00003.png"):
        assert (again / rel).read_bytes() == (flat / rel).read_bytes()
        assert (other / rel).read_bytes() != (flat / rel).read_bytes()


def test_rotated_layout_holds_only_rotated_copies_of_the_same_scenes(flat, rotated):
    assert not (rotated / "images" / "cropped_scaled").exists()
    a, b = load_oath(flat, expected_counts=None), load_oath(rotated, expected_counts=None)
    assert b.image_folder == "cropped_scaled_rotated"
    assert a.table.equals(b.table)
    for i in range(6):
        name = f"{b.table.picNum.iloc[i]}_{b.table.rotAng.iloc[i]}.png"
        assert b.image_path(i) == rotated / "images" / "cropped_scaled_rotated" / name
        upright = read_png16(a.image_path(i), channel=1)
        expected = rotate_like_release(upright, int(b.table.rotAng.iloc[i]))
        np.testing.assert_array_equal(read_png16(b.image_path(i), channel=1), expected)


@pytest.mark.parametrize("angle", [90, 89])
def test_rotation_is_clockwise_like_imagemagick(angle):
    image = np.zeros((65, 65), dtype=np.uint16)
    image[2:6, 30:35] = 60000  # a blob at the top
    turned = rotate_like_release(image, angle)
    y, x = np.argwhere(turned > 30000).mean(axis=0)
    assert abs(y - 32) < 3 and x > 55  # now on the right: clockwise with y down
    assert turned.shape == image.shape and turned.dtype == np.uint16


def test_process_pool_writes_the_same_files(tmp_path):
    one = write_synthetic_oath(tmp_path / "one", n=64, seed=1, workers=1)
    two = write_synthetic_oath(tmp_path / "two", n=64, seed=1, workers=2)
    for k in (1, 33, 64):
        rel = f"images/cropped_scaled/{k:05d}.png"
        assert (one / rel).read_bytes() == (two / rel).read_bytes()
    assert len(list((two / "images" / "cropped_scaled").iterdir())) == 64


def test_refuses_bad_arguments_and_non_empty_folders(flat, tmp_path):
    with pytest.raises(BadInputError, match="is not empty; refusing to overwrite"):
        write_synthetic_oath(flat, n=6)
    with pytest.raises(BadInputError, match="layout"):
        write_synthetic_oath(tmp_path / "x", n=6, layout="sideways")
    with pytest.raises(BadInputError, match="n >= 6"):
        write_synthetic_oath(tmp_path / "y", n=5)
