r"""Experiment 6: GRPO placed on the q axis (README, "GRPO on the q axis").

For the Bernoulli (sigmoid) model with 0/1 rewards, every group of M samples is determined by
its number of successes n, so the exact expected update of any estimator is
E[A](P) = Σ_n Binom(n; M, P)·Σ_m coef[n, m]·(y_m - P), with the coefficients from
``tsallis.estimators`` called once on the M + 1 possible groups.  Its amplification of the RL
gradient, A(P)/∇P with ∇P = P(1-P), behaves like P^(-q_eff): the fitted slope of
log(A/∇P) against log(1/P) is the estimator's effective q.

Measured for GRPO (std-normalised advantages) and, as a check of the method, for plug-in GARL at
q = 1/2, over two ranges: M·P ≥ 4 with P ≤ 0.2 (the regime where GRPO ≈ [P(1-P)]^(-1/2)·∇P,
q_eff ≈ 1/2) and M·P ≤ 0.1 (the capped regime, q_eff ≈ 0 for every estimator).  The exact
``theory.grpo_update_scale`` is drawn beside it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats

from tsallis import estimators as est
from tsallis import theory

from ..analysis import fit_slope
from . import Experiment

NAME = "grpo_q_axis"
VERSION = 1
P_GRID = np.logspace(-5, -0.4, 47)
SERIES = (("grpo", 0.0), ("garl", 0.5))


def settings(quick: bool) -> list[dict]:
    Ms = (8, 64, 512) if quick else (8, 32, 128, 512)
    return [
        {
            "experiment": NAME,
            "estimator": e,
            "q": q,
            "M": M,
            "seed": 0,
            "n_seeds": 1,
            "id": f"{NAME}/verifier/sigmoid/{e}/q={q:g}/M={M}",
        }
        for e, q in SERIES
        for M in Ms
    ]


def batch_key(s: dict) -> tuple:
    return (s["id"],)


def expected_update(estimator: str, q: float, M: int, P: np.ndarray) -> np.ndarray:
    """Exact E[A](P) in logit units for the Bernoulli model (enumeration over n successes)."""
    n = np.arange(M + 1)
    y = (np.arange(M)[None, :] < n[:, None]).astype(np.float64)  # group with n successes
    co = est.get_estimator(estimator)(est.rewards_to_log_w(torch.as_tensor(y)), q, mode="verifier")
    c = co.coef_z.numpy()
    a_succ = (c * y).sum(1)  # Σ_m coef·y_m
    a_all = c.sum(1)
    pmf = stats.binom.pmf(n[None, :], M, P[:, None])  # [P, n]
    return pmf @ a_succ - P * (pmf @ a_all)


def run_batch(batch: list[dict]) -> list[dict]:
    out = []
    for s in batch:
        A = expected_update(s["estimator"], s["q"], s["M"], P_GRID)
        out.append({"P": P_GRID.copy(), "A": A, "amplification": A / (P_GRID * (1 - P_GRID))})
    return out


def _fit(P, amp, sel):
    if sel.sum() < 3:
        return {"slope": math.nan, "slope_ci": [math.nan, math.nan]}
    return fit_slope(P[sel], [[a] for a in amp[sel]])


def analyze(table: list[dict]) -> list[dict]:
    records = []
    for r in table:
        P, amp, M = np.asarray(r["P"]), np.asarray(r["amplification"]), r["M"]
        hi = (M * P >= 4) & (P <= 0.2)
        lo = M * P <= 0.1
        # theory gives E[A] in units of ∇log P = (1-P); amplification of ∇P = P(1-P) is scale/P
        if r["estimator"] == "grpo":
            th_amp = theory.grpo_update_scale(P, M) / P
        else:
            th_amp = theory.sampled_update_scale(P, M, r["q"]) / P
        for regime_name, sel, th in (("MP>=4", hi, 0.5), ("MP<=0.1", lo, 0.0)):
            fit = _fit(P, amp, sel)
            records.append(
                {
                    "experiment": NAME,
                    "regime": "sampled_verifier",
                    "range": regime_name,
                    "model": "sigmoid",
                    "estimator": r["estimator"],
                    "q": r["q"] if r["estimator"] != "grpo" else None,
                    "M": M,
                    "kind": "q_eff",
                    "slope": fit["slope"],
                    "slope_ci": fit["slope_ci"],
                    "theory_slope": th,
                    "n_censored": 0,
                    "n_points": int(sel.sum()),
                    "fit_P_range": [float(P[sel].min()), float(P[sel].max())]
                    if sel.any()
                    else None,
                    "slope_note": None
                    if sel.sum() >= 3
                    else f"too few grid points to fit ({int(sel.sum())} P with "
                    f"{'4/M ≤ P ≤ 0.2' if regime_name == 'MP>=4' else 'P ≤ 0.1/M'}, 3 needed)",
                    "max_rel_err_vs_theory": float(np.max(np.abs(amp / th_amp - 1.0))),
                    "P": P.tolist(),
                    "amplification": amp.tolist(),
                    "theory": th_amp.tolist(),
                }
            )
    return records


EXPERIMENT = Experiment(
    name=NAME,
    description="GRPO on the q axis: the effective amplification exponent of its exact "
    "expected update (0/1 rewards), with plug-in GARL q=1/2 as a reference",
    version=VERSION,
    settings=settings,
    batch_key=batch_key,
    run_batch=run_batch,
    analyze=analyze,
)
