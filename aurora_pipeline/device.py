"""Choosing the device and the numeric precision that training and embedding run at.

Also ``prefetched``, which runs the loading of the next batch in a background thread
so the device is not kept waiting.

Mixed precision here means bfloat16 autocast plus channels_last memory format. It is
used only where the hardware does bf16 natively: a CUDA GPU that reports bf16 support,
or a CPU with AVX512-BF16 or AMX instructions. Elsewhere bf16 would be emulated,
so callers fall back to float32.

Example:
    >>> device = resolve_device("auto")          # cuda if available, else cpu
    >>> with autocast(device, supports_bf16(device)):
    ...     z = model(x)
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import ContextManager, Iterable, Iterator, TypeVar

import torch

from aurora_pipeline.errors import BadInputError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
T = TypeVar("T")


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a device setting into a ``torch.device``.

    Args:
        name: ``"auto"`` (the GPU when one is visible, else the CPU), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"``.

    Raises:
        BadInputError: unknown name, or ``"cuda"`` asked for on a machine without a
            usable CUDA GPU.
    """
    check_device_name(name)
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():  # text is cuda or cuda:N
        raise BadInputError(
            "device",
            f"{name!r} was asked for but this torch ({torch.__version__}) sees no CUDA GPU.",
            "use device='auto' or 'cpu', or run on a machine with a GPU and a CUDA build of torch.",
        )
    device = torch.device(text)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise BadInputError(
            "device",
            f"{name!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s).",
            "use 'cuda' or a smaller index.",
        )
    return device


def check_device_name(name: str) -> None:
    """Raise ``BadInputError`` unless ``name`` is auto, cpu, cuda or cuda:N (whatever this machine has)."""
    text = str(name).strip().lower()
    base, _, index = text.partition(":")
    if base not in DEVICE_CHOICES or (index and (base != "cuda" or not index.isdigit())):
        raise BadInputError("device", f"unknown device {name!r}.", f"use one of {', '.join(DEVICE_CHOICES)} (or cuda:N).")


def supports_bf16(device: torch.device | str) -> bool:
    """True when ``device`` runs bfloat16 matrix maths natively (so autocast pays off)."""
    device = torch.device(device)
    if device.type == "cuda":
        # including_emulation=False: pre-Ampere GPUs can run bf16 only emulated, slower than float32
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        # Native bf16 dot products: AVX512-BF16 or AMX. oneDNN's own check
        # (torch.ops.mkldnn._is_mkldnn_bf16_supported) also says yes on plain AVX512,
        # where bf16 is emulated and a speed-up is not assured, so it is not used here.
        try:
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        except AttributeError:  # older torch: fall back to the dispatch capability name
            capability = torch.backends.cpu.get_cpu_capability().upper()
            return "BF16" in capability or "AMX" in capability
    return False


def use_mixed_precision(device: torch.device, requested: bool) -> bool:
    """Whether to run bf16 autocast + channels_last: asked for and supported."""
    return bool(requested) and supports_bf16(device)


def autocast(device: torch.device, enabled: bool) -> ContextManager:
    """bf16 autocast on ``device`` when ``enabled``, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def memory_format(enabled: bool) -> torch.memory_format:
    """channels_last with mixed precision (faster bf16 convolutions), else contiguous."""
    return torch.channels_last if enabled else torch.contiguous_format


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``items`` in a background thread, ``depth`` items ahead of the consumer.

    Loading the next batch (reading Zarr chunks, fancy-indexing numpy, pinning memory)
    then overlaps the model's compute on the current one; both mostly run outside the
    GIL. Items come out in order; an exception raised while producing an item is
    re-raised here. Closing the iterator early (``break``, an exception in the loop)
    stops the thread after the item it is producing.

    Args:
        items: any iterable; it is consumed only by the background thread.
        depth: how many produced items may wait (>= 1).
    """
    if depth < 1:
        raise BadInputError("prefetch depth", f"must be >= 1, got {depth}.", "use 2.")
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            outcome = (done, None)
        except BaseException as err:  # handed to the consumer, which re-raises it
            outcome = (done, err)
        while not stop.is_set():
            try:
                slots.put(outcome, timeout=0.1)
                return
            except queue.Full:
                continue

    worker = threading.Thread(target=produce, name="aurora-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, err = slots.get()
            if item is done:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        worker.join()
