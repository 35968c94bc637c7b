"""Argument checks shared by the public functions: clear errors at the boundary, not NaNs later.

A private module with public names: :mod:`tsallis.loss`, :mod:`tsallis.logits_loss` and
:mod:`tsallis.estimators` share these checks (batch layout, modes, reductions, integers), so
that the same bad input gets the same message on every path.
"""

from __future__ import annotations

import math
import numbers
import operator

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


# ----------------------------------------------------------------------------- integers


def check_positive_int(x, *, name: str) -> int:
    """x as a Python int >= 1. Any integer type is accepted (int, numpy/torch integer scalars:
    anything with ``__index__``); a bool or a float is a TypeError, x < 1 a ValueError.

    >>> import numpy as np
    >>> check_positive_int(np.int64(4), name="group_size")
    4
    """
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be a positive integer, got a bool ({x!r})")
    try:
        value = operator.index(x)
    except TypeError:
        raise TypeError(
            f"{name} must be a positive integer, got {x!r} of type {type(x).__name__}"
        ) from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


# ----------------------------------------------------------------------------- batch layout

REDUCTIONS = ("mean", "sum", "none")
MODES = ("likelihood", "verifier")


def check_reduction(reduction) -> str:
    """One of "mean", "sum", "none"."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_group_size(B: int, group_size) -> int:
    """M as an int, checking that the batch holds whole groups: B = G·M sequences."""
    M = check_positive_int(group_size, name="group_size (M)")
    if B % M != 0:
        raise ValueError(
            f"the batch must hold whole groups: B = {B} sequences is not a multiple of "
            f"group_size M = {M} (expected B = G·M)"
        )
    return M


def resolve_mode(mode, rewards, B: int) -> str:
    """Likelihood mode without rewards, verifier mode with [B] rewards; a contradicting ``mode``
    option or a misshapen rewards tensor is an error."""
    if rewards is None:
        if mode not in (None, "likelihood"):
            raise ValueError(f"mode={mode!r} but no rewards were given (likelihood mode)")
        return "likelihood"
    if mode not in (None, "verifier"):
        raise ValueError(f"mode={mode!r} but rewards were given (verifier mode)")
    if not isinstance(rewards, torch.Tensor) or tuple(rewards.shape) != (B,):
        got = tuple(rewards.shape) if isinstance(rewards, torch.Tensor) else type(rewards)
        raise ValueError(f"rewards must be a tensor of shape [B] = [{B}], got {got}")
    return "verifier"


def check_sequence_values(x: torch.Tensor, name: str, *, allow_neg_inf: bool) -> None:
    """Per-sequence sums of token log-probs: finite (or -inf where allowed) and <= 0.

    A sampled span has positive probability, so its log-prob is finite; only the
    teacher-forced gold answer of likelihood mode may have probability 0 (log-weight -inf,
    a valid weight of 0). Rounding a few ulps above 0 is tolerated as in the estimators.
    """
    bad_nan = torch.isnan(x)
    bad_inf = torch.isposinf(x) if allow_neg_inf else torch.isinf(x)
    tol = 1e-6 if x.dtype == torch.float64 else 1e-3
    bad = bad_nan | bad_inf | (x > tol)
    if bool(bad.any()):
        idx = int(torch.nonzero(bad.reshape(-1))[0])
        allowed = "finite or -inf" if allow_neg_inf else "finite"
        raise ValueError(
            f"{name} must be {allowed} and <= 0 (a sum of token log-probs), got "
            f"{float(x.reshape(-1)[idx])} for sequence {idx}"
            + ("" if allow_neg_inf else " (a sampled sequence cannot have probability 0)")
        )


def log_weights(mode: str, logp_y, rewards, group_size: int) -> torch.Tensor:
    """log_w [G, M]: the detached answer log-probs (likelihood mode) or log rewards (verifier)."""
    if mode == "verifier":
        from .estimators import rewards_to_log_w  # estimators imports this module

        return rewards_to_log_w(rewards.detach()).reshape(-1, group_size)
    return logp_y.detach().reshape(-1, group_size)
