r"""Schedules for the Tsallis index q as a function of the optimiser step.

A schedule is any callable ``step -> q`` with ``step`` the number of optimiser steps already
taken (0 for the first step) and ``q ∈ [0, 1]``. J_Q interpolates between RLVR (q = 0, the
expected reward) and the log marginal likelihood (q = 1); moving q during training moves the
objective along that continuum (the gradient of every member is the RLVR direction amplified
by P^(-q), Eq. 4).

* :class:`Constant` - q everywhere;
* :class:`Linear` - q_start -> q_end over ``steps`` steps, then q_end;
* :class:`Cosine` - the same ends, half-cosine shaped (flat at both ends);
* :class:`Step` - q_before until ``at_step``, q_after from then on; the default (1 -> 0) is the
  SFT-then-RLVR recipe that J_Q is framed against: maximum likelihood first, then RL;
* :class:`Callable` - any user function, whose values are checked each time it is called.

:func:`as_schedule` turns a float or a callable into a schedule and validates it.

>>> s = as_schedule(Linear(1.0, 0.0, steps=4))
>>> [s(t) for t in range(6)]
[1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
>>> as_schedule(0.5)(1000)
0.5
>>> as_schedule(Step(at_step=2))(1), as_schedule(Step(at_step=2))(2)
(1.0, 0.0)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable as _CallableABC
from dataclasses import dataclass

__all__ = ["Callable", "Constant", "Cosine", "Linear", "Schedule", "Step", "as_schedule"]


def _check_q_value(q, *, what: str) -> float:
    """q as a float in [0, 1], or a ValueError/TypeError naming ``what`` produced it."""
    if isinstance(q, bool) or not isinstance(q, numbers.Real):
        # accept 0-d tensors / numpy scalars through float()
        try:
            import numpy as np
            import torch

            if isinstance(q, torch.Tensor) and q.numel() == 1 and q.is_floating_point():
                q = float(q)
            elif isinstance(q, np.ndarray) and q.size == 1:
                q = float(q)
            else:
                raise TypeError
        except TypeError:
            raise TypeError(
                f"{what} must be a real number in [0, 1], got {type(q).__name__} ({q!r})"
            ) from None
    qf = float(q)
    if math.isnan(qf) or not 0.0 <= qf <= 1.0:
        raise ValueError(f"{what} must lie in [0, 1], got {qf!r}")
    return qf


def _check_step(step) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    return int(step)


def _check_positive_int(n, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return int(n)


class Schedule:
    """Base class: ``schedule(step) -> q`` with step >= 0 and q ∈ [0, 1]."""

    def __call__(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class Constant(Schedule):
    """q(t) = q.

    >>> Constant(0.75)(10)
    0.75
    """

    q: float

    def __post_init__(self):
        object.__setattr__(self, "q", _check_q_value(self.q, what="Constant: q"))

    def __call__(self, step: int) -> float:
        _check_step(step)
        return self.q


@dataclass(frozen=True)
class Linear(Schedule):
    """q(t) = q_start + (q_end - q_start)·min(t, steps)/steps.

    Monotone between the ends; q(0) = q_start, q(t) = q_end for t >= steps.

    >>> Linear(0.0, 1.0, steps=2)(1)
    0.5
    """

    q_start: float
    q_end: float
    steps: int

    def __post_init__(self):
        object.__setattr__(self, "q_start", _check_q_value(self.q_start, what="Linear: q_start"))
        object.__setattr__(self, "q_end", _check_q_value(self.q_end, what="Linear: q_end"))
        object.__setattr__(self, "steps", _check_positive_int(self.steps, "Linear: steps"))

    def __call__(self, step: int) -> float:
        frac = min(_check_step(step), self.steps) / self.steps
        q = self.q_start + (self.q_end - self.q_start) * frac
        return min(1.0, max(0.0, q))


@dataclass(frozen=True)
class Cosine(Schedule):
    """q(t) = q_end + (q_start - q_end)·(1 + cos(π·min(t, steps)/steps))/2.

    Monotone between the ends, flat at both; q(0) = q_start, q(t) = q_end for t >= steps.

    >>> Cosine(1.0, 0.0, steps=2)(1)
    0.5
    """

    q_start: float
    q_end: float
    steps: int

    def __post_init__(self):
        object.__setattr__(self, "q_start", _check_q_value(self.q_start, what="Cosine: q_start"))
        object.__setattr__(self, "q_end", _check_q_value(self.q_end, what="Cosine: q_end"))
        object.__setattr__(self, "steps", _check_positive_int(self.steps, "Cosine: steps"))

    def __call__(self, step: int) -> float:
        frac = min(_check_step(step), self.steps) / self.steps
        q = self.q_end + (self.q_start - self.q_end) * 0.5 * (1.0 + math.cos(math.pi * frac))
        return min(1.0, max(0.0, q))


@dataclass(frozen=True)
class Step(Schedule):
    """q(t) = q_before for t < at_step, q_after for t >= at_step.

    The default (q = 1, then q = 0) is SFT-then-RLVR: the log marginal likelihood of the gold
    answer first, then the expected reward.

    >>> [Step(at_step=1)(t) for t in range(3)]
    [1.0, 0.0, 0.0]
    """

    at_step: int
    q_before: float = 1.0
    q_after: float = 0.0

    def __post_init__(self):
        if (
            isinstance(self.at_step, bool)
            or not isinstance(self.at_step, numbers.Integral)
            or self.at_step < 0
        ):
            raise ValueError(f"Step: at_step must be a non-negative integer, got {self.at_step!r}")
        object.__setattr__(self, "q_before", _check_q_value(self.q_before, what="Step: q_before"))
        object.__setattr__(self, "q_after", _check_q_value(self.q_after, what="Step: q_after"))

    def __call__(self, step: int) -> float:
        return self.q_before if _check_step(step) < self.at_step else self.q_after


@dataclass(frozen=True)
class Callable(Schedule):
    """Any user function ``fn(step) -> q``; every value it returns is checked to lie in [0, 1]
    (a ValueError at the step where it does not).

    >>> Callable(lambda t: 1.0 / (1 + t))(3)
    0.25
    """

    fn: _CallableABC

    def __post_init__(self):
        if not callable(self.fn):
            raise TypeError(f"Callable: fn must be callable, got {type(self.fn).__name__}")

    def __call__(self, step: int) -> float:
        step = _check_step(step)
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        return _check_q_value(self.fn(step), what=f"q schedule {name}({step})")


def as_schedule(q) -> Schedule:
    """A :class:`Schedule` from a float q ∈ [0, 1] (constant), a Schedule, or a callable.

    Floats and the built-in schedules are validated here; a plain callable is wrapped in
    :class:`Callable`, so a bad value it returns raises a ValueError when it is used.

    >>> as_schedule(0.25)
    Constant(q=0.25)
    >>> as_schedule(1.5)
    Traceback (most recent call last):
    ...
    ValueError: q must lie in [0, 1], got 1.5
    """
    if isinstance(q, Schedule):
        return q
    if isinstance(q, bool):
        raise TypeError(f"q must be a float in [0, 1] or a schedule, got a bool ({q!r})")
    if isinstance(q, numbers.Real):
        return Constant(_check_q_value(q, what="q"))
    if callable(q):
        return Callable(q)
    raise TypeError(
        f"q must be a float in [0, 1], a tsallis.schedules.Schedule or a callable step -> q, "
        f"got {type(q).__name__}"
    )
