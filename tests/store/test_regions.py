"""An hour's region write stores exactly what Zarr's own write stores: the same chunks, the same bytes.

``write_hour_rows`` leaves Zarr's fill-value comparison to the chunks that may be pure fill
only (regions._write_chunks); these tests hold it to a plain ``array[region] = block``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aurora_pipeline.store import Store
from aurora_pipeline.store.layout import hour_slots
from aurora_pipeline.store.regions import padded, write_hour_rows
from aurora_pipeline.store.writer import ensure_embedding

INDEX = 5 * 24 + 17  # 2011-01-06T17


def _group(path: Path, size: int = 128):
    st = Store.open(path, mode="a")
    st.set_preprocess({"image_size": size}, {})
    return st, st.year_group("gako", 2011, create=True)


def _chunks(path: Path, name: str) -> dict[str, bytes]:
    folder = path / "gako" / "2011" / name / "c"
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _frames(n: int, seed: int) -> np.ndarray:
    frames = np.random.default_rng(seed).integers(0, 256, (n, 128, 128), dtype=np.uint8)
    frames[:, :20] = 0  # dark rows, as outside the field of view
    return frames


def _both(tmp_path: Path, name: str, hours: list[np.ndarray], prepare=None):
    """Write the successive ``hours`` into one slot range of two stores: ours and Zarr's plain write."""
    ours, plain = (_group(tmp_path / f"{kind}.zarr") for kind in ("ours", "plain"))
    for st, group in (ours, plain):
        if prepare:
            prepare(st)
    for rows in hours:
        write_hour_rows(ours[1], INDEX, {name: rows})
        array = plain[1][name]
        array[hour_slots(INDEX)] = padded(array, rows)
        assert _chunks(tmp_path / "ours.zarr", name) == _chunks(tmp_path / "plain.zarr", name)
    return ours[1][name], plain[1][name]


def test_frames_chunks_are_zarrs_own_through_rewrites(tmp_path):
    dark = np.zeros((130, 128, 128), np.uint8)  # pure fill: its chunks are not stored
    dark[129, 5, 5] = 1                          # ...but for the one value in its second chunk
    hours = [_frames(1200, 0), _frames(300, 1), dark, _frames(1536, 2), np.zeros((0, 128, 128), np.uint8)]
    ours, plain = _both(tmp_path, "frames", hours)
    assert _chunks(tmp_path / "ours.zarr", "frames") == {}  # the last write (no frames) left no chunk behind
    np.testing.assert_array_equal(ours[hour_slots(INDEX)], plain[hour_slots(INDEX)])


def test_a_rewrite_with_fewer_frames_removes_the_chunks_it_no_longer_fills(tmp_path):
    _both(tmp_path, "frames", [_frames(1200, 0)])
    assert len(_chunks(tmp_path / "ours.zarr", "frames")) == 10  # 1,200 frames: 10 chunks of 128 slots
    _both(tmp_path / "again", "frames", [_frames(1200, 0), _frames(200, 3)])
    assert len(_chunks(tmp_path / "again" / "ours.zarr", "frames")) == 2


def test_embedding_chunks_with_nan_fill_are_zarrs_own(tmp_path):
    embedding = np.random.default_rng(4).normal(size=(700, 16)).astype(np.float32)
    partly_nan = embedding.copy()
    partly_nan[:256] = np.nan  # a whole chunk of NaN (the fill): not stored
    _both(tmp_path, "embedding", [embedding, partly_nan, np.full((300, 16), np.nan, np.float32)],
          prepare=lambda st: ensure_embedding(st, "gako", 2011, 16))
