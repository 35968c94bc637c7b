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
        assert (r["M"] is None) == (r["part"] == "exact")
    for r in qs:
        assert {"q_star_measured", "q_star_predicted", "model", "adam_eps", "p0"} <= set(r)


def _by(records, part):
    esc = {(r["adam_eps"], r["p0"], r["q"]): r for r in records
           if r["record"] == "escape" and r["part"] == part}  # fmt: skip
    qs = {(r["adam_eps"], r["p0"]): r for r in records
          if r["record"] == "q_star" and r["part"] == part}  # fmt: skip
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
