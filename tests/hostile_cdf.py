"""A CDF file that lies about its size, shared by the reader's tests and the command line's."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from aurora_pipeline.synth.archive import write_asi_cdf

NAME = "thg_l1_asf_gako_2011010604_v01.cdf"


def patched_cdf(tmp_path: Path, dims: tuple[int, int] | None = None, last_record: int | None = None) -> Path:
    """A small valid legacy file (4 frames of 64 x 64, gako 2011-01-06T04) whose image variable's
    descriptor is then edited to claim other record dimensions or another record count."""
    times = np.datetime64("2011-01-06T04", "ms") + np.arange(4) * np.timedelta64(3000, "ms")
    path = write_asi_cdf(tmp_path / NAME, "gako", times, np.zeros((4, 64, 64), np.uint16))
    data = bytearray(path.read_bytes())
    name_at = data.find(b"thg_asf_gako".ljust(256, b"\0"))  # the zVDR's Name field
    assert name_at > 0 and struct.unpack(">iii", bytes(data[name_at + 256:name_at + 268])) == (2, 64, 64)
    if dims is not None:
        data[name_at + 260:name_at + 268] = struct.pack(">ii", *dims)
    if last_record is not None:  # MaxRec sits 60 bytes before the name in a CDF 3 zVDR
        data[name_at - 60:name_at - 56] = struct.pack(">i", last_record)
    path.write_bytes(bytes(data))
    return path
