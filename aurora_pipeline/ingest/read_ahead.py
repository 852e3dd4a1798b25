"""Decoding the next block of a file while this one is preprocessed.

Most of a CDF read is inflating its gzip blocks, which libdeflate and zlib do without
Python's global lock, and most of the preprocessing is NumPy work that also releases it:
run in two threads, the two overlap. ``read_ahead`` runs an iterator (the file's blocks)
in a background thread at most ``depth`` items ahead of its consumer, so at most
``depth + 1`` decoded blocks are held at a time.

Example:
    >>> for block in read_ahead(asi.blocks()):
    ...     out.append(preprocess_frames(block, cfg))
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()
_WAIT_S = 0.05  # how often a producer whose consumer has stopped notices it (not a timing the results depend on)


def read_ahead(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """``items`` in order, produced by a background thread up to ``depth`` items ahead.

    An exception raised while producing an item is raised here, at that item. When the
    consumer stops early (an exception, a ``break``), the producer stops after the item
    it is making and the thread is joined before this generator returns.
    """
    buffer: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=_WAIT_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            put((_END, err))

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join()
