"""The publisher's preprocessing recipe for the published encoder (issue 20), written out
independently of the library, for the tests that compare our stored frames with it
(tests/ingest/test_oath_framing.py, tests/encoder/test_release_gakona.py)."""

from __future__ import annotations

import numpy as np


def recipe(raw: np.ndarray, size: int) -> np.ndarray:
    """The publisher's recipe, written out independently: float64 numpy percentiles over the whole
    frame, the circle about (128, 128) of radius int(0.85 * 128), uint8 by truncation, PIL's
    bilinear (antialiased) resize of the uint8 image."""
    from PIL import Image

    yy, xx = np.mgrid[0:256, 0:256]
    inside = np.sqrt((xx - 128) ** 2 + (yy - 128) ** 2) <= int(0.85 * 128)
    out = []
    for frame in np.asarray(raw, np.float64):
        a = frame - np.percentile(frame, 1)
        p99 = np.percentile(a, 99)
        a = a / p99 if p99 > 0 else a / max(a.max(), 1e-300)
        a = np.clip(a, 0, 1) * inside
        image = Image.fromarray((a * 255).astype(np.uint8))
        out.append(np.asarray(image.resize((size, size), Image.BILINEAR)))
    return np.stack(out)
