"""Helpers shared by the benchmark scripts: a cached synthetic archive and a memory sampler."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import psutil

CACHE = Path(os.environ.get("AURORA_BENCH_DIR", Path(__file__).resolve().parents[1] / "bench_out"))


def command_line() -> str:
    return "command: " + " ".join([Path(sys.executable).name] + sys.argv)


def synthetic_archive(name: str, sites, start: str, hours: int, frames_per_hour: int, layout: str = "legacy") -> Path:
    """A synthetic archive under bench_out/, written once and reused by later runs."""
    from aurora_pipeline.synth.archive import write_synthetic_archive

    root = CACHE / name
    done = root / ".complete"
    if not done.exists():
        write_synthetic_archive(root, sites=sites, start=start, hours=hours, frames_per_hour=frames_per_hour, layout=layout)
        done.write_text("ok")
    return root


class PeakMemory:
    """Peak resident memory of this process and all of its children (bytes), sampled every 20 ms."""

    def __init__(self):
        self.peak = 0
        self.peak_by_process: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me] + me.children(recursive=True):
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                key = "this process" if p.pid == me.pid else f"child {p.pid}"
                self.peak_by_process[key] = max(self.peak_by_process.get(key, 0), rss)
            self.peak = max(self.peak, total)
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
