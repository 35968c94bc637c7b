r"""Experiment 5: estimator bias against M by exact enumeration (Thm 6.1, Props. 6.2, D.3, D.4).

Every possible group of M samples is enumerated with its multinomial probability (the samples
of a group are exchangeable, so a group is its count vector over the K outcomes), the estimator
from ``tsallis.estimators`` is called once on all groups, and the exact expectation and variance
of the update Σ_m coef_z·∇log p(z_m) + coef_y·∇log p(y|z_m) follow.  PAFT's resampling is the one
random part: its expectation and variance add a Monte Carlo average over ``draws`` resamplings
of each group (seeded generator), drawn through ``tsallis.estimators.paft`` itself (the formula
is not re-implemented here), and its relative bias carries the Monte Carlo standard error
``rel_bias_se`` (E[PAFT | pool] = GARL exactly, Prop. D.3, so PAFT's points must lie within a
few standard errors of GARL's).

* ``verifier`` — 0/1 rewards on the K = 3 arm bandit with two correct arms (PAFT's extra
  variance needs two different correct samples, Prop. D.4), P ∈ {0.05, 0.3}.  The expected update
  is a scalar multiple (1 + r) of the true ascent direction P^(-q)∇P; r is reported with the
  delta-method leading term ``theory.garl_bias_leading_term`` (valid for M·P ≫ 1) — for this
  model -q(1-q)(1-P)/(2MP) — and r -> (MP)^q - 1 as M·P -> 0.
* ``likelihood`` — the categorical latent model with K = 3 rationales, w = σ(φ) ∈ (0, 1)
  trainable: the bias also turns the direction (cosine reported); the leading term needs
  M ≫ Var(w)/P².
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import gammaln

from tsallis import estimators as est
from tsallis import theory

from ..analysis import fit_slope, group_rows
from . import Experiment
from ._common import Q_GRID

NAME = "estimator_bias"
VERSION = 2  # 2: PAFT's Monte Carlo standard error (mean_cov), more draws
ESTIMATORS = ("garl", "garl_rloo", "paft")
# K = 3 arm bandit, arms 0 and 1 correct (shares 0.7 / 0.3 of P)
VERIFIER_P = (0.05, 0.3)
# latent model: prior (0.1, 0.3, 0.6), answer likelihoods (0.9, 0.1, 0.01): P = 0.126
LATENT_PRIOR = (0.1, 0.3, 0.6)
LATENT_W = (0.9, 0.1, 0.01)


def compositions(M: int, K: int) -> np.ndarray:
    """All count vectors n ∈ N^K with Σ n = M, shape [C, K] (C = binom(M+K-1, K-1))."""
    if K == 1:
        return np.array([[M]])
    out = [
        np.concatenate([np.full((len(rest), 1), i), rest], 1)
        for i in range(M + 1)
        for rest in [compositions(M - i, K - 1)]
    ]
    return np.concatenate(out, 0)


def _setup(mode: str, P: float | None):
    """(probs π [K], per-outcome log-weight [K], per-outcome score matrix builder)."""
    if mode == "verifier":
        pi = np.array([0.7 * P, 0.3 * P, 1.0 - P])
        log_w = np.log(
            np.array([1.0, 1.0, 0.0]), where=np.array([1, 1, 0]) > 0, out=np.full(3, -np.inf)
        )
        # score of outcome a w.r.t. the 3 logits: e_a - π (the whole response is sampled)
        score_z = np.eye(3) - pi
        score_y = np.zeros((3, 3))
        theta_dim = 3
        grad_P = pi * (np.array([1.0, 1.0, 0.0]) - P)
        return pi, log_w, score_z, score_y, grad_P, theta_dim
    prior = np.array(LATENT_PRIOR)
    w = np.array(LATENT_W)
    Pv = float(prior @ w)
    K = 3
    score_z = np.concatenate([np.eye(K) - prior, np.zeros((K, K))], 1)  # ∇ log π(z)
    score_y = np.concatenate([np.zeros((K, K)), np.diag(1.0 - w)], 1)  # ∇ log σ(φ_z)
    grad_P = np.concatenate([prior * (w - Pv), prior * w * (1.0 - w)])
    return prior, np.log(w), score_z, score_y, grad_P, 2 * K


def exact_moments(
    mode: str,
    P: float | None,
    q: float,
    M: int,
    estimator: str,
    draws: int = 64,
    seed: int = 0,
    chunk: int = 256,
) -> dict:
    """Exact E[update] and Var(update) by enumerating groups (+ MC over PAFT's resamplings).

    For PAFT the conditional moments given each enumerated group are Monte Carlo averages over
    ``draws`` calls of ``tsallis.estimators.paft`` (``chunk`` draws per call, one seeded
    generator), and ``mean_cov`` [D, D] is the Monte Carlo covariance of the returned mean,
    Σ_c prob_c²·Cov_c/draws (zero for the deterministic estimators): its projections give the
    standard errors the figure draws.
    """
    pi, lw_k, score_z, score_y, grad_P, D = _setup(mode, P)
    K = pi.size
    comps = compositions(M, K)  # [C, K]
    log_prob = gammaln(M + 1) - gammaln(comps + 1).sum(1) + (comps * np.log(pi)).sum(1)
    prob = np.exp(log_prob)
    z = np.stack([np.repeat(np.arange(K), c) for c in comps])  # [C, M]
    log_w = torch.as_tensor(lw_k[z])
    fn = est.get_estimator(estimator)
    sz, sy = score_z[z], score_y[z]  # [C, M, D]

    def updates(co) -> np.ndarray:  # Σ_m coef_z·∇log p(z_m) + coef_y·∇log p(y|z_m)
        cz, cy = co.coef_z.numpy(), co.coef_y.numpy()
        return np.einsum("...cm,cmd->...cd", cz, sz) + np.einsum("...cm,cmd->...cd", cy, sy)

    if estimator in est.RANDOMIZED:
        gen = torch.Generator().manual_seed(seed)
        s1 = np.zeros((len(comps), D))  # Σ_draws upd, per group
        s2 = np.zeros((len(comps), D, D))  # Σ_draws upd·updᵀ, per group
        done = 0
        while done < draws:
            n = min(chunk, draws - done)
            u = updates(fn(log_w.expand(n, *log_w.shape), q, mode=mode, generator=gen))
            s1 += u.sum(0)
            s2 += np.einsum("ncd,nce->cde", u, u)
            done += n
        m_c = s1 / draws  # [C, D] conditional means given the group
        cov_c = s2 / draws - np.einsum("cd,ce->cde", m_c, m_c)  # within-group covariance
        cov_c *= draws / max(draws - 1, 1)  # unbiased
        second = np.einsum("cdd->c", cov_c) + (m_c**2).sum(1)
        mean_cov = np.einsum("c,cde->de", prob**2, cov_c) / draws
        upd = m_c
    else:
        upd = updates(fn(log_w, q, mode=mode))
        second = (upd**2).sum(-1)
        mean_cov = np.zeros((D, D))
    mean = prob @ upd
    var = float(prob @ second - mean @ mean)
    return {
        "mean": mean,
        "var": var,
        "mean_cov": mean_cov,
        "grad_P": grad_P,
        "P": float(pi @ np.exp(lw_k)),
        "n_groups": len(comps),
        "prob_mass": float(prob.sum()),
    }


def _leading_term(mode: str, P: float | None, q: float, M: int) -> np.ndarray:
    """theory.garl_bias_leading_term with this model's exact moments (descent convention)."""
    pi, lw_k, score_z, score_y, grad_P, D = _setup(mode, P)
    w = np.exp(lw_k)
    Pv = float(pi @ w)
    joint_score = score_z + score_y  # ∇ log p(z, y*) per outcome (verifier: the response)
    g = -w[:, None] * joint_score  # per-sample gradient of ℓ_0
    var_w = float(pi @ w**2 - Pv**2)
    cov_gw = pi @ (g * w[:, None]) - (pi @ g) * Pv
    grad_l1 = -grad_P / Pv
    return np.asarray(theory.garl_bias_leading_term(Pv, q, M, var_w, cov_gw, grad_l1))


def settings(quick: bool) -> list[dict]:
    Ms = [2, 4, 8, 16, 32] if quick else [2, 4, 8, 16, 32, 64, 128]
    qs = (0.0, 0.5, 1.0) if quick else Q_GRID
    out = []
    for mode, Ps in (("verifier", VERIFIER_P), ("likelihood", (None,))):
        for P in Ps:
            for q in qs:
                for e in ESTIMATORS:
                    if quick and e == "paft" and (q == 0 or P == 0.05):
                        continue  # quick: PAFT only where the figure draws it (2 s each)
                    tag = f"P={P:g}" if P is not None else "latent_K3"
                    out.append(
                        {
                            "experiment": NAME,
                            "mode": mode,
                            "P": P,
                            "q": q,
                            "estimator": e,
                            "Ms": Ms
                            if e != "paft"
                            else [m for m in Ms if m <= (16 if quick else 32)],
                            "draws": 512 if quick else 2048,
                            "seed": 0,
                            "n_seeds": 1,
                            "id": f"{NAME}/{mode}/{tag}/q={q:g}/{e}",
                        }
                    )
    return out


def batch_key(s: dict) -> tuple:
    return (s["id"],)


def run_batch(batch: list[dict]) -> list[dict]:
    out = []
    for s in batch:
        means, var, lead, covs = [], [], [], []
        for M in s["Ms"]:
            r = exact_moments(
                s["mode"], s["P"], s["q"], M, s["estimator"], s["draws"], s["seed"] + M
            )
            means.append(r["mean"])
            var.append(r["var"])
            covs.append(r["mean_cov"])
            lead.append(_leading_term(s["mode"], s["P"], s["q"], M))
        pi, lw_k, _sz, _sy, grad_P, _d = _setup(s["mode"], s["P"])
        w = np.exp(lw_k)
        Pv = float(pi @ w)
        out.append(
            {
                "M": np.array(s["Ms"]),
                "mean": np.array(means),
                "var": np.array(var),
                "mean_cov": np.array(covs),
                "target": grad_P * Pv ** (-s["q"]),
                "leading": -np.array(lead),
                "P_true": np.array(Pv),
                "var_w": np.array(float(pi @ w**2) - Pv**2),
            }
        )
    return out


def analyze(table: list[dict]) -> list[dict]:
    records = []
    by = group_rows(table, ["mode", "P", "q"])
    for (mode, _P, q), rows in by.items():
        var_by = {
            r["estimator"]: dict(
                zip(np.asarray(r["M"]).tolist(), np.asarray(r["var"]), strict=False)
            )
            for r in rows
        }
        for r in rows:
            Ms = np.asarray(r["M"])
            mean, target = np.asarray(r["mean"]), np.asarray(r["target"])
            tn = float(target @ target)
            rel = mean @ target / tn - 1.0  # r: E[update] = (1 + r)·target along target
            # Monte Carlo standard error of r (PAFT's resamplings; 0 for the exact estimators)
            cov = np.asarray(r.get("mean_cov", np.zeros((len(Ms), target.size, target.size))))
            rel_se = np.sqrt(np.maximum(np.einsum("d,mde,e->m", target, cov, target), 0.0)) / tn
            resid = mean - np.outer(mean @ target / tn, target)
            orth = np.linalg.norm(resid, axis=1) / math.sqrt(tn)
            cos = mean @ target / (np.linalg.norm(mean, axis=1) * math.sqrt(tn))
            lead_rel = np.asarray(r["leading"]) @ target / tn
            Pv = float(r["P_true"])
            # the delta-method regime of Thm 6.1: M·P ≫ 1 for 0/1 rewards, M ≫ Var(w)/P²
            # for continuous weights; "≫" read as a factor 2
            scale = 1.0 / Pv if mode == "verifier" else float(r["var_w"]) / Pv**2
            big = Ms >= 2.0 * scale
            if q == 0:
                note = "q = 0 is unbiased (r = 0 exactly): no bias to fit"
            elif big.sum() < 2:
                note = (
                    f"only {int(big.sum())} M in the delta-method regime M ≥ 2·"
                    f"{'1/P' if mode == 'verifier' else 'Var(w)/P²'} = {2.0 * scale:.3g} "
                    "(2 needed)"
                )
            elif np.any(np.abs(rel[big]) < 1e-13):
                note = "the bias is 0 to round-off (|r| < 1e-13): no power law to fit"
            else:
                note = None
            fit = (
                {"slope": math.nan, "slope_ci": [math.nan, math.nan]}
                if note is not None
                else fit_slope(1.0 / Ms[big], [[abs(x)] for x in rel[big]])
            )
            extra = None
            if r["estimator"] == "paft" and "garl" in var_by:
                extra = [
                    float(v - var_by["garl"].get(int(m), math.nan))
                    for m, v in zip(Ms, np.asarray(r["var"]), strict=False)
                ]
            records.append(
                {
                    "experiment": NAME,
                    "regime": f"sampled_{mode}",
                    "mode": mode,
                    "model": "karm_K3_k2" if mode == "verifier" else "latent_K3",
                    "estimator": r["estimator"],
                    "q": q,
                    "M": Ms.tolist(),
                    "P": Pv,
                    "kind": "bias_vs_M",
                    "slope": fit["slope"],
                    "slope_ci": fit["slope_ci"],
                    "theory_slope": -1.0 if q not in (0.0, 1.0) else None,
                    "slope_note": note,
                    "n_censored": 0,
                    "rel_bias": rel.tolist(),
                    "rel_bias_se": rel_se.tolist(),
                    "leading_rel_bias": lead_rel.tolist(),
                    "orthogonal_rel": orth.tolist(),
                    "cosine": cos.tolist(),
                    "variance": np.asarray(r["var"]).tolist(),
                    "paft_extra_variance": extra,
                    "delta_regime_M": Ms[big].tolist(),
                }
            )
    return records


EXPERIMENT = Experiment(
    name=NAME,
    description="estimator bias vs M by exact enumeration (GARL, GARL-RLOO, PAFT; 0/1 and "
    "likelihood weights) with the delta-method leading term; PAFT's extra variance",
    version=VERSION,
    settings=settings,
    batch_key=batch_key,
    run_batch=run_batch,
    analyze=analyze,
)

__all__ = ["EXPERIMENT", "compositions", "exact_moments"]
