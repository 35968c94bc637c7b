"""Adam's ε against the q axis: the threshold prediction, the Adam trainers, the quick preset."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sims.experiments import adam_threshold as A
from sims.experiments import get_experiment
from sims.models import LatentCategorical, Sigmoid
from sims.runner import run_experiment
from sims.sampled import train_sampled

# --------------------------------------------------------------------------------------------
# train_sampled: the configurable ε leaves the default path unchanged


def _latent_adam_run(max_steps=400, **kw):
    m = LatentCategorical(K=4)
    th = np.stack([m.init(p) for p in (1e-3, 1e-6, 1e-12, 1e-3, 1e-6, 1e-12)])
    keys = np.arange(6, dtype=np.int64) * 7919 + 11
    return train_sampled(
        m, th, keys, q=np.array([0.5, 0.75, 0.75, 1.0, 0.25, 1.0]), M=8,
        lr=np.array([0.01, 0.01, 0.02, 0.01, 0.05, 0.01]), estimator="garl_rloo",
        mode="likelihood", optimizer="adam", max_steps=max_steps,
        record_steps=[0, 50, 150, 399] if max_steps == 400 else [0, max_steps - 1], **kw,
    )  # fmt: skip


# computed with the hard-coded ε = 1e-8, β = (0.9, 0.999) before ε became configurable
# (bit-identical on the machine of that change; CPUs may differ in the last ulp of reductions)
_OLD_STEPS = [400, 400, 400, 400, 150, 400]
_OLD_CURVES = [
    ["0x1.0624dd2f1a9fap-10", "0x1.9ae94476e3f6ap-10",
     "0x1.91529aaace8a6p-8", "0x1.d7361473e5fefp-2"],
    ["0x1.0c6f7a0b5ed91p-20", "0x1.a5d0ae07d22b6p-20",
     "0x1.88dc7bd47dd1ep-18", "0x1.a07d6e4f40c01p-12"],
    ["0x1.19799812dea0dp-40", "0x1.6b448aec49237p-39",
     "0x1.e73c96a340202p-35", "0x1.9a2972ed4dd38p-20"],
    ["0x1.0624dd2f1a9fap-10", "0x1.96bddfc8a334cp-10",
     "0x1.3f19e0bb0f249p-8", "0x1.b00f2a1542b8ep-4"],
    ["0x1.0c6f7a0b5ed91p-20", "0x1.2151a92e85484p-16",
     "0x1.021f54c7bf4e0p-1", "nan"],
    ["0x1.19799812dea0dp-40", "0x1.b596b452b5df4p-40",
     "0x1.3ca21e2ad653cp-38", "0x1.4ee392b1c48d9p-33"],
]  # fmt: skip
_OLD_SIGMOID = [
    ["0x1.773841ea8453bp-7", "0x1.2c1db35aca41dp-5", "0x1.eff5bc14540fdp-1"],
    ["0x1.47ae147ae147cp-7", "0x1.1001a4ad959a6p-5", "0x1.eee065a2462cfp-1"],
    ["0x1.647ba3371186ep-7", "0x1.4e61213011eefp-6", "0x1.edb640eb726cep-1"],
]


def _hex_array(rows):
    return np.array([[float.fromhex(x) if x != "nan" else np.nan for x in r] for r in rows])


def test_default_adam_matches_values_from_before_eps_was_configurable():
    r = _latent_adam_run()
    assert r.steps.tolist() == _OLD_STEPS
    np.testing.assert_allclose(r.curves, _hex_array(_OLD_CURVES), rtol=1e-12, atol=0)
    s = Sigmoid()
    r2 = train_sampled(
        s, np.stack([s.init(1e-2)] * 3), np.array([1, 2, 3]), q=0.5, M=4, lr=0.05,
        estimator="garl", mode="verifier", optimizer="adam", max_steps=300,
        record_steps=[10, 100, 299], freeze_escaped=False,
    )  # fmt: skip
    np.testing.assert_allclose(r2.curves, _hex_array(_OLD_SIGMOID), rtol=1e-12, atol=0)


def test_explicit_default_eps_and_betas_are_bit_identical():
    ref = _latent_adam_run(120)
    for kw in (
        {"adam_eps": 1e-8},
        {"adam_eps": np.full(6, 1e-8)},
        {"adam_betas": (0.9, 0.999)},
        {"adam_eps": [1e-8] * 6, "adam_betas": [0.9, 0.999]},
    ):
        r = _latent_adam_run(120, **kw)
        assert np.array_equal(r.steps, ref.steps), kw
        assert np.array_equal(r.curves, ref.curves, equal_nan=True), kw


def test_per_row_eps_is_each_rows_own_setting():
    eps = np.array([1e-6, 1e-10, 1e-8, 1e-6, 1e-10, 1e-8])
    batched = _latent_adam_run(120, adam_eps=eps)
    for e in (1e-6, 1e-10):
        alone = _latent_adam_run(120, adam_eps=e)
        rows = eps == e
        assert np.array_equal(batched.curves[rows], alone.curves[rows], equal_nan=True)
    # ε matters: the row at p0 = 1e-12, q = 0.75 starts with gradient 1e-3/4 per coordinate
    small, large = _latent_adam_run(120, adam_eps=1e-10), _latent_adam_run(120, adam_eps=1e-2)
    assert large.curves[2, -1] < 0.5 * small.curves[2, -1]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"adam_eps": 0.0}, "adam_eps"),
        ({"adam_eps": -1e-8}, "adam_eps"),
        ({"adam_eps": float("nan")}, "adam_eps"),
        ({"adam_eps": np.full(5, 1e-8)}, "adam_eps"),
        ({"adam_betas": (0.9, 1.0)}, "adam_betas"),
        ({"adam_betas": (0.9,)}, "adam_betas"),
        ({"adam_betas": "ab"}, "adam_betas"),
    ],
)
def test_adam_options_are_validated(kw, match):
    with pytest.raises(ValueError, match=match):
        _latent_adam_run(3, **kw)


# --------------------------------------------------------------------------------------------
# the prediction, its budget refinement, the score scale


@settings(max_examples=60, deadline=None)
@given(
    log_p0=st.floats(-70.0, -1.0),
    log_eps=st.floats(-30.0, -1.0),
    s=st.floats(1e-3, 1.0),
)
@example(log_p0=math.log(1e-12), log_eps=math.log(1e-8), s=1.0)
def test_predicted_q_star_is_where_the_start_gradient_equals_eps(log_p0, log_eps, s):
    p0, eps = math.exp(log_p0), math.exp(log_eps)
    q = A.predicted_q_star(p0, eps, s)
    assert q == pytest.approx(1 - math.log(eps / s) / math.log(p0), rel=1e-12, abs=1e-12)
    # g0 = p0^(1-q*)·s = ε, in logs
    assert (1 - q) * log_p0 + math.log(s) == pytest.approx(log_eps, rel=1e-9, abs=1e-9)


def test_predicted_q_star_values_and_errors():
    assert A.predicted_q_star(1e-30, 1e-8, 1.0) == pytest.approx(1 - 8 / 30)
    assert A.predicted_q_star(1e-12, 1e-8, 0.25) == pytest.approx(1 - math.log10(4e-8) / -12)
    assert A.predicted_q_star(1e-6, 1e-8, 1.0) < 0  # every q escapes
    assert A.predicted_q_star(1e-6, 2.0, 1.0) > 1  # ε > s: none does
    for bad in ((0.0, 1e-8, 1.0), (1.0, 1e-8, 1.0), (1e-6, 0.0, 1.0), (1e-6, 1e-8, -1.0)):
        with pytest.raises(ValueError):
            A.predicted_q_star(*bad)


@settings(max_examples=60, deadline=None)
@given(
    log_p0=st.floats(-70.0, -5.0),
    log_eps=st.floats(-25.0, -4.0),
    budget=st.integers(10, 10**6),
)
def test_budget_q_star_solves_its_equation(log_p0, log_eps, budget):
    p0, eps, s, lr = math.exp(log_p0), math.exp(log_eps), 1.0, 0.01
    q = A.budget_q_star(p0, eps, s, lr, budget)
    assert 0.0 <= q <= 1.0
    steps = lambda q_: eps / (lr * (1 - q_) * s * p0 ** (1 - q_))  # noqa: E731
    if 0.0 < q < 1.0:
        assert steps(q) == pytest.approx(budget, rel=1e-6)
    if q == 0.0:
        assert steps(0.0) <= budget
    # with lr·budget > 1/(1-q) it only lowers the threshold
    if lr * budget > 1 / (1 - min(q, 0.99)):
        assert q <= max(A.predicted_q_star(p0, eps, s), 0.0) + 1e-9


@settings(max_examples=40, deadline=None)
@given(log_p0=st.floats(-70.0, -2.0), log_eps=st.floats(-25.0, -4.0), s=st.floats(0.05, 1.0),
       lr=st.floats(1e-3, 0.1))  # fmt: skip
def test_two_phase_steps_matches_its_closed_forms_at_q_0_and_1(log_p0, log_eps, s, lr):
    """T = T_eps + T_lr; at q = 0 and q = 1 the integral ∫ dP/(P^(2-q)(1-P)²) has closed forms,
    which the quadrature must reproduce; in between T_eps is the one-phase ε/(lr(1-q)s·p0^(1-q))
    up to the end of the path."""
    p0, eps = math.exp(log_p0), math.exp(log_eps)
    c = s / (1 - p0)
    F0 = lambda P: -1 / P + 2 * math.log(P) - 2 * math.log1p(-P) + 1 / (1 - P)  # noqa: E731
    F1 = lambda P: math.log(P) - math.log1p(-P) + 1 / (1 - P)  # noqa: E731
    for q, F in ((0.0, F0), (1.0, F1)):
        r = A.two_phase_steps(p0, q, eps, s, lr)
        assert r["T_lr"] == pytest.approx((math.log1p(-p0) - math.log(p0)) / lr, rel=1e-12)
        assert r["total"] == pytest.approx(r["T_eps"] + r["T_lr"], rel=1e-12)
        assert r["T_eps"] == pytest.approx(eps / (lr * c) * (F(0.5) - F(p0)), rel=1e-6)
    if p0 < 1e-6:
        for q in (0.25, 0.5, 0.75):
            one = eps / (lr * (1 - q) * s * p0 ** (1 - q))
            assert A.two_phase_steps(p0, q, eps, s, lr)["T_eps"] == pytest.approx(one, rel=0.05)


@settings(max_examples=40, deadline=None)
@given(log_p0=st.floats(-70.0, -3.0), log_eps=st.floats(-25.0, -4.0),
       budget=st.integers(10, 10**6))  # fmt: skip
def test_two_phase_q_star_solves_its_equation(log_p0, log_eps, budget):
    p0, eps, s, lr = math.exp(log_p0), math.exp(log_eps), 1.0, 0.01
    q = A.two_phase_q_star(p0, eps, s, lr, budget)
    total = lambda q_: A.two_phase_steps(p0, q_, eps, s, lr)["total"]  # noqa: E731
    if q is None:  # even q = 1 needs more than the budget
        assert total(1.0) > budget
        return
    assert 0.0 <= q <= 1.0 and total(q) <= budget * (1 + 1e-9)
    if q > 0.0:
        assert total(q) == pytest.approx(budget, rel=1e-6)
    # the second phase only raises the threshold over the one-phase rule
    assert q >= A.budget_q_star(p0, eps, s, lr, budget) - 1e-9


def test_two_phase_validates():
    for bad in ((0.0, 0.5, 1e-8, 1.0, 0.01), (1e-6, 1.5, 1e-8, 1.0, 0.01),
                (1e-6, 0.5, 0.0, 1.0, 0.01), (1e-6, 0.5, 1e-8, 1.0, -1.0)):  # fmt: skip
        with pytest.raises(ValueError):
            A.two_phase_steps(*bad)
    with pytest.raises(ValueError, match="budget"):
        A.two_phase_q_star(1e-6, 1e-8, 1.0, 0.01, 0)
    assert A.two_phase_steps(0.7, 0.5, 1e-8, 1.0, 0.01)["total"] == 0.0


def test_score_scale_from_the_model():
    assert A.score_scale(Sigmoid(), Sigmoid().init(1e-6)) == pytest.approx(1 - 1e-6)
    lat = LatentCategorical(K=4)
    assert A.score_scale(lat, lat.init(1e-12)) == pytest.approx(0.25)
    assert A.score_scale(LatentCategorical(K=8), LatentCategorical(K=8).init(0.2)) == (
        pytest.approx(0.8 / 8)
    )


# --------------------------------------------------------------------------------------------
# the deterministic Adam trainer


def test_adam_exact_matches_train_sampled_on_the_deterministic_sigmoid():
    """Sigmoid in likelihood mode: every sample teacher-forces y*, w = P, so plug-in GARL's
    update is exactly P^(1-q)(1-P) = -∂ℓ_q/∂θ; the two Adam implementations must agree."""
    s = Sigmoid()
    p0 = [1e-4, 1e-8, 1e-12, 1e-6]
    q = np.array([0.0, 0.5, 0.75, 1.0])
    eps = np.array([1e-8, 1e-8, 1e-10, 1e-6])
    th = np.stack([s.init(p) for p in p0])
    a_steps, a_cens = A.adam_exact_escape(s, th, q, 0.05, eps, 3000)
    r = train_sampled(
        s, th, np.arange(4), q=q, M=4, lr=0.05, estimator="garl", mode="likelihood",
        optimizer="adam", adam_eps=eps, max_steps=3000,
    )  # fmt: skip
    assert np.all(np.abs(a_steps - r.steps) <= 1), (a_steps, r.steps)
    assert np.array_equal(a_cens, r.censored)
    assert not a_cens[[1, 2, 3]].any()


def test_adam_exact_validates_and_censors():
    s = Sigmoid()
    th = s.init(1e-12)[None]
    steps, cens = A.adam_exact_escape(s, th, 0.0, 0.01, 1e-8, 50)
    assert steps.tolist() == [50] and cens.tolist() == [True]
    steps, cens = A.adam_exact_escape(s, s.init(0.7)[None], 0.0, 0.01, 1e-8, 50)
    assert steps.tolist() == [0] and cens.tolist() == [False]
    for kw in ({"q": 1.5}, {"lr": 0.0}, {"eps": -1.0}, {"max_steps": 0}):
        args = {"q": 0.5, "lr": 0.01, "eps": 1e-8, "max_steps": 10, **kw}
        with pytest.raises(ValueError):
            A.adam_exact_escape(s, th, args["q"], args["lr"], args["eps"], args["max_steps"])
    with pytest.raises(ValueError, match="theta0"):
        A.adam_exact_escape(s, np.zeros((1, 2)), 0.5, 0.01, 1e-8, 10)


def test_measured_q_star_definition():
    f = A.measured_q_star
    assert f([0, 0.5, 1], [True, True, True]) == {"q_star": 0.0, "q_below": None,
                                                  "stalled_above": []}  # fmt: skip
    assert f([1, 0, 0.5], [True, False, False]) == {"q_star": 1.0, "q_below": 0.5,
                                                    "stalled_above": []}  # fmt: skip
    assert f([0, 0.5, 1], [False] * 3)["q_star"] is None
    assert f([0, 0.5, 0.75, 1], [False, True, True, False])["stalled_above"] == [1.0]
    with pytest.raises(ValueError):
        f([0, 1], [True])


# --------------------------------------------------------------------------------------------
# the quick preset: what it must establish


@pytest.fixture(scope="module")
def quick_records(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "sims_quick_results"  # shared with the figure test
    exp = get_experiment("adam_threshold")
    return exp.analyze(run_experiment(exp, quick=True, out=root, progress=False))


def test_records_carry_the_fields(quick_records):
    need = {"experiment", "model", "mode", "estimator", "optimizer", "adam_eps", "q", "p0", "M",
            "median_steps", "n_runs", "n_censored"}  # fmt: skip
    esc = [r for r in quick_records if r["record"] == "escape"]
    qs = [r for r in quick_records if r["record"] == "q_star"]
    assert esc and qs
    for r in esc:
        assert need <= set(r) and r["optimizer"] == "adam"
        assert (r["M"] is None) == (r["mode"] == "exact_gradient")
    for r in qs:
        assert {"q_star_measured", "q_star_predicted", "model", "adam_eps", "p0"} <= set(r)


def _by(records, part, budget=None):
    """Escape and q* records of one part keyed by (ε, p0[, q]); q* at the runs' own budget, or
    at ``budget`` (the truncated re-reading of the deterministic parts)."""
    esc = {(r["adam_eps"], r["p0"], r["q"]): r for r in records
           if r["record"] == "escape" and r["part"] == part}  # fmt: skip
    own = lambda r: r["truncated_from"] is None if budget is None else r["budget"] == budget  # noqa: E731
    qs = {(r["adam_eps"], r["p0"]): r for r in records
          if r["record"] == "q_star" and r["part"] == part and own(r)}  # fmt: skip
    return esc, qs


@pytest.mark.parametrize("part", ["exact", "sampled"])
def test_threshold_sides_at_the_smallest_p0(quick_records, part):
    esc, qs = _by(quick_records, part)
    p_min = min(p for _, p in qs)
    assert p_min < 1e-29
    for eps in (1e-6, 1e-8, 1e-10):
        pred = qs[(eps, p_min)]["q_star_predicted"]
        for (e, p, q), r in esc.items():
            if e != eps or p != p_min:
                continue
            if q <= pred - 0.1:  # g0 ≤ ε·p0^0.1 = 1e-3·ε: stalled within the budget
                assert r["median_censored"] and r["n_censored"] == r["n_runs"], (eps, q, r)
            if q >= pred:  # at or above the threshold: escapes, every seed
                assert r["n_censored"] == 0, (eps, q, r)


@pytest.mark.parametrize("part", ["exact", "sampled"])
def test_measured_q_star_between_budget_bound_and_prediction(quick_records, part):
    """Where the hypothesis holds: every grid q ≥ the predicted q* escapes (so the measured q*
    is at most one grid cell above it), and every grid q below the budget-aware threshold
    stalls; the prediction lies in the measured cell or within 0.1 of it."""
    esc, qs = _by(quick_records, part)
    for (eps, p0), r in qs.items():
        pred, low = r["q_star_predicted"], r["q_star_budget"]
        for (e, p, q), x in esc.items():
            if (e, p) != (eps, p0):
                continue
            if q >= pred - 1e-9:
                assert not x["median_censored"], (eps, p0, q)
            if q < low - 1e-9:
                assert x["median_censored"], (eps, p0, q)
        assert r["stalled_above"] == []
        # the prediction bounds the threshold from above: the cell (q_below, q*] starts below it
        assert r["q_below"] is None or r["q_below"] < pred + 1e-9
        if not (part == "exact" and (eps, p0) == (1e-10, 1e-12)):
            assert r["prediction_gap"] <= 0.1, r
        # the budget-aware threshold ε/(lr·(1-q)·s·p0^(1-q)) = budget lands in the measured cell
        assert r["budget_in_cell"], r


def test_where_the_hypothesis_fails(quick_records):
    """g0 < ε does not stall for good: below ε Adam is SGD with step lr/ε.  At p0 = 1e-12,
    ε = 1e-10 the prediction is q* = 1/6, yet q = 0 (g0 = 1e-12 = ε/100) escapes within the
    budget, after ≈ ε/(lr·g0) = 1e4 steps, ~10x slower than q = 0.25."""
    esc, qs = _by(quick_records, "exact")
    r = qs[(1e-10, 1e-12)]
    assert r["q_star_predicted"] == pytest.approx(1 / 6, abs=1e-6)
    assert r["q_star_measured"] == 0.0 and not r["prediction_in_cell"]
    assert r["prediction_gap"] > 0.15
    slow, fast = esc[(1e-10, 1e-12, 0.0)]["median_steps"], esc[(1e-10, 1e-12, 0.25)]["median_steps"]
    assert 5e3 < slow < 2e4 and slow > 8 * fast
    assert r["q_star_budget"] == 0.0  # the budget-aware threshold accounts for it


def test_fastest_q_moves_up_with_smaller_p0_and_larger_eps(quick_records):
    esc, qs = _by(quick_records, "exact")
    eps_list = (1e-10, 1e-8, 1e-6)
    p0_list = sorted({p for _, p in qs}, reverse=True)
    for eps in eps_list:  # smaller p0 -> the fastest q never moves down
        f = [qs[(eps, p)]["fastest_q"] for p in p0_list]
        assert f == sorted(f), (eps, f)
        assert f[-1] > f[0]
    for p in p0_list:  # larger ε -> the fastest q never moves down
        f = [qs[(eps, p)]["fastest_q"] for eps in eps_list]
        assert f == sorted(f), (p, f)
    for part in ("exact", "sampled"):
        esc, qs = _by(quick_records, part)
        p_min = min(p for _, p in qs)
        for eps in eps_list:
            r = qs[(eps, p_min)]
            grid = sorted({q for (e, p, q) in esc if (e, p) == (eps, p_min)})
            i = grid.index(r["q_star_measured"])
            # the fastest q sits at the threshold or one grid step above it, never at q = 1 ...
            assert r["fastest_q"] in grid[i : i + 2] and r["fastest_q"] < 1.0
            # ... and q = 1 is over 1.8x slower (the paper's Table 1 pattern)
            t1 = esc[(eps, p_min, 1.0)]["median_steps"]
            assert t1 > 1.8 * esc[(eps, p_min, r["fastest_q"])]["median_steps"]


def test_short_v_memory_takes_the_two_phase_time_long_memory_is_faster(quick_records):
    """β2 = 0.95 (v̂ memory ~20 steps): every escaping q takes the lag-free two-phase time,
    ≈ log(1/p0)/lr above the threshold.  β2 = 0.999 on the same (ε, p0): the fastest q is under
    0.6 of it (a v̂ lagging a growing gradient makes steps > lr), while q = 1, whose gradient
    (1 - P) does not grow, still takes it."""
    esc_s, qs_s = _by(quick_records, "exact_short_memory")
    esc_l, qs_l = _by(quick_records, "exact")
    assert len(qs_s) == 6
    for (eps, p0), r in qs_s.items():
        assert r["adam_betas"] == [0.9, 0.95]
        for q in A.Q_FINE:
            x = esc_s[(eps, p0, q)]
            if not x["median_censored"]:
                assert 0.9 < x["steps_ratio"] < 1.1, (eps, p0, q, x["steps_ratio"])
                if q > r["q_star_measured"]:
                    assert 0.9 < x["median_steps"] * x["lr"] / math.log(1 / p0) < 1.1
        fast = esc_l[(eps, p0, qs_l[(eps, p0)]["fastest_q"])]
        assert fast["steps_ratio"] < 0.6, (eps, p0, fast)
        assert 0.95 < esc_l[(eps, p0, 1.0)]["steps_ratio"] < 1.1
        # the threshold itself does not depend on the v̂ memory here
        assert r["q_star_measured"] == qs_l[(eps, p0)]["q_star_measured"]


def test_second_phase_decides_at_a_small_budget(quick_records):
    """lr·budget = 20 (budget 2000): log(1/p0)/lr > 2000 for p0 ≤ 1e-9, so q = 1 cannot escape
    and the one-phase rule, which says every q ≥ its q* escapes, is wrong on some grid q in every
    such cell; the two-phase rule calls every grid q right without moment lag (β2 = 0.95)."""
    for part in ("exact", "exact_short_memory"):
        esc, qs = _by(quick_records, part, budget=A.SHORT_BUDGET)
        assert qs
        for (eps, p0), r in qs.items():
            assert r["truncated_from"] == 20000
            if p0 <= 1e-9:
                one = esc[(eps, p0, 1.0)]
                assert one["median_steps"] > A.SHORT_BUDGET  # q = 1 stalls at this budget
                assert not r["one_phase_every_q"], (part, eps, p0)
                assert r["q_star_two_phase"] is None
            if part == "exact_short_memory":
                assert r["two_phase_every_q"], (eps, p0, r)
    for part in ("exact", "exact_short_memory", "sampled"):  # at the runs' own budget
        _, qs = _by(quick_records, part)
        assert all(r["two_phase_in_cell"] for r in qs.values()), part
