r"""Exact dynamics: gradient flow (ODE) and gradient descent on the exact gradient.

Both follow the negative gradient of J = Σ_j weights_j·ℓ_q(P_j) (Section 2), which by Prop. 4.1
is ``-∇J = Σ_j weights_j · P_j^(-q) · ∇P_j``; the amplification P^(-q) comes from
:func:`tsallis.amplification`, the gradients ∇P_j from the model (:mod:`sims.models`).

Escape time = first time the model's monitor reaches δ (δ = 1/2 unless set).  A run that does
not reach it within the budget is *censored*: it is returned with ``censored=True`` and time
equal to the budget (a lower bound), never dropped.  :func:`gd_escape` steps its rows in the
simulators' shared freeze-on-escape loop, :func:`sims.training.run_to_escape`: an escaped row is
removed from the batch, the others go on until they escape or the budget is spent.

>>> from sims.models import Sigmoid
>>> r = flow_escape(Sigmoid(), 1e-2, q=0.5)
>>> round(r.time, 2), r.censored
(20.83, False)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp

import tsallis

from . import _fast
from .training import run_to_escape

__all__ = [
    "exact_ascent",
    "flow_escape",
    "flow_curve",
    "flow_to_equilibrium",
    "gd_escape",
    "EscapeResult",
]


def _check_q(q) -> float:
    q = float(q)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must lie in [0, 1], got {q}")
    return q


def exact_ascent(model, theta, q: float) -> np.ndarray:
    """-∇_θ J_q(θ) = Σ_j weights_j · P_j^(-q) ∇P_j  (Prop. 4.1), shape of ``theta``."""
    weights, P, dP = model.terms(theta)
    amp = tsallis.amplification(P, q)  # P^(-q), [..., J]
    return np.einsum("j,...j,...jd->...d", weights, amp, dP)


def _ascent(model, theta, q: float) -> np.ndarray:
    """:func:`exact_ascent` without input checks, for the integrators' and GD's inner loops.

    Same operations in the same order (bit-identical); ``q`` must already be a checked float and
    the model's P lies in [0, 1] by construction.  Run it inside ``np.errstate(divide="ignore")``
    (P^(-q) = inf at P = 0 for q > 0, as :func:`tsallis.amplification` returns it).
    """
    weights, P, dP = model.terms(theta)
    return np.einsum("j,...j,...jd->...d", weights, _fast.amplification(P, q), dP)


@dataclass(frozen=True)
class EscapeResult:
    """time: escape time (or the budget if censored); theta: parameters at the end."""

    time: float
    censored: bool
    theta: np.ndarray
    n_evals: int = 0


def flow_escape(
    model, p0, q, delta=0.5, t_max=None, theta0=None, rtol=1e-10, atol=1e-12, method="DOP853"
):
    """Exact gradient-flow escape time: solve θ' = -∇J_q(θ) until monitor(θ) = δ.

    ``t_max`` defaults to 100× the sigmoid-type scale 1/p0 (q=0) — generous for every model here.
    Integration uses scipy's DOP853 (or ``method``) with a terminal event at monitor = δ
    """
    q = _check_q(q)
    if theta0 is None:
        theta0 = model.init(p0) if p0 is not None else model.init()
    theta0 = np.asarray(theta0, dtype=np.float64)
    start = float(model.monitor(theta0))
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    if start >= delta:
        return EscapeResult(0.0, False, theta0)
    if t_max is None:
        t_max = 100.0 / start + 100.0
    if t_max <= 0:
        raise ValueError(f"t_max must be positive, got {t_max}")

    def rhs(_t, th):
        return _ascent(model, th, q)

    def hit(_t, th):
        return float(model.monitor(th)) - delta

    hit.terminal = True
    hit.direction = 1.0
    with np.errstate(divide="ignore"):  # P^(-q) = inf at P = 0, as tsallis.amplification
        sol = solve_ivp(
            rhs, (0.0, float(t_max)), theta0, method=method, rtol=rtol, atol=atol, events=hit
        )
    if not sol.success:
        raise RuntimeError(f"flow integration failed: {sol.message}")
    if sol.t_events[0].size:
        return EscapeResult(float(sol.t_events[0][0]), False, sol.y_events[0][0], sol.nfev)
    return EscapeResult(float(t_max), True, sol.y[:, -1], sol.nfev)


def flow_curve(
    model, p0, q, times, theta0=None, rtol=1e-10, atol=1e-12, method="DOP853"
) -> np.ndarray:
    """Monitor P(t) along the exact flow at the given increasing ``times`` (training curves).

    ``method``: a scipy ``solve_ivp`` method; use ``"LSODA"`` for long runs that sit at a fixed
    point (explicit Runge-Kutta error control then chases rounding noise with tiny steps).
    """
    q = _check_q(q)
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or times.size == 0 or np.any(np.diff(times) <= 0) or times[0] < 0:
        raise ValueError("times must be a non-empty increasing 1-d array of non-negative values")
    if theta0 is None:
        theta0 = model.init(p0)
    with np.errstate(divide="ignore"):  # P^(-q) = inf at P = 0, as tsallis.amplification
        sol = solve_ivp(
            lambda _t, th: _ascent(model, th, q),
            (0.0, float(times[-1])),
            np.asarray(theta0, dtype=np.float64),
            method=method,
            rtol=rtol,
            atol=atol,
            t_eval=times,
        )
    if not sol.success:
        raise RuntimeError(f"flow integration failed: {sol.message}")
    return np.asarray(model.monitor(sol.y.T), dtype=np.float64)


def flow_to_equilibrium(model, theta0, q, *, rtol_change=1e-10, t_max=1e12, method="LSODA"):
    """Integrate the exact flow decade by decade, t = 1, 10, 100, ..., until the monitor changes
    by less than ``rtol_change`` (relative) over a decade.

    Returns (times, monitor values, converged).

    Stopping at convergence matters: sitting at a fixed point for a long horizon makes every
    adaptive integrator chase rounding noise with tiny steps.
    """
    q = _check_q(q)
    theta = np.asarray(theta0, dtype=np.float64)
    times, values = [0.0], [float(model.monitor(theta))]
    t = 0.0
    converged = False
    while t < t_max:
        t_next = max(1.0, 10.0 * t)
        with np.errstate(divide="ignore"):  # P^(-q) = inf at P = 0, as tsallis.amplification
            sol = solve_ivp(
                lambda _t, th: _ascent(model, th, q),
                (t, t_next),
                theta,
                method=method,
                rtol=1e-10,
                atol=1e-12,
            )
        if not sol.success:
            raise RuntimeError(f"flow integration failed: {sol.message}")
        theta, t = sol.y[:, -1], t_next
        times.append(t)
        values.append(float(model.monitor(theta)))
        if abs(values[-1] - values[-2]) <= rtol_change * abs(values[-1]) and t >= 10.0:
            converged = True
            break
    return np.array(times), np.array(values), converged


def gd_escape(model, theta0, q, eta, max_steps, delta=0.5):
    """Gradient descent θ ← θ + η·(-∇J_q) on the exact gradient, many runs at once.

    Args:
        model: a model from :mod:`sims.models`.
        theta0: ``[R, D]`` starting parameters, one row per run.
        q: float in [0, 1] (the same for all rows).
        eta: float or ``[R]`` step sizes.
        max_steps: the budget; rows that have not escaped are censored at ``max_steps``.
    Returns:
        (steps [R] int64, censored [R] bool): the first step count after which monitor >= δ.
        Time in flow units is ``steps·η`` (T/η steps as η -> 0).
    """
    q = _check_q(q)
    theta = np.array(theta0, dtype=np.float64, copy=True)
    if theta.ndim != 2:
        raise ValueError(f"theta0 must be [R, D], got shape {theta.shape}")
    R = theta.shape[0]
    eta = np.broadcast_to(np.asarray(eta, dtype=np.float64), (R,)).copy()
    if np.any(eta <= 0):
        raise ValueError("eta must be positive")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    # A model with ``_monitor_of_P`` reads the monitor off the P its ``terms`` already computed,
    # so each step evaluates the model once: terms(θ_{t+1}) serve both the escape check after
    # step t and the gradient of step t+1 (the same numbers as calling monitor and terms apart).
    fused = getattr(model, "_monitor_of_P", None) is not None
    monitor, step = _gd_fused(model, q) if fused else _gd_plain(model, q)
    rows = {"th": theta, "et": eta[:, None]}
    with np.errstate(divide="ignore"):
        run = run_to_escape(
            rows, R, monitor=monitor, step=step, max_steps=int(max_steps), delta=delta
        )
    return run.steps, run.censored


def _gd_plain(model, q):
    """GD's monitor and step for :func:`sims.training.run_to_escape`, rows ``{th, et}``."""

    def monitor(rows, t, active):
        return np.asarray(model.monitor(rows["th"]))

    def step(rows, t, active):
        rows["th"] = rows["th"] + rows["et"] * _ascent(model, rows["th"], q)
        return rows

    return monitor, step


def _gd_fused(model, q):
    """As :func:`_gd_plain`, one ``model.terms`` call a step: the rows also carry that call's
    P and ∇P, the monitor after step t is read off P and they give the gradient of step t + 1.
    The start (t = 0) uses ``model.monitor``; the first step computes the terms of the rows
    still active."""
    amp = _fast.amplification
    weights = None

    def monitor(rows, t, active):
        if t == 0:
            return np.asarray(model.monitor(rows["th"]))
        return model._monitor_of_P(rows["P"])

    def step(rows, t, active):
        nonlocal weights
        th = rows["th"]
        if t == 0:
            weights, P, dP = model.terms(th)
        else:
            P, dP = rows["P"], rows["dP"]
        th = th + rows["et"] * np.einsum("j,...j,...jd->...d", weights, amp(P, q), dP)
        weights, rows["P"], rows["dP"] = model.terms(th)
        rows["th"] = th
        return rows

    return monitor, step
