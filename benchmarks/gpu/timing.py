"""How a case is timed: the median of ``triton.testing.do_bench`` (L2 flushed between calls)
and the peak memory allocated beyond the inputs while it runs; GB/s against the byte floor of
what it computes (the byte floor of docs/gpu-benchmark.md).

A handler returns a :class:`TimingSpec`; :func:`measure` turns it into the ``timing`` record of
the case. Under ``--smoke`` (CPU) one wall-clock call stands in for the timing and the record
says it is not a measurement.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class TimingSpec:
    """What to time: ``fn`` (no arguments), the bytes it must move at least (``floor``), the
    bytes of the logits it works on (the unit of its extra memory), the bytes of its outputs
    that the peak should not count (``held``: one gradient buffer; None: whatever tensors
    ``fn`` returns, measured), ``restore`` (called before
    each timing: in-place cases rewrite their input), ``read`` (the forward's floor, for
    forward+backward rows: their two-pass floor is ``floor + read``)."""

    fn: Callable
    floor: int
    logits_bytes: int
    held: int | None = 0
    restore: Callable | None = None
    floor_per_elem: int | None = None
    read: int | None = None
    flops: float | None = None


def time_ms(fn, cuda: bool) -> float:
    """Median ms of ``fn`` (GPU: ``triton.testing.do_bench``; CPU: one wall-clock call)."""
    if cuda:
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def tensor_bytes(out) -> int:
    """Bytes of the tensors in ``out`` (a tensor or a tuple / list of them)."""
    items = out if isinstance(out, (tuple, list)) else (out,)
    return sum(t.numel() * t.element_size() for t in items if hasattr(t, "element_size"))


def peak_extra(fn, held_bytes, cuda: bool):
    """``(bytes allocated beyond the inputs at peak while fn runs and its outputs are held,
    minus held_bytes, held_bytes)``; ``held_bytes`` None: the bytes of the tensors ``fn``
    returns. None off CUDA (no allocator statistics)."""
    if not cuda:
        return None
    import torch

    gc.collect()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    held = tensor_bytes(out) if held_bytes is None else int(held_bytes)
    del out
    return int(peak) - held, held


def measure(spec: TimingSpec, cuda: bool) -> dict:
    """The ``timing`` record of one case."""
    if spec.restore:
        spec.restore()
    ms = time_ms(spec.fn, cuda)
    t = {"ms": ms, "floor_bytes": spec.floor, "GBps_vs_floor": spec.floor / ms / 1e6,
         "logits_bytes": spec.logits_bytes, "floor_bytes_per_element": spec.floor_per_elem}
    if spec.read:  # forward+backward: also against the two-pass floor (6 B/element)
        t["GBps_vs_two_pass_floor"] = (spec.floor + spec.read) / ms / 1e6
    if spec.flops:
        t["TFLOPs"] = spec.flops / ms / 1e9
    if spec.restore:
        spec.restore()
    pk = peak_extra(spec.fn, spec.held, cuda)
    if pk is not None:
        t["peak_extra_bytes"], t["held_bytes"] = pk
        t["peak_extra_frac_of_logits"] = pk[0] / spec.logits_bytes
    if not cuda:
        t["note"] = "smoke: one wall-clock call on CPU, not a measurement"
    return t
