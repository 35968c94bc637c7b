"""Argument checks shared by the public functions: clear errors at the boundary, not NaNs later."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch


def check_q(q, *, name: str = "q"):
    """Validate the Tsallis index q ∈ [0, 1] (a real scalar, a numpy array or a torch tensor).

    Returns q unchanged (a Python float for scalar input).
    """
    if isinstance(q, bool):
        raise TypeError(f"{name} must be a real number in [0, 1], got a bool ({q!r})")
    if isinstance(q, numbers.Real):
        qf = float(q)
        if not (0.0 <= qf <= 1.0) or math.isnan(qf):
            raise ValueError(f"{name} must lie in [0, 1], got {qf!r}")
        return qf
    if isinstance(q, torch.Tensor):
        if not q.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got dtype {q.dtype}")
        if bool(torch.isnan(q).any()) or bool(((q < 0) | (q > 1)).any()):
            raise ValueError(
                f"{name} must lie in [0, 1], got values in "
                f"[{float(q.min())}, {float(q.max())}] (NaN present: {bool(torch.isnan(q).any())})"
            )
        return q
    if isinstance(q, (list, tuple)):
        q = np.asarray(q, dtype=np.float64)
    if isinstance(q, np.ndarray):
        if not np.issubdtype(q.dtype, np.floating) and not np.issubdtype(q.dtype, np.integer):
            raise TypeError(f"{name} must be a real array, got dtype {q.dtype}")
        qa = q.astype(float)
        if np.isnan(qa).any() or ((qa < 0) | (qa > 1)).any():
            raise ValueError(
                f"{name} must lie in [0, 1], got values in [{np.nanmin(qa)}, {np.nanmax(qa)}]"
            )
        return qa
    raise TypeError(
        f"{name} must be a real number, numpy array or torch tensor, got {type(q).__name__}"
    )


def check_unit_interval(x, *, name: str, allow_zero: bool = True, allow_one: bool = True):
    """Raise ValueError unless every entry of x lies in [0, 1] (ends as allowed)."""
    if isinstance(x, torch.Tensor):
        bad_nan = bool(torch.isnan(x).any())
        lo_bad = bool((x < 0).any() if allow_zero else (x <= 0).any())
        hi_bad = bool((x > 1).any() if allow_one else (x >= 1).any())
    else:
        xa = np.asarray(x, dtype=float)
        bad_nan = bool(np.isnan(xa).any())
        lo_bad = bool((xa < 0).any() if allow_zero else (xa <= 0).any())
        hi_bad = bool((xa > 1).any() if allow_one else (xa >= 1).any())
    if bad_nan or lo_bad or hi_bad:
        lo = "[" if allow_zero else "("
        hi = "]" if allow_one else ")"
        raise ValueError(f"{name} must lie in {lo}0, 1{hi} with no NaN, got {_describe(x)}")


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        if x.numel() == 0:
            return "an empty tensor"
        return (
            f"tensor of shape {tuple(x.shape)} with values in [{float(x.min())}, {float(x.max())}]"
        )
    xa = np.asarray(x, dtype=float)
    if xa.ndim == 0:
        return repr(float(xa))
    if xa.size == 0:
        return "an empty array"
    return f"array of shape {xa.shape} with values in [{np.nanmin(xa)}, {np.nanmax(xa)}]"
