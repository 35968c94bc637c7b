"""The quick presets of every experiment, with assertions on what they must establish."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sims.experiments import get_experiment
from sims.runner import run_experiment


@pytest.fixture(scope="session")
def quick_results(tmp_path_factory):
    """One results cache for the whole session (the figure tests reuse it)."""
    return tmp_path_factory.getbasetemp() / "sims_quick_results"


def _records(name, root):
    exp = get_experiment(name)
    return exp.analyze(run_experiment(exp, quick=True, out=root, progress=False))


def test_escape_time_flow_slopes_and_gd(quick_results):
    recs = _records("escape_time", quick_results)
    flows = {(r["model"], r["q"]): r for r in recs if r["regime"] == "flow"}
    for model in ("sigmoid", "karm_K4"):
        for q in (0.0, 0.25, 0.5, 0.75):
            r = flows[(model, q)]
            assert abs(r["slope"] - (1 - q)) <= 0.03, (model, q, r["slope"])
            assert r["max_rel_err_vs_theory"] < 1e-7
            assert r["p0_min"] <= 1.01e-6 and r["p0_max"] >= 0.99e-2
    sig1 = flows[("sigmoid", 1.0)]
    assert abs(sig1["t_over_log_at_p0_min"] - 1) < 0.10
    for q in (0.0, 0.5, 1.0):  # the chain against its own flow integral
        r = flows[("chain_V10", q)]
        assert r["max_rel_err_vs_theory"] < 1e-6
        assert r["slope"] == pytest.approx(r["theory_slope"], abs=1e-4)
    for r in recs:
        if r["regime"] == "gd":  # η = 1/4: T/η steps up to a few percent
            assert r["max_rel_err_vs_theory"] < 0.06 and r["n_censored"] == 0


def test_sampled_escape_shows_the_trap(quick_results):
    recs = _records("sampled_escape", quick_results)
    for r in recs:
        for p in r["points"]:
            assert -1e-9 <= p["max_monitor"] <= 1 + 1e-9  # the 1/M^q monitor lies in [0, 1]
    check = [r for r in recs if r["part"] == "sigmoid_check"]
    for r in check:  # p0 = 1e-3 ≪ 1/M: within 10% of 1/(M p0 (1 - e^(-η M^(q-1))))
        p = [x for x in r["points"] if x["p0"] <= 1e-3][0]  # (+ 2 standard errors of the mean)
        assert abs(p["mean"] / p["theory"] - 1) < 0.10 + 2 * p["sem"] / p["theory"], (r["q"], p)
        assert p["censored"] == 0
    lat = {(r["regime"], r["q"]): r for r in recs if r["part"] == "latent_modes" and r["M"] == 8}
    for q in (0.0, 0.5, 1.0):  # verifier mode: slope ~1 for every q (capped)
        assert 0.7 < lat[("sampled_verifier", q)]["slope"] < 1.35
    lik = lat[("sampled_likelihood", 0.5)]
    assert 0.3 < lik["slope"] < 0.7  # likelihood mode keeps the flow law, slope ~ 1-q
    assert lat[("sampled_likelihood", 1.0)]["slope"] < 0.3
    norm = [r for r in recs if r["part"] == "normalization"]
    meds = np.array([[p["median"] for p in r["points"]] for r in norm])
    assert np.all(meds.max(0) / meds.min(0) < 1.4)  # q-independent at equal raw lr


def test_training_curves_escape_and_tail(quick_results):
    recs = _records("training_curves", quick_results)
    for r in recs:
        if r["regime"] == "flow":
            assert r["t_half"] == pytest.approx(r["t_half_theory"], rel=0.15)  # grid spacing
            assert abs(r["slope"] + 1) < 0.1  # 1 - P ~ 1/t for every q
        assert r["n_censored"] == 0
    t = {(r["regime"], r["q"]): r["t_half"] for r in recs}
    assert t[("flow", 1.0)] < t[("flow", 0.5)] < t[("flow", 0.0)]
    assert t[("sampled_likelihood", 1.0)] < t[("sampled_likelihood", 0.0)]


def test_label_noise_escort_and_fitting_time(quick_results):
    recs = _records("label_noise", quick_results)
    for r in recs:
        if r["part"] == "two_label_equilibrium":
            if r["q"] == 0:
                assert all(e < s for e, s in zip(r["equilibrium"], r["start"], strict=False))
            else:
                assert r["max_rel_err"] < 1e-6 and all(r["converged"])
        if r["part"] == "two_label_fitting_time":
            # softmax breaks the paper's bounded-score assumption: the time barely depends on η
            assert abs(r["slope"]) < 0.3 and r["theory_slope"] >= 1.25
    # the bounded-score parameterisation (p~ itself, ‖∇p~‖ = 1): the paper's law holds
    direct = [r for r in recs if r["part"] == "two_label_direct_fitting_time"]
    assert {r["q"] for r in direct} == {0.25, 0.5, 0.75, 1.0} and len(direct) == 16
    for r in direct:
        assert len(r["fit_levels"]) >= 2
        assert abs(r["slope"] - (r["q"] + 1.0)) < 0.01, r
        assert abs(r["constant"] - 1.0) < (0.03 if r["q"] == 0.25 else 0.002), r
        # near the equilibrium the clean label's pull slows it: never faster than the paper
        assert min(r["ratio_to_paper"]) > 1.0 - 1e-6
    mem = {r["q"]: r for r in recs if r["part"] == "many_examples_memorisation"}
    t = {q: mem[q]["points"][-1]["time"] for q in mem}
    assert t[1.0] < t[0.5] < t[0.25]


def test_estimator_bias_signs_and_identities(quick_results):
    recs = _records("estimator_bias", quick_results)
    by = {(r["mode"], round(r["P"], 6), r["q"], r["estimator"]): r for r in recs}
    for (mode, P, q, e), r in by.items():
        rel = np.array(r["rel_bias"])
        if e in ("garl", "garl_rloo"):
            if q == 0:
                assert np.all(np.abs(rel) < 1e-10)  # unbiased at q = 0
            else:
                assert np.all(rel < 0)  # GARL under-amplifies: E[ĝ] = (1+r) g*, r < 0
            other = by[(mode, P, q, "garl_rloo" if e == "garl" else "garl")]
            np.testing.assert_allclose(rel, other["rel_bias"], atol=1e-10)  # Prop. 6.2
            if mode == "verifier":
                assert np.all(np.array(r["orthogonal_rel"]) < 1e-10)  # scalar multiple
        if e == "paft":
            extra = np.array(r["paft_extra_variance"])
            assert np.all(extra > -0.02 * np.array(r["variance"]))  # D.4 up to MC noise
            garl = by[(mode, P, q, "garl")]
            n = len(r["rel_bias"])
            np.testing.assert_allclose(r["rel_bias"], garl["rel_bias"][:n], atol=0.03)  # D.3
            # ... and within 4 Monte Carlo standard errors of it (PAFT's resamplings)
            se = np.array(r["rel_bias_se"])
            assert np.all(se > 0) and np.all(se < 0.01)
            diff = np.abs(np.array(r["rel_bias"]) - np.array(garl["rel_bias"][:n]))
            assert np.all(diff <= 4 * se + 1e-12), (mode, P, q, diff / se)
    # the leading term where it applies (M·P ≫ 1), and the MaxRL identity at q = 1
    r = by[("verifier", 0.3, 0.5, "garl")]
    assert r["rel_bias"][-1] == pytest.approx(r["leading_rel_bias"][-1], rel=0.15)
    r1 = by[("verifier", 0.3, 1.0, "garl")]
    Ms = np.array(r1["M"])
    np.testing.assert_allclose(r1["rel_bias"], -(0.7**Ms), atol=1e-10)
    lik = by[("likelihood", round(0.126, 6), 0.5, "garl")]
    assert lik["rel_bias"][-1] == pytest.approx(lik["leading_rel_bias"][-1], rel=0.2)
    assert min(lik["cosine"]) < 0.99  # continuous weights also turn the direction
    r0 = by[("verifier", 0.05, 0.5, "garl")]  # M·P ≪ 1: r -> (MP)^q - 1 > -1, and the
    MP = r0["M"][0] * r0["P"]  # leading term is vacuous there (it predicts r < -1)
    assert r0["rel_bias"][0] == pytest.approx(MP**0.5 - 1, abs=0.02)
    assert r0["leading_rel_bias"][0] < -1 < r0["rel_bias"][0]


def test_grpo_sits_near_q_half(quick_results):
    recs = _records("grpo_q_axis", quick_results)
    for r in recs:
        assert r["max_rel_err_vs_theory"] < 1e-9  # estimator enumeration == theory formula
        if r["range"] == "MP<=0.1":
            assert abs(r["slope"]) < 0.05  # capped: no amplification at all
    g = [r for r in recs if r["estimator"] == "grpo" and r["M"] == 64 and r["range"] == "MP>=4"]
    assert 0.3 < g[0]["slope"] < 0.6
    assert not math.isnan(g[0]["slope_ci"][0])
