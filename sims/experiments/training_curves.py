r"""Experiment 3: training curves P(t) from one cold start (p0 = 1e-3) per q.

* exact flow of the sigmoid model, t from 1e-2 to 1e7: the escape (Section 5) and the
  convergence tail 1 - P(t) ~ 1/(t) for every q (Prop. C.1: near the optimum q does not matter;
  Mei et al. 2020's softmax tail);
* sampled plug-in GARL, sigmoid with 0/1 verifier rewards (M = 8, η = 1), and the latent model in
  likelihood mode (K = 4, M = 8, η = 2): the median P over seeds at log-spaced steps.
"""

from __future__ import annotations

import math

import numpy as np

from tsallis import theory

from ..analysis import fit_slope, group_rows
from ..dynamics import flow_curve
from . import Experiment
from ._common import Q_GRID, model_of, run_sampled, sampled_batch_key

NAME = "training_curves"
VERSION = 2  # 2: seeds keyed by (experiment, setting id, seed), not by the cache hash
P0 = 1e-3
FLOW_TIMES = np.logspace(-2, 7, 181)


def _record_steps(budget: int) -> list[int]:
    return sorted({int(round(x)) for x in np.logspace(0, math.log10(budget), 60)} | {0})


def settings(quick: bool) -> list[dict]:
    out = []
    seeds = 8 if quick else 32
    for q in Q_GRID:
        out.append(
            {
                "experiment": NAME,
                "regime": "flow",
                "model": "sigmoid",
                "model_kw": {},
                "q": q,
                "p0": P0,
                "seed": 0,
                "n_seeds": 1,
                "id": f"{NAME}/flow/sigmoid/q={q:g}/p0=1e-03",
            }
        )
    common = {
        "experiment": NAME,
        "estimator": "garl",
        "optimizer": "sgd",
        "delta": 0.5,
        "paper_normalization": False,
        "freeze": False,
        "seed": 0,
        "n_seeds": seeds,
        "p0": P0,
        "M": 8,
    }
    budget = 3000 if quick else 6000
    for q in Q_GRID:
        out.append(
            {
                **common,
                "regime": "sampled_verifier",
                "model": "sigmoid",
                "model_kw": {},
                "mode": "verifier",
                "q": q,
                "eta": 1.0,
                "lr": 1.0,
                "budget": budget,
                "id": f"{NAME}/sampled_verifier/sigmoid/M=8/q={q:g}/p0=1e-03",
            }
        )
        out.append(
            {
                **common,
                "regime": "sampled_likelihood",
                "model": "latent",
                "model_kw": {"K": 4},
                "mode": "likelihood",
                "q": q,
                "eta": 2.0,
                "lr": 2.0,
                "budget": budget,
                "id": f"{NAME}/sampled_likelihood/latent_K4/M=8/q={q:g}/p0=1e-03",
            }
        )
    return out


def batch_key(s: dict) -> tuple:
    if s["regime"] == "flow":
        return ("flow", s["id"])
    return (s["regime"], s["budget"]) + sampled_batch_key(s)


def run_batch(batch: list[dict]) -> list[dict]:
    if batch[0]["regime"] == "flow":
        out = []
        for s in batch:
            P = flow_curve(model_of(s), s["p0"], s["q"], FLOW_TIMES)
            out.append({"t": FLOW_TIMES.copy(), "P": P})
        return out
    rec = _record_steps(batch[0]["budget"])
    res = run_sampled(NAME, batch, record_steps=rec)
    return [
        {
            "t": r["record_steps"].astype(np.float64),
            "P_seeds": r["curves"],
            "P": np.median(r["curves"], axis=0),
        }
        for r in res
    ]


def analyze(table: list[dict]) -> list[dict]:
    """Per curve: the time P first reaches 1/2 (vs theory for the flow) and, for the flow, the
    convergence tail exponent of 1 - P(t) against t over 1 - P in [1e-6, 1e-3] (theory: -1)."""
    records = []
    for (regime, q), rows in group_rows(table, ["regime", "q"]).items():
        r = rows[0]
        t, P = np.asarray(r["t"]), np.asarray(r["P"])
        above = np.flatnonzero(P >= 0.5)
        t_half = float(t[above[0]]) if above.size else math.nan
        rec = {
            "experiment": NAME,
            "regime": regime,
            "model": "sigmoid" if r["model"] == "sigmoid" else "latent_K4",
            "estimator": "exact" if regime == "flow" else r["estimator"],
            "q": q,
            "M": r.get("M"),
            "eta": r.get("eta"),
            "p0": P0,
            "t_half": t_half,
            "n_censored": 0 if above.size else 1,
            "curve": {"t": [float(x) for x in t], "P": [float(x) for x in P]},
        }
        if regime == "flow":
            rec["t_half_theory"] = float(theory.sigmoid_escape_time(P0, q))
            tail = (1 - P <= 1e-3) & (1 - P >= 1e-6)
            if tail.sum() >= 3:
                # slope of log(1-P) vs log t, as a fit of "1/(1-P)" against "1/t" exponents
                fit = fit_slope(1.0 / t[tail], [[x] for x in 1.0 / (1 - P[tail])])
                rec.update(
                    kind="tail",
                    slope=-fit["slope"],
                    slope_ci=[-fit["slope_ci"][1], -fit["slope_ci"][0]],
                    theory_slope=-1.0,
                )
        records.append(rec)
    return records


EXPERIMENT = Experiment(
    name=NAME,
    description="training curves P(t) from one cold start per q: exact flow (with the 1/t "
    "convergence tail), sampled verifier and sampled likelihood mode",
    version=VERSION,
    settings=settings,
    batch_key=batch_key,
    run_batch=run_batch,
    analyze=analyze,
)
