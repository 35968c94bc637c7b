"""Helpers for the kernel tests and benchmarks: readable comparisons, the Triton interpreter.

The float64 oracle itself is :func:`kernels.reference.naive_logp_entropy` (and the torch path
on float64 logits for losses and gradients).
"""

from __future__ import annotations

import importlib
import os
import sys

import torch

__all__ = ["assert_close", "enable_triton_interpreter"]


def enable_triton_interpreter():
    """Set ``TRITON_INTERPRET=1`` and return :mod:`kernels.triton` built in interpreter mode.

    Whether ``@triton.jit`` builds an interpreted kernel is decided when a module is imported,
    so a kernel package imported earlier in compiled mode is imported afresh.
    """
    os.environ["TRITON_INTERPRET"] = "1"
    mod = sys.modules.get("kernels.triton")
    if mod is not None and not mod.INTERPRET:
        for name in [n for n in sys.modules if n == "kernels.triton" or
                     n.startswith("kernels.triton.")]:  # fmt: skip
            del sys.modules[name]
    return importlib.import_module("kernels.triton")


def assert_close(actual, expected, *, atol, rtol=0.0, what=""):
    """``|actual - expected| <= atol + rtol |expected|`` elementwise, NaN where and only where
    expected is NaN, equal infinities accepted; on failure the message gives the count of
    mismatches, the largest error and the first few indices with both values."""
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    assert torch.equal(nan_a, nan_e), f"{what}: NaN mismatch at {torch.nonzero(nan_a ^ nan_e)[:5]}"
    both_inf = torch.isinf(a) & torch.isinf(e) & (a == e)
    ok = both_inf | nan_a | ((a - e).abs() <= atol + rtol * e.abs())
    if not bool(ok.all()):
        bad = torch.nonzero(~ok)
        lines = [
            f"  {tuple(i.tolist())}: got {a[tuple(i)].item():.8g}, want {e[tuple(i)].item():.8g}"
            for i in bad[:5]
        ]
        raise AssertionError(
            f"{what}: {bad.shape[0]} of {a.numel()} elements differ (atol={atol}, rtol={rtol}); "
            f"max abs err {(a - e).abs()[~ok].max().item():.3g}\n" + "\n".join(lines)
        )
