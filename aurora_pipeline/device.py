"""Choosing the device and the numeric precision that training and embedding run at.

Also ``prefetched``, which runs the loading of the next batch in a background thread
so the device is not kept waiting.

Mixed precision here means bfloat16 autocast. It is used only where the hardware
does bf16 natively: a CUDA GPU that reports bf16 support, or a CPU with AVX512-BF16
or AMX instructions. Elsewhere bf16 would be emulated, so callers fall back to float32.

The memory format (channels_last or contiguous) is chosen apart from the precision,
per device kind and per kind of work, by ``memory_format_for``: on a CPU,
channels_last in float32 too.

Example:
    >>> device = resolve_device("auto")          # cuda if available, else cpu
    >>> mixed = use_mixed_precision(device, True)
    >>> fmt = memory_format_for(device, mixed, "embed")
    >>> with autocast(device, mixed):
    ...     z = model.to(memory_format=fmt)(x.contiguous(memory_format=fmt))
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import ContextManager, Iterable, Iterator, TypeVar

import torch

from aurora_pipeline.config import check_device_name  # noqa: F401 - re-exported: the stages import it from here
from aurora_pipeline.errors import BadInputError

WORK_KINDS = ("embed", "train")
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
    """Whether to run bf16 autocast: asked for and supported natively."""
    return bool(requested) and supports_bf16(device)


def autocast(device: torch.device, enabled: bool) -> ContextManager:
    """bf16 autocast on ``device`` when ``enabled``, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def memory_format_for(device: torch.device | str, mixed: bool, work: str) -> torch.memory_format:
    """The memory format the encoder runs ``work`` fastest in on ``device``.

    Either format computes the same function; float32 results differ only by
    rounding (relative difference about 5e-7 for ResNet18 embeddings, tested in
    tests/encoder/test_train.py). The choice is a fixed rule per device kind, taken from
    measurements (BENCHMARKS.md, "The CPU path without bf16"):

    * CUDA: channels_last with bf16 (tensor-core convolutions want NHWC), else
      contiguous. float32 on a GPU has not been measured here yet;
      ``benchmarks/gpu_check.py`` times both formats so the rule can be revised.
    * CPU: channels_last whenever oneDNN is available, in float32 too, for
      embedding and for training. oneDNN's NHWC convolution kernels beat the NCHW
      path for ResNet18 at 128 px with and without bf16: the eval forward 1.6x on a
      2-core AVX2 EPYC (issue 13) and faster on the 2-core AVX-512 Xeon of
      BENCHMARKS.md; the SimCLR step 1.08x on the EPYC (64 px) and a median 1.37x on
      the Xeon (128 px, batch 128). It was never slower on average on either.

    A rule and not a timing at first use, because: the same settings must run the
    same kernels in every process, so that a seed gives the same bits and a resumed
    training run matches an uninterrupted one; a timing of a second or two on a
    shared machine swings by 2x and would choose at random; and a rule costs nothing.

    Args:
        device: where the model runs.
        mixed: whether bf16 autocast is on (``use_mixed_precision``).
        work: ``"embed"`` (eval-mode forward) or ``"train"`` (forward and backward).

    Raises:
        BadInputError: ``work`` is not one of ``WORK_KINDS``.
    """
    if work not in WORK_KINDS:
        raise BadInputError("work", f"unknown kind of work {work!r}.", f"use one of {WORK_KINDS}.")
    device = torch.device(device)
    if mixed:
        return torch.channels_last
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        return torch.channels_last
    return torch.contiguous_format


def memory_format(enabled: bool) -> torch.memory_format:
    """channels_last when ``enabled``, else contiguous (the older rule: channels_last
    with mixed precision only). Prefer ``memory_format_for``."""
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
