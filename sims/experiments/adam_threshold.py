r"""Experiment: does Adam's ε turn the escape-time power law into a threshold in q?

Under gradient flow the cold-start escape time is a smooth power of 1/p0 with exponent 1 - q
(Thm 5.1/5.2).  Adam's step lr·m̂/(√v̂ + ε) is about ±lr per coordinate when the gradient g is
far above ε and about lr·g/ε far below it.  At a cold start the negative gradient of ℓ_q is
P^(-q)∇P = P^(1-q)·∇log P (Prop. 4.1), so its largest coordinate is g0 = p0^(1-q)·s with
s = ‖∇log P(θ0)‖_∞ (:func:`score_scale`).  This package's hypothesis (not the paper's, which
studies gradient flow only): q escapes iff g0 ≳ ε, a threshold at

    q* = 1 - log(ε/s)/log p0                         (:func:`predicted_q_star`).

A refinement derived here (:func:`budget_q_star`, the one-phase rule): below the threshold Adam
is SGD with step lr/ε, which still escapes, after about ε/(lr·(1-q)·g0) steps (the blow-up time
of θ' = (lr/ε)·s·e^((1-q)θ)); a run with a budget of B steps escapes iff g0 ≳ ε/(lr·B·(1-q)).
That ignores the phase after g reaches ε, where Adam moves ≈ lr per step and needs about
log(1/p0)/lr steps, so it holds only when log(1/p0)/lr ≪ B.  :func:`two_phase_steps` adds
that phase (T = T_eps + T_lr, exact for Adam without moment lag) and :func:`two_phase_q_star`
is its threshold, None when even q = 1 cannot escape within B.

Three parts, all with Adam at lr = 0.01 (except the quick preset's sampled part), escape = the
first step with P ≥ 1/2:

* ``exact`` — the sigmoid model P = σ(θ) (Eq. 15) trained by Adam, β = (0.9, 0.999), on the
  exact gradient of ℓ_q(σ(θ)) (:func:`adam_exact_escape`, deterministic, one run per
  setting); s = 1 - p0.
* ``exact_short_memory`` — the same with β = (0.9, 0.95) (:data:`SHORT_BETAS`): a v̂ memory
  of ~20 steps tracks a growing gradient, the lag-free limit of :func:`two_phase_steps`.
* ``sampled`` — the categorical latent model (K = 4 rationales, every w(z) = p0, answer logits
  trainable) trained by :func:`sims.sampled.train_sampled`, β = (0.9, 0.999), with GARL-RLOO
  (Eq. 12) in likelihood mode, M = 8, no 1/M^q normalisation; s = (1 - p0)/K (the answer
  logits; the prior logits have zero gradient at the symmetric start).

The two deterministic parts are also read at the smaller budget :data:`SHORT_BUDGET` (their q*
records with ``truncated_from`` set): a deterministic run escapes within a smaller budget iff
its escape step is at most that budget, so no rerun is needed.

Measured q* (:func:`measured_q_star`): the smallest grid q whose median escape step over seeds is
uncensored (more than half the runs reached P ≥ 1/2 within the budget); the threshold then lies
in (q_below, q*], q_below the next grid value down.  Censored runs are kept at the budget.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.integrate import quad

from ..analysis import escape_summary
from ..training import adam_update, run_to_escape
from . import Experiment
from ._common import fmt_p, model_of, run_sampled

__all__ = [
    "predicted_q_star",
    "budget_q_star",
    "two_phase_steps",
    "two_phase_q_star",
    "score_scale",
    "adam_exact_escape",
    "measured_q_star",
    "EXPERIMENT",
]

NAME = "adam_threshold"
VERSION = 2  # 2: seeds keyed by (experiment, setting id, seed), not by the cache hash
LR = 0.01
BETAS = (0.9, 0.999)
LATENT_K = 4
M_SAMPLED = 8
Q_FINE = (0.0, 0.25, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.0)
EPS_GRID = (1e-6, 1e-8, 1e-10)
SHORT_BETAS = (0.9, 0.95)  # a v̂ memory of ~20 steps: the moment-lag-free limit of two_phase_steps
# the deterministic parts are re-read at this smaller budget (lr·budget = 20) by truncation
SHORT_BUDGET = 2000


def _check_open01(x, name: str) -> float:
    x = float(x)
    if not 0.0 < x < 1.0:
        raise ValueError(f"{name} must lie in (0, 1), got {x}")
    return x


def _check_pos(x, name: str) -> float:
    x = float(x)
    if not (math.isfinite(x) and x > 0.0):
        raise ValueError(f"{name} must be a positive finite number, got {x}")
    return x


def predicted_q_star(p0: float, eps: float, s: float) -> float:
    r"""The Adam-ε threshold of this package's hypothesis (not a result of the paper):

        q* = 1 - log(ε/s) / log(p0).

    Derivation: at a cold start the largest coordinate of -∇ℓ_q = P^(1-q)∇log P (Prop. 4.1) is
    g0 = p0^(1-q)·s with s = ‖∇log P(θ0)‖_∞; Adam's step lr·m̂/(√v̂ + ε) is ≈ ±lr when g0 ≫ ε
    and ≈ lr·g0/ε (stalled) when g0 ≪ ε; g0 = ε at q = q*.

    Args: p0 ∈ (0, 1), the initial P; eps > 0, Adam's ε; s > 0, the score scale at the start.
    Returns a float: q < q* should stall, q > q* escape.  A value < 0 means every q ∈ [0, 1]
    is above the threshold, a value > 1 (ε > s) that none is.

    >>> round(predicted_q_star(1e-12, 1e-8, 1.0), 4)
    0.3333
    """
    p0 = _check_open01(p0, "p0")
    return 1.0 - math.log(_check_pos(eps, "eps") / _check_pos(s, "s")) / math.log(p0)


def budget_q_star(p0: float, eps: float, s: float, lr: float, budget: int) -> float:
    r"""The threshold with a finite step budget B (derived here, a refinement of
    :func:`predicted_q_star`): the smallest q ∈ [0, 1] with

        ε / (lr·(1-q)·s·p0^(1-q)) ≤ B,

    the left side being the steps Adam needs in its ε-dominated phase, where it is SGD with step
    lr/ε on θ' ∝ s·e^((1-q)θ) (blow-up time 1/((1-q)·(lr/ε)·g0)).  The phase after g reaches ε
    (≈ ±lr steps, log(1/p0)/lr of them without moment lag) is not counted, so this is a lower
    bound on the threshold of a lag-free Adam and valid only when log(1/p0)/lr ≪ B;
    :func:`two_phase_q_star` counts that phase.
    Solved by bisection: the left side decreases in q for (1-q)·log(1/p0) > 1.  Returns 0.0
    when q = 0 already fits the budget and 1.0 when only q = 1 does.

    >>> round(budget_q_star(1e-12, 1e-8, 1.0, 0.01, 20000), 3)
    0.147
    """
    p0 = _check_open01(p0, "p0")
    eps, s, lr = _check_pos(eps, "eps"), _check_pos(s, "s"), _check_pos(lr, "lr")
    if not (isinstance(budget, (int, np.integer)) and budget >= 1):
        raise ValueError(f"budget must be a positive int, got {budget!r}")
    L = math.log(1.0 / p0)

    def log_steps(q):  # log of ε/(lr (1-q) s p0^(1-q))
        return math.log(eps / (lr * s)) - math.log1p(-q) + (1.0 - q) * L

    lb = math.log(budget)
    if log_steps(0.0) <= lb:
        return 0.0
    # the left side is smallest at 1 - q = 1/L (or at q -> 1 if L <= 1)
    q_min = 1.0 - 1.0 / L if L > 1.0 else 1.0 - 1e-12
    if log_steps(q_min) > lb:
        return 1.0
    lo, hi = 0.0, q_min
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if log_steps(mid) > lb else (lo, mid)
    return hi


def two_phase_steps(p0: float, q: float, eps: float, s: float, lr: float) -> dict:
    r"""Adam's escape steps on the cold-start path in both phases (derived here, not the paper's):
    the ε-dominated phase and the ≈ lr-per-step phase, ``{"T_eps", "T_lr", "total"}``.

    Model: Adam without moment lag (m̂ = g, v̂ = g², true at step 1 and whenever g changes
    slowly against the β memories), so each coordinate moves lr·g/(g + ε) per step.  On the
    cold-start path of the sigmoid (and of the latent model at its symmetric start, whose answer
    logits move together) the logit φ goes from φ0 = logit(p0) to 0 (P = 1/2) with gradient
    g(φ) = c·σ(φ)^(1-q)·(1 - σ(φ)), c = s/(1 - p0) (c = 1 for the sigmoid, 1/K for the latent
    model; s from :func:`score_scale`).  Then dt = dφ·(g + ε)/(lr·g) and

        T = ∫_{φ0}^{0} (1 + ε/g(φ)) dφ / lr = T_eps + T_lr,
        T_lr  = log((1 - p0)/p0) / lr,
        T_eps = ε/(lr·c) · ∫_{φ0}^{0} e^{-(1-q)φ} (1 + e^φ)^(2-q) dφ
              ≈ ε / (lr·(1-q)·s·p0^(1-q))          (q < 1, p0 ≪ 1: the one-phase rule).

    T_eps is the sub-ε phase (Adam is SGD with step lr/ε there), dominated by the start; T_lr is
    the logit distance at ≈ lr per step, which alone makes q = 1 need log(1/p0)/lr steps.  The
    two add: a two-phase split at g = ε gives the same T up to O(1/(lr·(1-q))) steps.  With
    moment lag the ±lr phase is not exact: a v̂ that lags a growing gradient makes |m̂|/√v̂ > 1
    (faster), so under β2 → 1 the total is an upper bound; docs/experiments/adam_threshold.md
    measures both β2 = 0.95 (ratio ≈ 1) and β2 = 0.999 (faster).

    >>> r = two_phase_steps(1e-30, 1.0, 1e-8, 1.0, 0.01)
    >>> round(r["T_lr"]), round(r["total"])
    (6908, 6908)
    """
    p0 = _check_open01(p0, "p0")
    q = float(q)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must lie in [0, 1], got {q}")
    eps, s, lr = _check_pos(eps, "eps"), _check_pos(s, "s"), _check_pos(lr, "lr")
    phi0 = math.log(p0) - math.log1p(-p0)
    if phi0 >= 0.0:  # p0 ≥ 1/2: already escaped
        return {"T_eps": 0.0, "T_lr": 0.0, "total": 0.0}
    a = 1.0 - q
    # ∫ e^{-aφ} dφ in closed form (expm1 keeps q -> 1 exact), the bounded rest by quadrature
    main = -phi0 if a == 0.0 else math.expm1(-a * phi0) / a
    rest, _ = quad(lambda f: math.exp(-a * f) * math.expm1((2.0 - q) * math.log1p(math.exp(f))),
                   phi0, 0.0, limit=200)  # fmt: skip
    t_eps = eps * (1.0 - p0) / (lr * s) * (main + rest)
    t_lr = -phi0 / lr
    return {"T_eps": t_eps, "T_lr": t_lr, "total": t_eps + t_lr}


def two_phase_q_star(p0: float, eps: float, s: float, lr: float, budget: int) -> float | None:
    r"""The budget-aware threshold with both phases: the smallest q ∈ [0, 1] with
    T_eps(q) + T_lr ≤ B (:func:`two_phase_steps`), or None when even q = 1 needs more than B
    steps (T_lr = log((1-p0)/p0)/lr > B already rules out every q).  Bisection is exact: T_eps
    decreases strictly in q (its integrand e^{-(1-q)φ}(1+e^φ)^(2-q) does, for φ < 0) and T_lr
    does not depend on q.  Without T_lr this is :func:`budget_q_star`, which is therefore valid
    only when log(1/p0)/lr ≪ B.

    >>> two_phase_q_star(1e-30, 1e-8, 1.0, 0.01, 2000) is None
    True
    >>> round(two_phase_q_star(1e-12, 1e-8, 1.0, 0.01, 20000), 3)
    0.153
    """
    if not (isinstance(budget, (int, np.integer)) and budget >= 1):
        raise ValueError(f"budget must be a positive int, got {budget!r}")
    total = lambda q: two_phase_steps(p0, q, eps, s, lr)["total"]  # noqa: E731
    if total(1.0) > budget:
        return None
    if total(0.0) <= budget:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if total(mid) > budget else (lo, mid)
    return hi


def score_scale(model, theta0) -> float:
    r"""s = ‖∇_θ log P(θ0)‖_∞ = max_i |∂P/∂θ_i| / P, the score scale Adam sees per coordinate.

    From the model's exact ∇P (one term: the models of the escape experiments).  Sigmoid:
    1 - p0; latent model at its symmetric start: (1 - p0)/K.

    >>> from sims.models import Sigmoid
    >>> score_scale(Sigmoid(), Sigmoid().init(0.25))
    0.75
    """
    weights, P, dP = model.terms(np.asarray(theta0, dtype=np.float64))
    if weights.shape != (1,):
        raise ValueError(f"score_scale needs a one-term model, {model.label()} has {weights.size}")
    return float(np.max(np.abs(dP[0])) / P[0])


def adam_exact_escape(
    model,
    theta0,
    q,
    lr,
    eps,
    max_steps: int,
    *,
    betas: tuple[float, float] = BETAS,
    delta: float = 0.5,
):
    r"""Adam on the exact negative gradient -∇ℓ_q = Σ_j weights_j·P_j^(-q)∇P_j (Prop. 4.1),
    many runs at once, deterministic.

    Per row: m ← β1 m + (1-β1) g, v ← β2 v + (1-β2) g², θ ← θ + lr·m̂/(√v̂ + ε) with the
    bias-corrected m̂ = m/(1-β1^t), v̂ = v/(1-β2^t): :func:`sims.training.adam_update`, the
    update of :func:`sims.sampled.train_sampled`, in the freeze-on-escape loop
    :func:`sims.training.run_to_escape` (escaped rows are dropped).

    Args: theta0 [R, D]; q, lr, eps: floats or [R]; max_steps: the budget.
    Returns (steps [R] int64, censored [R] bool): the first step after which monitor ≥ δ, or the
    budget with censored = True.
    """
    theta = np.array(theta0, dtype=np.float64, copy=True)
    if theta.ndim != 2 or theta.shape[1] != model.dim:
        raise ValueError(f"theta0 must be [R, {model.dim}], got {theta.shape}")
    R = theta.shape[0]

    def per_row(x, name):
        a = np.broadcast_to(np.asarray(x, dtype=np.float64), (R,)).copy()
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be finite, got {x!r}")
        return a

    q, lr, eps = per_row(q, "q"), per_row(lr, "lr"), per_row(eps, "eps")
    if np.any((q < 0) | (q > 1)):
        raise ValueError(f"q must lie in [0, 1], got {q}")
    if np.any(lr <= 0) or np.any(eps <= 0):
        raise ValueError("lr and eps must be positive")
    if not (isinstance(max_steps, (int, np.integer)) and max_steps >= 1):
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
    b1, b2 = (float(b) for b in betas)
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
    betas = (b1, b2)
    rows = {"th": theta, "q": q[:, None], "lr": lr[:, None], "eps": eps[:, None]}
    rows["m"], rows["v"] = np.zeros_like(theta), np.zeros_like(theta)

    def monitor(rows, t, active):
        return np.asarray(model.monitor(rows["th"]))

    def step(rows, t, active):
        th = rows["th"]
        w, P, dP = model.terms(th)
        g = np.einsum("j,rj,rjd->rd", w, np.exp(-rows["q"] * np.log(P)), dP)
        rows["m"], rows["v"], upd = adam_update(
            rows["m"], rows["v"], g, t + 1, rows["lr"], rows["eps"], betas
        )
        rows["th"] = th + upd
        return rows

    run = run_to_escape(
        rows, R, monitor=monitor, step=step, max_steps=int(max_steps), delta=delta
    )
    return run.steps, run.censored


# --------------------------------------------------------------------------------------------
# settings


def _presets(quick: bool) -> dict:
    if quick:
        return {
            "exact": {"p0": (1e-6, 1e-12, 1e-20, 1e-30), "budget": 20000},
            "exact_short_memory": {"p0": (1e-12, 1e-30), "budget": 20000},
            # the same lr·budget = 100 as the full preset, 10x fewer steps (the costly part)
            "sampled": {"p0": (1e-30,), "budget": 1000, "n_seeds": 3, "lr": 0.1,
                        "q": Q_FINE[2:]},  # fmt: skip
        }
    return {
        "exact": {"p0": (1e-6, 1e-9, 1e-12, 1e-16, 1e-20, 1e-25, 1e-30), "budget": 20000},
        "exact_short_memory": {"p0": (1e-12, 1e-20, 1e-30), "budget": 20000},
        "sampled": {
            "p0": (1e-6, 1e-9, 1e-12, 1e-16, 1e-20, 1e-25, 1e-30),
            "budget": 10000,
            "n_seeds": 16,
            "lr": LR,
            "q": Q_FINE,
        },
    }


def settings(quick: bool) -> list[dict]:
    out = []
    pre = _presets(quick)
    base = {"experiment": NAME, "optimizer": "adam", "lr": LR, "adam_betas": list(BETAS),
            "delta": 0.5, "seed": 0}  # fmt: skip
    for eps in EPS_GRID:
        for p0 in pre["exact"]["p0"]:
            for q in Q_FINE:
                out.append(
                    {
                        **base,
                        "part": "exact",
                        "model": "sigmoid",
                        "model_kw": {},
                        "mode": "exact_gradient",
                        "estimator": "exact",
                        "M": None,
                        "adam_eps": eps,
                        "q": q,
                        "p0": p0,
                        "budget": pre["exact"]["budget"],
                        "n_seeds": 1,
                        "id": f"{NAME}/exact/sigmoid/eps={fmt_p(eps)}/q={q:g}/p0={fmt_p(p0)}",
                    }
                )
        for p0 in pre["exact_short_memory"]["p0"]:
            for q in Q_FINE:
                out.append(
                    {
                        **base,
                        "part": "exact_short_memory",
                        "model": "sigmoid",
                        "model_kw": {},
                        "mode": "exact_gradient",
                        "estimator": "exact",
                        "M": None,
                        "adam_betas": list(SHORT_BETAS),
                        "adam_eps": eps,
                        "q": q,
                        "p0": p0,
                        "budget": pre["exact_short_memory"]["budget"],
                        "n_seeds": 1,
                        "id": f"{NAME}/exact_short_memory/sigmoid/b2={SHORT_BETAS[1]:g}"
                        f"/eps={fmt_p(eps)}/q={q:g}/p0={fmt_p(p0)}",
                    }
                )
        for p0 in pre["sampled"]["p0"]:
            for q in pre["sampled"]["q"]:
                out.append(
                    {
                        **base,
                        "part": "sampled",
                        "model": "latent",
                        "model_kw": {"K": LATENT_K},
                        "mode": "likelihood",
                        "estimator": "garl_rloo",
                        "M": M_SAMPLED,
                        "adam_eps": eps,
                        "q": q,
                        "p0": p0,
                        "budget": pre["sampled"]["budget"],
                        "lr": pre["sampled"]["lr"],
                        "n_seeds": pre["sampled"]["n_seeds"],
                        "id": f"{NAME}/sampled/latent_K{LATENT_K}/M={M_SAMPLED}/eps={fmt_p(eps)}"
                        f"/q={q:g}/p0={fmt_p(p0)}",
                    }
                )
    return out


def batch_key(s: dict) -> tuple:
    return (s["part"], s["model"], str(s["model_kw"]), s["mode"], s["estimator"], str(s["M"]))


def _run_exact(batch: list[dict]) -> list[dict]:
    model = model_of(batch[0])
    theta0 = np.stack([model.init(s["p0"]) for s in batch])
    budgets = np.array([s["budget"] for s in batch], dtype=np.int64)
    steps, cens = adam_exact_escape(
        model,
        theta0,
        [s["q"] for s in batch],
        [s["lr"] for s in batch],
        [s["adam_eps"] for s in batch],
        int(budgets.max()),
        betas=tuple(batch[0]["adam_betas"]),
        delta=batch[0]["delta"],
    )
    over = steps > budgets
    steps, cens = np.where(over, budgets, steps), cens | over
    return [
        {
            "steps": steps[i : i + 1],
            "censored": cens[i : i + 1],
            "p0_actual": np.array(float(model.monitor(theta0[i]))),
            "score_scale": np.array(score_scale(model, theta0[i])),
        }
        for i in range(len(batch))
    ]


def _run_sampled(batch: list[dict]) -> list[dict]:
    """The sampled runs through the shared runner of :mod:`sims.experiments._common` (per-row
    q, lr and ε), keeping escape steps, censoring, p0 and the score scale s of each setting."""
    model = model_of(batch[0])
    out = []
    for s, res in zip(batch, run_sampled(NAME, batch), strict=True):
        th0 = model.init(s["p0"])
        out.append(
            {
                "steps": res["steps"],
                "censored": res["censored"],
                "p0_actual": res["p0_actual"],
                "score_scale": np.array(score_scale(model, th0)),
            }
        )
    return out


def run_batch(batch: list[dict]) -> list[dict]:
    return _run_exact(batch) if batch[0]["mode"] == "exact_gradient" else _run_sampled(batch)


# --------------------------------------------------------------------------------------------
# analysis


def measured_q_star(qs, escaped) -> dict:
    """The measured threshold on a q grid.

    Args: qs, the grid (any order); escaped, per q whether its median escape is uncensored.
    Returns ``q_star`` (the smallest escaping q, None if none escapes), ``q_below`` (the largest
    grid q under it, None if q_star is the grid's smallest: the threshold is ≤ q_star), and
    ``stalled_above`` (grid q > q_star that still do not escape: the threshold is not a clean
    step there).

    >>> measured_q_star([0, 0.5, 0.75, 1], [False, False, True, True])
    {'q_star': 0.75, 'q_below': 0.5, 'stalled_above': []}
    """
    if len(qs) != len(escaped) or len(qs) == 0:
        raise ValueError("qs and escaped must be non-empty and of equal length")
    order = np.argsort(np.asarray(qs, dtype=np.float64), kind="stable")
    qs = [float(qs[i]) for i in order]
    escaped = [bool(escaped[i]) for i in order]
    first = next((i for i, e in enumerate(escaped) if e), None)
    if first is None:
        return {"q_star": None, "q_below": qs[-1], "stalled_above": []}
    return {
        "q_star": qs[first],
        "q_below": qs[first - 1] if first > 0 else None,
        "stalled_above": [q for q, e in zip(qs[first:], escaped[first:], strict=True) if not e],
    }


def _model_label(r: dict) -> str:
    return "sigmoid" if r["model"] == "sigmoid" else f"latent_K{r['model_kw']['K']}"


def _gap(x: float, lo: float, hi: float) -> float:
    """Distance from x to the interval (lo, hi] (0 inside)."""
    return 0.0 if lo < x <= hi else float(min(abs(x - lo), abs(x - hi)))


def _cell_check(pred, qs_, qb):
    """(in_cell, gap) of a predicted threshold against the measured cell (q_below, q*]; a
    prediction of None (no q escapes) agrees exactly when no grid q escaped, gap None."""
    if pred is None:
        return qs_ is None, None
    # a prediction on a grid value (p0 and ε powers of ten) counts for it up to rounding
    lo = -math.inf if qb is None else qb - 1e-9
    hi = math.inf if qs_ is None else qs_ + 1e-9
    return bool(lo < pred <= hi), _gap(pred, lo, hi)


def _q_star_record(recs: list[dict], budget: int) -> dict:
    """The q* record of one (part, ε, p0) group read at ``budget`` ≤ the runs' own budget: a
    deterministic run escapes within a smaller budget iff its escape step is ≤ it."""
    r0 = recs[0]
    p0, s, eps, lr = r0["p0_actual"], r0["score_scale"], r0["adam_eps"], r0["lr"]
    escaped = [not r["median_censored"] and r["median_steps"] <= budget for r in recs]
    meas = measured_q_star([r["q"] for r in recs], escaped)
    pred = predicted_q_star(p0, eps, s)
    pred_b = budget_q_star(p0, eps, s, lr, int(budget))
    pred_2 = two_phase_q_star(p0, eps, s, lr, int(budget))
    esc = [r for r, e in zip(recs, escaped, strict=True) if e]
    fastest = min(esc, key=lambda r: (r["median_steps"], r["q"]))["q"] if esc else None
    qs_, qb = meas["q_star"], meas["q_below"]
    in_p, gap_p = _cell_check(pred, qs_, qb)
    in_b, gap_b = _cell_check(pred_b, qs_, qb)
    in_2, gap_2 = _cell_check(pred_2, qs_, qb)
    # does each rule call every grid q right (escape iff its steps fit the budget)?  This also
    # catches an escape window (q = 1 stalling while smaller q escape), which q* alone cannot show
    one_ok = all((pred_b <= r["q"] + 1e-9) == e for r, e in zip(recs, escaped, strict=True))
    two_ok = all((r["two_phase_steps"] <= budget) == e for r, e in zip(recs, escaped, strict=True))
    return {
        "experiment": NAME,
        "record": "q_star",
        **{k: r0[k] for k in ("part", "model", "mode", "estimator", "optimizer", "adam_betas")},
        "adam_eps": eps,
        "lr": lr,
        "p0": r0["p0"],
        "p0_actual": p0,
        "M": r0["M"],
        "budget": int(budget),
        "truncated_from": int(r0["budget"]) if budget < r0["budget"] else None,
        "n_runs": r0["n_runs"],
        "score_scale": s,
        "q_star_measured": qs_,
        "q_below": qb,
        "stalled_above": meas["stalled_above"],
        "q_star_predicted": pred,
        "q_star_budget": pred_b,
        "q_star_two_phase": pred_2,
        "prediction_in_cell": in_p,
        "prediction_gap": gap_p,
        "budget_gap": gap_b,
        "budget_in_cell": in_b,
        "two_phase_in_cell": in_2,
        "two_phase_gap": gap_2,
        "one_phase_every_q": one_ok,
        "two_phase_every_q": two_ok,
        "fastest_q": fastest,
    }


def analyze(table: list[dict]) -> list[dict]:
    """Escape records per (part, ε, p0, q), then q* records per (part, ε, p0): at the runs'
    budget, and for the deterministic parts also at :data:`SHORT_BUDGET` (by truncation)."""
    records, groups = [], {}
    for r in table:
        summ = escape_summary(r["steps"], r["censored"])
        p0a, s = float(r["p0_actual"]), float(r["score_scale"])
        pred = two_phase_steps(p0a, r["q"], r["adam_eps"], s, r["lr"])
        rec = {
            "experiment": NAME,
            "record": "escape",
            "part": r["part"],
            "model": _model_label(r),
            "mode": r["mode"],
            "estimator": r["estimator"],
            "optimizer": r["optimizer"],
            "adam_betas": [float(b) for b in r["adam_betas"]],
            "adam_eps": r["adam_eps"],
            "lr": r["lr"],
            "q": r["q"],
            "p0": r["p0"],
            "p0_actual": p0a,
            "M": r["M"],
            "budget": r["budget"],
            "median_steps": summ["median"],
            "median_censored": summ["median_censored"],
            "n_runs": summ["n"],
            "n_censored": summ["n_censored"],
            "score_scale": s,
            "two_phase_T_eps": pred["T_eps"],
            "two_phase_T_lr": pred["T_lr"],
            "two_phase_steps": pred["total"],
            # measured over the lag-free two-phase model (1: exact, < 1: faster); uncensored only
            "steps_ratio": None if summ["median_censored"] else summ["median"] / pred["total"],
        }
        records.append(rec)
        groups.setdefault((r["part"], r["adam_eps"], r["p0"]), []).append(rec)
    for recs in groups.values():
        budget = int(recs[0]["budget"])
        records.append(_q_star_record(recs, budget))
        if recs[0]["mode"] == "exact_gradient" and SHORT_BUDGET < budget:
            records.append(_q_star_record(recs, SHORT_BUDGET))
    return records


EXPERIMENT = Experiment(
    name=NAME,
    description="Adam's ε against the q axis: measured escape threshold q* vs the prediction "
    "1 - log(ε/s)/log p0 and the budget rules, sigmoid (exact gradient, β2 = 0.999 and 0.95) "
    "and latent model (GARL-RLOO, M = 8)",
    version=VERSION,
    settings=settings,
    batch_key=batch_key,
    run_batch=run_batch,
    analyze=analyze,
)
