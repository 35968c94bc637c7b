r"""Experiment 1: escape time vs p0 under exact gradient flow and gradient descent (Section 5).

Models: the sigmoid (Eq. 15, exact theory), the K-arm bandit (K = 4, one correct arm, wrong arms
equal: T = (K-1)/K·T_sigmoid) and the length-L tabular chain over V = 10 tokens from uniform
tables (p0 = 10^-L; its flow integral carries a 1/L factor, so its log-log slope is not 1-q).
q ∈ {0, .25, .5, .75, 1}, p0 from 1e-2 down to 1e-6.  Thm 5.1/5.2: T = Θ(p0^-(1-q)/(1-q)) for
q < 1 and Θ(log 1/p0) at q = 1.  Gradient descent (step η) must take T/η steps up to O(η).
"""

from __future__ import annotations

import numpy as np

from tsallis import theory

from ..analysis import escape_summary, fit_slope, group_rows
from . import Experiment
from ._common import Q_GRID, fmt_p, model_of, p0_grid, run_flow, run_gd

NAME = "escape_time"
VERSION = 1
CHAIN_V = 10
KARM = {"K": 4, "k": 1}
GD_ETA = 0.25


def _model_variants(quick: bool, regime: str, q: float):
    hi, lo = -2.0, -6.0
    per_decade = 1 if quick else 2
    if regime == "gd":
        # GD needs T/η steps (4e6 at q = 0, p0 = 1e-6, η = 1/4): stop where that gets costly.
        lo = -4.0 if (quick or q == 0.0) else (-5.0 if q == 0.25 else -6.0)
    grid = p0_grid(lo, hi, per_decade)
    for p0 in grid:
        yield "sigmoid", {}, p0, f"p0={fmt_p(p0)}"
        yield "karm", dict(KARM), p0, f"p0={fmt_p(p0)}"
    for L in range(2, int(-lo) + 1):
        yield "chain", {"L": L, "V": CHAIN_V}, None, f"L={L}"


def _series_name(model: str, kw: dict) -> str:
    if model == "karm":
        return f"karm_K{kw['K']}"
    if model == "chain":
        return f"chain_V{kw['V']}"
    return model


def settings(quick: bool) -> list[dict]:
    out = []
    for regime in ("flow", "gd"):
        for q in Q_GRID:
            for model, kw, p0, tag in _model_variants(quick, regime, q):
                s = {
                    "experiment": NAME,
                    "regime": regime,
                    "model": model,
                    "model_kw": kw,
                    "q": q,
                    "p0": p0,
                    "delta": 0.5,
                    "seed": 0,
                    "n_seeds": 1,
                }
                p_start = p0 if p0 is not None else CHAIN_V ** -kw["L"]
                if regime == "flow":
                    s["budget"] = 50.0 / p_start + 100.0
                else:
                    s["eta"] = GD_ETA
                    s["budget"] = int(3.0 / p_start / s["eta"]) + 1000
                s["id"] = f"{NAME}/{regime}/{_series_name(model, kw)}/q={q:g}/{tag}"
                out.append(s)
    return out


def batch_key(s: dict) -> tuple:
    if s["regime"] == "flow":
        return ("flow", s["id"])
    return ("gd", s["model"], str(sorted(s["model_kw"].items())), s["q"], s["delta"])


def run_batch(batch: list[dict]) -> list[dict]:
    if batch[0]["regime"] == "flow":
        return [run_flow(s) for s in batch]
    return run_gd(batch)


def theory_time(model: str, kw: dict, p0, q: float, delta: float = 0.5):
    """The flow theory drawn beside the measurements (tsallis.theory, never re-derived here)."""
    if model == "sigmoid":
        return theory.sigmoid_escape_time(p0, q, delta)
    if model == "karm":
        return theory.karm_escape_time(p0, q, kw["K"], kw.get("k", 1), delta)
    if model == "chain":
        return theory.chain_escape_time(p0, q, kw["L"], kw["V"], delta)
    raise ValueError(f"no flow theory for model {model!r}")


def analyze(table: list[dict]) -> list[dict]:
    records = []
    groups = group_rows(table, ["regime", "model", "q"])
    for (regime, model, q), rows in groups.items():
        rows = sorted(rows, key=lambda r: -float(r["p0_actual"]))
        p0 = np.array([float(r["p0_actual"]) for r in rows])
        kind = "log" if q == 1.0 else "power"
        samples = [r["time"] for r in rows]
        cens = [r["censored"] for r in rows]
        fit = fit_slope(p0, samples, cens, kind=kind)
        th = np.array(
            [theory_time(model, r["model_kw"], float(r["p0_actual"]), q, r["delta"]) for r in rows]
        )
        th_fit = fit_slope(p0, [[t] for t in th], kind=kind)
        meds = np.array(
            [escape_summary(s, c)["median"] for s, c in zip(samples, cens, strict=False)]
        )
        ratio = meds / th
        kw = rows[0]["model_kw"]
        rec = {
            "experiment": NAME,
            "regime": regime,
            "model": _series_name(model, kw),
            "estimator": "exact",
            "q": q,
            "M": None,
            "eta": rows[0].get("eta"),
            "kind": kind,
            "slope": fit["slope"],
            "slope_ci": fit["slope_ci"],
            "theory_slope": th_fit["slope"],
            "asymptotic_slope": (1.0 - q) if kind == "power" else None,
            "n_censored": fit["n_censored"],
            "n_points": fit["n_points"],
            "p0_min": float(p0.min()),
            "p0_max": float(p0.max()),
            "ratio_to_theory": [float(x) for x in ratio],
            "max_rel_err_vs_theory": float(np.max(np.abs(ratio - 1.0))),
            "points": [
                {"p0": float(a), "time": float(b), "theory": float(c), "censored": int(np.sum(cc))}
                for a, b, c, cc in zip(p0, meds, th, cens, strict=False)
            ],
        }
        if kind == "log":
            i = int(np.argmin(p0))
            rec["t_over_log_at_p0_min"] = float(meds[i] / np.log(1.0 / p0[i]))
        records.append(rec)
    return records


EXPERIMENT = Experiment(
    name=NAME,
    description="escape time vs p0 under exact flow and GD (sigmoid, K-arm, L-step chain), "
    "q in {0,.25,.5,.75,1}, against tsallis.theory",
    version=VERSION,
    settings=settings,
    batch_key=batch_key,
    run_batch=run_batch,
    analyze=analyze,
)

__all__ = ["EXPERIMENT", "theory_time", "model_of"]
