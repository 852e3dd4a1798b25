"""load_oath on the real OATH label, split and image files, on synthetic releases in
both image layouts, and on broken inputs; plus the 16-bit PNG reader it relies on."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.oath.dataset import CLASS_NAMES, OATH_CLASS_COUNTS, load_oath, verify_images
from aurora_pipeline.oath.synth import OATH_HEADER, write_synthetic_oath
from aurora_pipeline.pngio import read_png16, write_png16

SHARED_OATH = Path(__file__).resolve().parents[3] / "shared" / "data" / "oath"
REAL_PICNUMS = ["00001", "00002", "00004", "00005", "00006", "00007", "00008", "00011", "00014", "00053"]


@pytest.fixture(scope="module")
def real():
    if not (SHARED_OATH / "classifications" / "classifications.csv").is_file():
        pytest.skip(f"real OATH files not found at {SHARED_OATH} (../shared/data/oath beside the repo)")
    return load_oath(SHARED_OATH)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic_oath(tmp_path_factory.mktemp("synth") / "oath", n=60, seed=3)


def _release(root: Path, rows: list[str], splits: np.ndarray | None = None, folder="classifications") -> Path:
    """A release folder with the given label rows (no images)."""
    (root / folder).mkdir(parents=True)
    label_name = "classifications.csv" if folder == "classifications" else "classification.csv"
    header = OATH_HEADER + "class2,class6,picNum,picType,rotAng\n"
    (root / folder / label_name).write_text(header + "\n".join(rows) + "\n")
    if splits is None:
        splits = np.stack([np.random.default_rng(k).permutation(len(rows)) for k in range(5)])
    np.savetxt(root / folder / "train_test_split.csv", np.asarray(splits, dtype=float), delimiter=",")
    return root


def _rows(n_per_class: int = 2) -> list[str]:
    rows = []
    for c, name in enumerate(CLASS_NAMES):
        for _ in range(n_per_class):
            rows.append(f"{int(c >= 3)},{c},{len(rows) + 1:05d},{name},{(7 * len(rows)) % 360:03d}")
    return rows


# ---------------------------------------------------------------- real files


def test_real_labels_have_the_release_counts_and_zero_padded_strings(real):
    assert len(real) == 5824
    assert real.class_names == ("arc", "diffuse", "discrete", "cloudy", "moon", "noaurora")
    counts = dict(zip(CLASS_NAMES, np.bincount(real.labels).tolist()))
    assert counts == {"arc": 774, "diffuse": 1102, "discrete": 1400, "cloudy": 852, "moon": 614, "noaurora": 1082}
    assert real.table["picNum"].iloc[0] == "00001" and real.table["picNum"].iloc[-1] == "05824"
    assert real.table["rotAng"].iloc[1] == "029"  # second row of the file: 0,2,00002,discrete,029
    assert (real.table["class2"] == (real.labels >= 3)).all()
    assert len(real.comment.splitlines()) == 18 and "CC BY 4.0" in real.comment


def test_real_splits_are_five_permutations_cut_4077_1747(real):
    assert real.splits.shape == (5, 5824)
    for i in range(5):
        assert sorted(real.splits[i]) == list(range(5824))
        train, test = real.split(i)
        assert (len(train), len(test)) == (4077, 1747)
        assert not set(train) & set(test)
    assert real.splits[0, :3].tolist() == [4604, 915, 289]  # the file's first values, 4.604e+03, ...
    assert not np.array_equal(real.splits[0], real.splits[1])


def test_real_images_keep_16_bits_and_the_green_channel(real):
    for picnum in REAL_PICNUMS:
        rgb = read_png16(SHARED_OATH / "images" / "cropped_scaled" / f"{picnum}.png")
        assert rgb.dtype == np.uint16 and rgb.shape == (256, 256, 3)
        assert (rgb[..., 0] == 0).all() and (rgb[..., 2] == 0).all()
        assert (rgb[..., 1] % 257 != 0).mean() > 0.1  # 8-bit data scaled to 16 bits would all be multiples of 257
        row = int(picnum) - 1
        assert real.image_path(row).name == f"{picnum}.png"
        image = real.load_image(row)
        assert image.dtype == np.float32 and image.shape == (256, 256)
        np.testing.assert_array_equal(image, rgb[..., 1] / np.float32(65535))


def test_real_images_resize_to_the_requested_size_preserving_brightness(real):
    rows = [int(p) - 1 for p in REAL_PICNUMS[:4]]
    small = real.load_images(rows, image_size=64)
    assert small.shape == (4, 64, 64) and small.dtype == np.float32
    assert 0.0 <= small.min() and small.max() <= 1.0
    full = np.stack([real.load_image(r) for r in rows])
    np.testing.assert_allclose(small.mean(axis=(1, 2)), full.mean(axis=(1, 2)), atol=0.01)


def test_real_release_part_reports_the_images_it_lacks(real):
    report = verify_images(real)
    assert report.checked == 5824 and len(report.missing) == 5824 - len(REAL_PICNUMS)
    with pytest.raises(BadInputError) as caught:
        real.load_images([0, 1, 2, 8, 9])  # rows 2, 8, 9 = 00003, 00009, 00010 are not shipped here
    message = str(caught.value)
    assert "3 of 5 images are missing" in message and "00003.png" in message and "--download" in message


def test_checksums_are_sha256_of_label_and_split_files(real):
    sums = real.checksums()
    for rel in ("classifications/classifications.csv", "classifications/train_test_split.csv"):
        assert sums[rel] == hashlib.sha256((SHARED_OATH / rel).read_bytes()).hexdigest()


def test_subset_keeps_classes_and_renumbers_splits(real):
    small = real.subset(5, seed=1)
    assert len(small) == 30 and np.bincount(small.labels).tolist() == [5] * 6
    for row in small.splits:
        assert sorted(row) == list(range(30))
    first = small.table.iloc[0]
    assert int(first.picNum) - 1 in real.splits[0] and small.image_path(0).name == f"{first.picNum}.png"


# ---------------------------------------------------------------- synthetic releases


def test_synthetic_release_loads_in_both_layouts(synthetic, tmp_path):
    ds = load_oath(synthetic, expected_counts=None)
    assert len(ds) == 60 and ds.image_folder == "cropped_scaled"
    assert np.bincount(ds.labels).tolist() == [8, 11, 15, 9, 6, 11]
    assert verify_images(ds).ok
    images = ds.load_images(np.arange(60), image_size=32, workers=1)
    assert images.shape == (60, 32, 32) and images.max() > 0.1
    rotated = load_oath(write_synthetic_oath(tmp_path / "rot", n=12, seed=3, layout="rotated"), expected_counts=None)
    assert rotated.image_folder == "cropped_scaled_rotated"
    assert rotated.image_path(4).name == f"00005_{rotated.table.rotAng.iloc[4]}.png"
    assert rotated.load_image(4).shape == (256, 256)


def test_process_pool_decodes_the_same_pixels(synthetic):
    ds = load_oath(synthetic, expected_counts=None)
    np.testing.assert_array_equal(ds.load_images(range(40), workers=2), ds.load_images(range(40), workers=1))


def test_truncated_image_is_reported_with_its_path(synthetic, tmp_path):
    root = tmp_path / "oath"
    shutil.copytree(synthetic, root)
    damaged = root / "images" / "cropped_scaled" / "00004.png"
    damaged.write_bytes(damaged.read_bytes()[:5000])
    ds = load_oath(root, expected_counts=None)
    assert verify_images(ds).ok  # the signature is intact: only decoding finds it
    with pytest.raises(BadInputError, match=r"1 of 10 images are unreadable: .*00004\.png: not a readable PNG"):
        ds.load_images(range(10))


def test_release_counts_are_enforced_by_default(synthetic):
    expected = r"class counts do not match the release: arc 8 \(expected 774\).*expected_counts=None"
    with pytest.raises(BadInputError, match=expected):
        load_oath(synthetic)


def test_missing_image_is_named_with_the_fix(synthetic, tmp_path):
    root = tmp_path / "oath"
    shutil.copytree(synthetic, root)
    (root / "images" / "cropped_scaled" / "00007.png").unlink()
    ds = load_oath(root, expected_counts=None)
    assert verify_images(ds).missing == (root / "images" / "cropped_scaled" / "00007.png",)
    with pytest.raises(BadInputError, match=r"1 of 10 images are missing .*00007\.png.*unpack the release"):
        ds.load_images(range(10))
    with pytest.raises(BadInputError, match="00007.png: the OATH image is missing"):
        ds.load_image(6)


# ---------------------------------------------------------------- broken inputs


def test_accepts_the_web_pages_singular_spelling_and_restores_dropped_zeros(tmp_path):
    rows = _rows()
    rows[0] = "0,0,1,arc,5"  # as a spreadsheet would save 00001 and 005
    ds = load_oath(_release(tmp_path, rows, folder="classification"), expected_counts=None)
    assert ds.label_file.name == "classification.csv"
    assert ds.table.picNum.iloc[0] == "00001" and ds.table.rotAng.iloc[0] == "005"


@pytest.mark.parametrize(
    "row, problem",
    [
        ("0,0,00001,diffuse,010", "picType that does not name their class6"),
        ("0,7,00001,arc,010", "class6 outside 0..5"),
        ("1,0,00001,arc,010", "class2 that does not match class6"),
        ("0,zero,00001,arc,010", "non-integer class6"),
    ],
)
def test_inconsistent_classes_are_refused_with_the_line(tmp_path, row, problem):
    rows = _rows()
    rows[0] = row
    with pytest.raises(BadInputError, match=f"{problem}; first at file line 20: '{row}'"):
        load_oath(_release(tmp_path, rows), expected_counts=None)


def test_label_file_without_header_or_without_a_class_is_refused(tmp_path):
    root = _release(tmp_path / "a", _rows())
    label = root / "classifications" / "classifications.csv"
    label.write_text(label.read_text().replace("class2,class6,picNum,picType,rotAng", "a,b,c,d,e"))
    with pytest.raises(BadInputError, match="no header line 'class2,class6,picNum,picType,rotAng'"):
        load_oath(root, expected_counts=None)
    no_moon = [r for r in _rows() if ",moon," not in r]
    with pytest.raises(BadInputError, match="no images of class moon"):
        load_oath(_release(tmp_path / "b", no_moon), expected_counts=None)


def test_missing_label_file_says_how_to_get_the_release(tmp_path):
    with pytest.raises(BadInputError, match=r"no OATH label file.*--download on the command line, -p download=true "
                                            r"for a deployment run"):
        load_oath(tmp_path)


@pytest.mark.parametrize(
    "make_splits, problem",
    [
        (lambda p: p[:4], "has 4 rows, expected 5"),
        (lambda p: np.vstack([p, p[:1]]), "has 6 rows, expected 5"),
        (lambda p: np.where(p == 3, 4, p), "row 0 is not a permutation of 0..11: 1 indices absent"),
        (lambda p: p[:, :11], "row 0 has 11 entries, but the label file has 12 rows"),
        (lambda p: p + 0.5, "non-integer"),
    ],
)
def test_split_file_must_be_five_permutations(tmp_path, make_splits, problem):
    perms = np.stack([np.random.default_rng(k).permutation(12) for k in range(5)]).astype(float)
    with pytest.raises(BadInputError, match=problem):
        load_oath(_release(tmp_path, _rows(), make_splits(perms)), expected_counts=None)


def test_split_rejects_bad_arguments(tmp_path):
    ds = load_oath(_release(tmp_path, _rows()), expected_counts=None)
    assert [len(part) for part in ds.split(4)] == [8, 4]  # round(0.7 * 12) = 8
    with pytest.raises(BadInputError, match="split 5 does not exist"):
        ds.split(5)
    with pytest.raises(BadInputError, match="not in"):
        ds.split(0, train_fraction=1.0)


# ---------------------------------------------------------------- 16-bit PNG files


def test_png16_round_trip_is_exact(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 65536, size=(7, 5, 3), dtype=np.uint16)
    write_png16(tmp_path / "x.png", rgb)
    np.testing.assert_array_equal(read_png16(tmp_path / "x.png"), rgb)
    np.testing.assert_array_equal(read_png16(tmp_path / "x.png", channel=1), rgb[..., 1])


def test_truncated_or_foreign_png_names_the_file(tmp_path):
    write_png16(tmp_path / "x.png", np.full((64, 64, 3), 1234, dtype=np.uint16))
    data = (tmp_path / "x.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("not a png")
    for name in ("cut.png", "text.png"):
        with pytest.raises(BadInputError, match=f"{name}: not a readable PNG"):
            read_png16(tmp_path / name)
    with pytest.raises(BadInputError, match="uint16 array"):
        write_png16(tmp_path / "y.png", np.zeros((4, 4, 3), dtype=np.uint8))
