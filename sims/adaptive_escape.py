r"""Adam on the exact J_Q gradient with q chosen per step: the adaptive q of
:func:`sims.table1_engine.adaptive_q` in the regime it is built for.

The Table-1 task starts at p0 ≈ 1e-4, where every q clears Adam's ε (docs/experiments/table1.md),
so the adaptive rule is never tested there against a stall.  The stall regime is p0 ≲ 1e-20 at
ε = 1e-8 (docs/experiments/adam_threshold.md: the threshold q* = 1 - log(ε/s)/log p0).  This
module runs the rule there on the models of the escape experiments (:mod:`sims.models`, one
term, exact gradient), with the update of
:func:`sims.experiments.adam_threshold.adam_exact_escape` and one change: q is recomputed at
every step from the current P and the score scale s measured at the previous step, exactly as
:func:`sims.table1_engine.train_run` does (s = the step's largest gradient component divided by
the amplification P^(1-q) it carried).

Without ``s_init`` the rule's first step runs at q = 1 (``adaptive_q`` returns 1 while s is
unknown) and measures s from it, as an earlier version of the engine did.  ``s_init`` gives s
before any optimiser step (e.g. :func:`sims.experiments.adam_threshold.score_scale` of θ0, one
gradient evaluation: what the engine's :func:`sims.table1_engine.score_probe` does), which
isolates what the q = 1 first step costs: it writes g0 ≈ s ≫ ε into Adam's second moment v,
and while v̂ remembers it every later step of size ≈ ε·10^margin is divided by
√v̂ ≈ s·√(0.001·β2^t) instead of by itself.  :func:`held_rule` is the engine's rule (the
first q held until the escape); :func:`adaptive_rule` the per-step rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .training import adam_update, run_to_escape

__all__ = ["QEscape", "adam_q_rule_escape", "adaptive_rule", "fixed_rule", "held_rule"]


@dataclass(frozen=True)
class QEscape:
    """One run: ``step`` (the first step after which P ≥ δ, None when the budget ran out) and
    ``q`` [steps run] (the q of every step)."""

    step: int | None
    q: np.ndarray


def fixed_rule(q: float) -> Callable[[float, float], float]:
    """The rule of a fixed q (ignores P and s)."""
    q = float(q)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must lie in [0, 1], got {q}")
    return lambda log_p, s: q


def adaptive_rule(adam_eps: float, margin: float) -> Callable[[float, float], float]:
    """:func:`sims.table1_engine.adaptive_q` as a rule (log P, s) -> q."""
    from .table1_engine import adaptive_q

    return lambda log_p, s: adaptive_q(log_p, s, adam_eps=adam_eps, margin=margin)


def held_rule(adam_eps: float, margin: float, delta: float = 0.5):
    """:class:`sims.table1_engine.HeldAdaptiveQ` (the rule's first q with a measured s, held
    until P reaches ``delta``): a fresh, stateful rule per run."""
    from .table1_engine import HeldAdaptiveQ

    return HeldAdaptiveQ(adam_eps=adam_eps, margin=margin, delta=delta)


def adam_q_rule_escape(model, theta0, rule: Callable[[float, float], float], *, lr: float,
                       eps: float, max_steps: int, betas: tuple[float, float] = (0.9, 0.999),
                       delta: float = 0.5, s_init: float = math.nan) -> QEscape:  # fmt: skip
    r"""Adam (bias-corrected, the update of ``adam_exact_escape``) on -∇ℓ_q = P^(-q)∇P
    (Prop. 4.1) of a one-term model, q_t = ``rule(log P_t, s_{t-1})`` at every step; the
Adam step is :func:`sims.training.adam_update` and the loop :func:`sims.training.run_to_escape`
(one row: q, and so the gradient, depends on the run's own history).

    s_t = max|g_t| / P_t^(1-q_t) (the score scale ‖∇log P‖_∞ recovered from the step's
    gradient, :func:`sims.table1_engine.train_run`'s measurement); s_0 = ``s_init`` (NaN: not
    measured, so the adaptive rule's first step runs at q = 1).
    Returns :class:`QEscape`.
    """
    theta = np.array(theta0, dtype=np.float64, copy=True)
    if theta.shape != (model.dim,):
        raise ValueError(f"theta0 must have shape ({model.dim},), got {theta.shape}")
    if not (lr > 0 and eps > 0):
        raise ValueError(f"lr and eps must be positive, got lr={lr!r}, eps={eps!r}")
    if not (isinstance(max_steps, (int, np.integer)) and max_steps >= 1):
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
    b1, b2 = (float(b) for b in betas)
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
    weights, _, _ = model.terms(theta)
    if weights.shape != (1,):
        raise ValueError(f"adam_q_rule_escape needs a one-term model, {model.label()} has "
                         f"{weights.size}")  # fmt: skip
    qs = np.zeros(int(max_steps))
    state = {"s": float(s_init)}  # the score scale measured by the previous step

    def monitor(rows, t, active):
        return np.asarray(model.monitor(rows["theta"][0]), dtype=np.float64).reshape(1)

    def step(rows, t, active):  # from t to t + 1 steps
        w, P, dP = model.terms(rows["theta"][0])
        log_p = math.log(float(P[0]))
        q = float(rule(log_p, state["s"]))
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"the rule returned q = {q!r} at step {t + 1}, outside [0, 1]")
        g = w[0] * math.exp(-q * log_p) * dP[0]
        m, v, update = adam_update(rows["m"][0], rows["v"][0], g, t + 1, lr, eps, (b1, b2))
        gmax = float(np.max(np.abs(g)))
        state["s"] = gmax / math.exp((1.0 - q) * min(log_p, 0.0)) if gmax > 0 else math.nan
        qs[t] = q
        return {"theta": (rows["theta"][0] + update)[None], "m": m[None], "v": v[None]}

    rows = {"theta": theta[None], "m": np.zeros_like(theta)[None], "v": np.zeros_like(theta)[None]}
    run = run_to_escape(rows, 1, monitor=monitor, step=step, max_steps=int(max_steps),
                        delta=delta)  # fmt: skip
    if run.censored[0]:
        return QEscape(None, qs)
    t = int(run.steps[0])
    return QEscape(t, qs[:t])
