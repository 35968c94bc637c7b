r"""The Tsallis q-logarithm family (Section 2 of the paper).

Every function accepts a Python float, a numpy array or a torch tensor and returns the same kind.
``q`` lies in [0, 1]; the q = 1 members are the ordinary log / exp, reached continuously: the
formulas are written with ``expm1`` / ``log1p`` so that nothing cancels as q -> 1 or as u -> 0.
Torch inputs stay differentiable (``u ** (1 - q)`` is never formed by subtraction).
"""

from __future__ import annotations

import numpy as np
import torch

from ._validate import check_q

__all__ = ["log_q", "exp_q", "loss_q", "amplification"]


def _is_torch(x) -> bool:
    return isinstance(x, torch.Tensor)


def _as_array(x):
    """Python scalars and array-likes -> float64 numpy; tensors untouched."""
    if _is_torch(x):
        if not x.is_floating_point():
            raise TypeError(f"expected a floating tensor, got dtype {x.dtype}")
        return x
    if isinstance(x, bool):
        raise TypeError("expected a real number, got a bool")
    return np.asarray(x, dtype=np.float64)


def _q_like(q, x):
    """q as something that broadcasts against x (a tensor for tensor x)."""
    if _is_torch(x):
        return torch.as_tensor(q, dtype=x.dtype, device=x.device)
    return np.asarray(q, dtype=np.float64)


def _return(out, was_scalar: bool):
    if was_scalar and not _is_torch(out):
        return float(out)
    return out


def _expm1_over(a, t):
    """expm1(a·t)/a, continuous at a = 0 (where it equals t); elementwise, a and t broadcast."""
    if _is_torch(t) or _is_torch(a):
        a = torch.as_tensor(a, dtype=t.dtype, device=t.device)
        zero = a == 0
        a_safe = torch.where(zero, torch.ones_like(a), a)
        # The a = 0 branch must not poison gradients of the other: both branches are finite.
        return torch.where(zero, t * torch.ones_like(a), torch.expm1(a_safe * t) / a_safe)
    a = np.asarray(a, dtype=np.float64)
    zero = a == 0
    a_safe = np.where(zero, 1.0, a)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(zero, t * np.ones_like(a), np.expm1(a_safe * t) / a_safe)


def log_q(u, q):
    r"""Tsallis q-logarithm, Section 2 of the paper:  log_q(u) = (u^(1-q) - 1)/(1-q),  log_1 = log.

    Computed as ``expm1((1-q)·log u)/(1-q)``. u ∈ [0, ∞), q ∈ [0, 1]; log_q(0) = -1/(1-q) for
    q < 1 and -inf at q = 1. Its derivative is u^(-q).

    >>> log_q(0.25, 0.0), log_q(0.25, 0.5), round(log_q(0.25, 1.0), 6)
    (-0.75, -1.0, -1.386294)
    """
    q = check_q(q)
    was_scalar = not _is_torch(u) and np.ndim(u) == 0
    u = _as_array(u)
    if (u < 0).any() if _is_torch(u) else np.any(u < 0):
        raise ValueError("log_q expects u >= 0, got a negative value")
    if _is_torch(u):
        log_u = torch.log(u)
    else:
        with np.errstate(divide="ignore"):
            log_u = np.log(u)
    a = 1 - _q_like(q, u)
    return _return(_expm1_over(a, log_u), was_scalar)


def exp_q(x, q):
    r"""Tsallis q-exponential, the inverse of :func:`log_q`, Section 2 of the paper:

        exp_q(x) = [1 + (1-q)·x]_+^(1/(1-q)),   exp_1 = exp.

    Computed as ``exp(log1p((1-q)·x)/(1-q))`` (0 where 1 + (1-q)x <= 0), so continuous at q = 1.

    >>> exp_q(-0.75, 0.0), exp_q(-1.0, 0.5), round(exp_q(-1.3862943611198906, 1.0), 12)
    (0.25, 0.25, 0.25)
    """
    q = check_q(q)
    was_scalar = not _is_torch(x) and np.ndim(x) == 0
    x = _as_array(x)
    a = _q_like(q, x)
    a = 1 - a
    if _is_torch(x):
        base = a * x
        inside = base > -1
        base_safe = torch.where(inside, base, torch.zeros_like(base))
        zero = a == 0
        a_safe = torch.where(zero, torch.ones_like(a), a)
        expo = torch.where(zero, x * torch.ones_like(a), torch.log1p(base_safe) / a_safe)
        out = torch.where(inside | zero, torch.exp(expo), torch.zeros_like(expo))
    else:
        base = a * x
        inside = base > -1
        base_safe = np.where(inside, base, 0.0)
        zero = a == 0
        a_safe = np.where(zero, 1.0, a)
        with np.errstate(over="ignore"):
            expo = np.where(zero, x * np.ones_like(a), np.log1p(base_safe) / a_safe)
            out = np.where(inside | zero, np.exp(expo), 0.0)
    return _return(out, was_scalar)


def loss_q(P, q):
    r"""Per-example J_Q loss ℓ_q = -log_q(P) = (1 - P^(1-q))/(1-q) (Section 2).

    q = 0: 1 - P (RLVR); q = 1: -log P (log marginal likelihood). P ∈ [0, 1].

    >>> loss_q(0.25, 0.0), loss_q(0.25, 0.5)
    (0.75, 1.0)
    """
    q = check_q(q)
    _check_prob(P)
    out = log_q(P, q)
    return -out


def amplification(P, q):
    r"""Per-example amplification P^(-q) of the RL gradient (Prop. 4.1): ∇ℓ_q = P^(-q)·∇ℓ_0.

    Computed as exp(-q·log P); at q = 0 it is 1 for every P (0^0 = 1), at P = 0 and q > 0 it is
    +inf.

    >>> amplification(0.25, 0.5), amplification(0.0, 0.0)
    (2.0, 1.0)
    """
    q = check_q(q)
    _check_prob(P)
    was_scalar = not _is_torch(P) and np.ndim(P) == 0
    P = _as_array(P)
    qq = _q_like(q, P)
    if _is_torch(P):
        out = torch.pow(P, -qq)
    else:
        with np.errstate(divide="ignore"):
            out = np.power(P, -qq)
    return _return(out, was_scalar)


def _check_prob(P):
    if _is_torch(P):
        if not P.is_floating_point():
            raise TypeError(f"P must be a floating tensor, got dtype {P.dtype}")
        bad = bool(torch.isnan(P).any() | (P < 0).any() | (P > 1).any())
    else:
        if isinstance(P, bool):
            raise TypeError("P must be a probability, got a bool")
        Pa = np.asarray(P, dtype=np.float64)
        bad = bool(np.isnan(Pa).any() or (Pa < 0).any() or (Pa > 1).any())
    if bad:
        raise ValueError("P must be a probability in [0, 1] with no NaN")
