"""A store of known labels: frame times and labels written straight into the store's layout.

For tests and benchmarks of what is computed from labels (occurrence statistics, event
catalogues): no CDF files, no encoder. Frames are not written (they stay the store's fill
value), only what ingest and classify record: frame times, the per-hour facts, ``label``
and ``label_probability`` and the ``classifier`` fact.

    >>> write_labelled_store("s.zarr", "gako", ["2012-01-10T06"], lambda hour, t: np.zeros(len(t), np.int8))
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from aurora_pipeline.hours import to_hour
from aurora_pipeline.store import layout, open_store
from aurora_pipeline.store.writer import HourWrite, commit_hours, ensure_labels, set_stage, write_small

CLASSES = ["arc", "diffuse", "discrete", "cloudy", "moon", "clear"]


def write_labelled_store(path, site: str, hours, labels: Callable, *, frames_per_hour: int = 1200,
                         cadence_ms: int = 3000, probabilities: Callable | None = None, classes=CLASSES,
                         image_size: int = 8, batch: int = 500) -> None:
    """Write ``hours`` of ``site`` into the store at ``path`` (created when absent).

    Args:
        hours: hours (ISO strings or datetime64), each holding ``frames_per_hour`` frames
            ``cadence_ms`` apart from the start of the hour.
        labels: ``labels(hour, times) -> (n,) int`` class indices into ``classes`` (-1: unlabelled).
        probabilities: ``probabilities(hour, times, labels) -> (n, k)`` float; default one-hot.
        image_size: the store's recorded frame size (frames themselves are not written).
    """
    st = open_store(path, mode="a")
    st.set_preprocess({"image_size": int(image_size)}, {})
    hours = [to_hour(h) for h in hours]
    k = len(classes)
    for first in range(0, len(hours), batch):
        chunk = hours[first: first + batch]
        writes, rows = [], {}
        for hour in chunk:
            times = np.datetime64(hour, "ms") + np.arange(frames_per_hour) * np.timedelta64(int(cadence_ms), "ms")
            writes.append(HourWrite(hour=hour, times=times, source_file=f"thg_l1_asf_{site}_{hour}.cdf", source_size=1))
            codes = np.asarray(labels(hour, times), np.int8)
            prob = (np.asarray(probabilities(hour, times, codes), np.float32) if probabilities is not None
                    else np.where(codes[:, None] >= 0, np.eye(k, dtype=np.float32)[np.clip(codes, 0, None)], np.nan))
            rows[hour] = (codes, prob.astype(np.float32))
        commit_hours(st, site, writes)
        for year in sorted({layout.hour_position(h)[0] for h in chunk}):
            mine = [h for h in chunk if layout.hour_position(h)[0] == year]
            index = np.array([layout.hour_position(h)[1] for h in mine])
            ensure_labels(st, site, year, list(classes))
            write_small(st, site, year, {
                "label": {int(i): rows[h][0] for i, h in zip(index, mine)},
                "label_probability": {int(i): rows[h][1] for i, h in zip(index, mine)}})
            set_stage(st, site, year, index, "classifier", "clf-synthetic")
