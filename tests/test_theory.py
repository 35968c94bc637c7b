"""Closed-form theory (Sections 3-5, Appendices B-C) against quadrature, ODE solves and
numerical minimisation."""

import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from scipy import integrate, optimize

from tsallis import loss_q, theory
from tsallis.theory import (
    chain_escape_time,
    dispersion_gap,
    dispersion_gap_leading,
    escape_integral,
    escape_time_bounds,
    escort,
    flow_escape_time,
    karm_escape_time,
    maxrl_objective,
    noise_equilibrium,
    noise_fitting_time,
    sampled_escape_steps,
    sampled_update_scale,
    sigmoid_escape_time,
    sigmoid_escape_time_asymptotic,
    sigmoid_flow_time,
    speedup_ratio,
)

# A table of sigmoid flow escape times to δ = 1/2 (unit rate), worked out independently.
TABLE = {
    (1e-2, 0.0): 108.2, (1e-2, 0.5): 20.83, (1e-2, 1.0): 5.585,
    (1e-4, 0.0): 10017, (1e-4, 0.5): 201.2, (1e-4, 1.0): 10.21,
    (1e-6, 0.0): 1000027, (1e-6, 0.5): 2001, (1e-6, 1.0): 14.82,
}  # fmt: skip


@pytest.mark.parametrize("key", sorted(TABLE))
def test_sigmoid_escape_time_matches_worked_table(key):
    p0, q = key
    assert sigmoid_escape_time(p0, q) == pytest.approx(TABLE[key], rel=5e-4)


@pytest.mark.parametrize("p0", [1e-2, 1e-4, 1e-6])
def test_sigmoid_closed_forms_to_one_half(p0):
    q0 = 1 / p0 - 1 / (1 - p0) + 2 * math.log((1 - p0) / p0)
    q1 = math.log((1 - p0) / p0) + (1 - 2 * p0) / (1 - p0)
    assert sigmoid_escape_time(p0, 0.0) == pytest.approx(q0, rel=1e-13)
    assert sigmoid_escape_time(p0, 1.0) == pytest.approx(q1, rel=1e-13)


@given(
    p0=st.floats(1e-8, 0.49),
    q=st.floats(0.0, 1.0),
    delta=st.floats(0.05, 0.97),
)
@example(p0=1e-8, q=0.999999, delta=0.5)
@example(p0=0.3, q=1e-9, delta=0.97)
@example(p0=0.49, q=0.5, delta=0.51)
def test_sigmoid_flow_time_matches_scipy_quad(p0, q, delta):
    lo, hi = min(p0, delta), max(p0, delta)

    def integrand(s):  # u = e^s
        u = math.exp(s)
        return u ** (q - 1) / (1 - u) ** 2

    edges = np.linspace(math.log(lo), math.log(hi), 40)
    ref = sum(
        integrate.quad(integrand, a, b, epsrel=1e-13, epsabs=0)[0]
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    )
    assert sigmoid_flow_time(lo, hi, q) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("q", [0.0, 0.3, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("p0", [1e-2, 1e-4])
def test_sigmoid_escape_time_matches_ode_solve_of_the_flow(p0, q):
    # θ' = -∂ℓ_q/∂θ = P^(-q)·σ'(θ) = P^(1-q)(1-P) for P = σ(θ); stop at P = 1/2 (θ = 0).
    def rhs(t, th):
        p = 1 / (1 + math.exp(-th[0]))
        return [p ** (1 - q) * (1 - p)]

    def reached(t, th):
        return th[0]

    reached.terminal = True
    th0 = math.log(p0 / (1 - p0))
    sol = integrate.solve_ivp(
        rhs, (0, 1e7), [th0], events=reached, rtol=1e-10, atol=1e-12, method="LSODA"
    )
    t_hit = sol.t_events[0][0]
    assert t_hit == pytest.approx(sigmoid_escape_time(p0, q), rel=1e-6)


@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_asymptotics_are_leading_order(q):
    ratios = [
        sigmoid_escape_time(p0, q) / sigmoid_escape_time_asymptotic(p0, q)
        for p0 in (1e-4, 1e-8, 1e-12)
    ]
    # ratio -> 1 as p0 -> 0; the q = 1 correction is O(1/log(1/p0)), the others O(p0^(1-q)).
    assert abs(ratios[-1] - 1) < (0.05 if q == 1.0 else 0.02)
    assert abs(ratios[-1] - 1) <= abs(ratios[0] - 1) + 1e-12


@given(p0=st.floats(1e-8, 0.4), q=st.floats(0.0, 1.0))
def test_theta_bounds_bracket_the_sigmoid_time(p0, q):
    # For the sigmoid ‖∇log P‖ = 1-P ∈ [1/2, 1-p0] on the way to δ = 1/2 (Thm 5.1).
    lo, hi = escape_time_bounds(p0, q, c=0.5, C=1 - p0)
    t = sigmoid_escape_time(p0, q)
    assert lo * (1 - 1e-12) <= t <= hi * (1 + 1e-12)
    edges = np.linspace(math.log(p0), math.log(0.5), 30)  # u = e^s: integrand u^(q-1)
    ref = sum(
        integrate.quad(lambda s: math.exp((q - 1) * s), a, b, epsrel=1e-13)[0]
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    )
    assert escape_integral(p0, q) == pytest.approx(ref, rel=1e-9)


def test_speedup_ratio_scales_as_power_of_p0():
    # T_q/T_q' = Θ(p0^-(q'-q)): the log-log slope of the ratio in 1/p0 is q'-q.
    p0 = np.array([1e-6, 1e-8])
    r = speedup_ratio(p0, 0.25, 0.75)
    slope = np.log(r[1] / r[0]) / np.log(p0[0] / p0[1])
    assert slope == pytest.approx(0.5, abs=0.01)


def test_near_the_optimum_q_does_not_matter():
    # Prop. C.1: the time from 1-ε0 to 1-ε1 agrees across q to 1 + O(ε0).
    for eps0 in (1e-2, 1e-3):
        times = [sigmoid_flow_time(1 - eps0, 1 - 1e-6, q) for q in (0.0, 0.5, 1.0)]
        assert max(times) / min(times) - 1 < 2 * eps0


def test_karm_and_chain_times_reduce_to_the_sigmoid():
    t_sig = sigmoid_escape_time(1e-3, 0.6)
    assert karm_escape_time(1e-3, 0.6, K=10) == pytest.approx(0.9 * t_sig, rel=1e-12)
    assert karm_escape_time(0.3, 0.6, K=10, k=3) == pytest.approx(
        2.1 * sigmoid_escape_time(0.3, 0.6)
    )
    assert chain_escape_time(1e-3, 0.6, L=1, V=2) == pytest.approx(t_sig / 2, rel=1e-9)
    with pytest.raises(ValueError, match="K >= 2"):
        karm_escape_time(0.1, 0.5, K=1)


def test_chain_escape_time_matches_an_ode_solve_of_the_chain():
    # L = 3 steps over V = 5 tokens, symmetric start: a = P^(1/L); the logit gap g between the
    # target and each wrong token has a = e^g/(e^g + V - 1); the flow moves g by
    # dg/dt = P^(1-q)·(1-a)·V/(V-1) (each step's target logit minus a wrong one).
    L, V, q, p0 = 3, 5, 0.5, 1e-4
    a0 = p0 ** (1 / L)
    g0 = math.log(a0 * (V - 1) / (1 - a0))

    def rhs(t, y):
        a = 1 / (1 + (V - 1) * math.exp(-y[0]))
        return [(a**L) ** (1 - q) * (1 - a) * V / (V - 1)]

    def reached(t, y):
        a = 1 / (1 + (V - 1) * math.exp(-y[0]))
        return a**L - 0.5

    reached.terminal = True
    sol = integrate.solve_ivp(rhs, (0, 1e7), [g0], events=reached, rtol=1e-10, atol=1e-12)
    assert sol.t_events[0][0] == pytest.approx(chain_escape_time(p0, q, L, V), rel=1e-6)


def test_flow_escape_time_validates():
    with pytest.raises(TypeError, match="callable"):
        flow_escape_time(0.1, 0.5, 3.0)
    with pytest.raises(ValueError, match="p0 <= delta"):
        flow_escape_time(0.6, 0.5, lambda u: 1.0)


@given(
    alpha=st.lists(st.floats(0.01, 1.0), min_size=2, max_size=5),
    q=st.floats(0.2, 1.0),
)
@example(alpha=[0.2, 0.8], q=1.0)
@example(alpha=[0.5, 0.3, 0.2], q=0.2)
def test_escort_is_the_minimiser_on_the_simplex(alpha, q):
    alpha = np.asarray(alpha) / np.sum(alpha)

    def objective(logits):
        theta = np.exp(logits - logits.max())
        theta /= theta.sum()
        return float(np.sum(alpha * loss_q(theta, q)))

    best = optimize.minimize(
        objective, np.zeros(len(alpha)), method="BFGS", options={"gtol": 1e-10}
    )
    theta = np.exp(best.x - best.x.max())
    theta /= theta.sum()
    want = escort(alpha, q)
    assert objective(np.log(want)) <= best.fun + 1e-10
    assert theta == pytest.approx(want, abs=2e-4)


def test_escort_endpoints_and_sharpening():
    alpha = np.array([0.2, 0.3, 0.5])
    assert escort(alpha, 1.0) == pytest.approx(alpha)
    assert escort(alpha, 0.0).tolist() == [0.0, 0.0, 1.0]
    assert escort([0.5, 0.5, 0.0], 0.0).tolist() == [0.5, 0.5, 0.0]
    modes = [escort(alpha, q)[-1] for q in (1.0, 0.75, 0.5, 0.25, 0.05)]
    assert np.all(np.diff(modes) > 0)  # smaller q is sharper
    assert modes[-1] == pytest.approx(1.0, abs=1e-4)
    # q-log score is proper only at q = 1: reporting α itself is not optimal for q < 1.
    assert not np.allclose(escort(alpha, 0.5), alpha)


@given(P=st.lists(st.floats(0.01, 1.0), min_size=2, max_size=6), q=st.floats(0.0, 1.0))
def test_dispersion_gap_is_nonnegative(P, q):
    # Prop. B.1: J_Q >= -log_q(mean P), equality iff constant.
    assert dispersion_gap(P, q) >= -1e-12
    assert abs(dispersion_gap([P[0]] * len(P), q)) < 1e-12


def test_dispersion_gap_second_order_term():
    for q in (0.25, 0.5, 1.0):
        for spread in (1e-2, 1e-3):
            P = np.array([0.3 - spread, 0.3 + spread])
            exact = dispersion_gap(P, q)
            assert exact == pytest.approx(dispersion_gap_leading(P, q), rel=20 * spread)


@pytest.mark.parametrize("q", [0.25, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("eps", [0.05, 0.2, 0.4])
def test_noise_equilibrium_minimises_the_noisy_objective(q, eps):
    objective = lambda c: (1 - eps) * loss_q(1 - c, q) + eps * loss_q(c, q)  # noqa: E731
    res = optimize.minimize_scalar(objective, bounds=(1e-12, 0.5), method="bounded",
                                   options={"xatol": 1e-12})  # fmt: skip
    assert noise_equilibrium(eps, q) == pytest.approx(res.x, rel=1e-5, abs=1e-10)
    # the escort of (1-ε, ε) is the same point
    assert noise_equilibrium(eps, q) == pytest.approx(escort([1 - eps, eps], q)[1], rel=1e-12)


def test_noise_equilibrium_limits_and_fitting_time():
    assert noise_equilibrium(0.2, 1.0) == pytest.approx(0.2)
    assert noise_equilibrium(0.2, 0.0) == 0.0
    assert noise_equilibrium(0.2, 0.05) < 1e-10
    assert noise_fitting_time(0.01, 0.1, 1.0) == pytest.approx(0.01**2 / (2 * 0.1))
    with pytest.raises(ValueError, match=r"\[0, 1/2\)"):
        noise_equilibrium(0.5, 0.5)


@given(P=st.floats(1e-6, 0.999), M=st.integers(1, 200), q=st.floats(0.0, 1.0))
@example(P=1e-6, M=200, q=1.0)
def test_sampled_update_scale_bounds(P, M, q):
    # the sampled-trap bounds: M^(q-1)(1-(1-P)^M) <= c <= min(M^q P, P^(1-q)).
    c = sampled_update_scale(P, M, q)
    lower = M ** (q - 1) * (1 - (1 - P) ** M)
    upper = min(M**q * P, P ** (1 - q))
    assert lower * (1 - 1e-9) - 1e-300 <= c <= upper * (1 + 1e-9)


def test_sampled_update_scale_endpoints():
    # q = 0: E[n/M] = P; q = 1: P(n >= 1).
    assert sampled_update_scale(0.01, 16, 0.0) == pytest.approx(0.01)
    assert sampled_update_scale(0.01, 16, 1.0) == pytest.approx(1 - 0.99**16)
    # M -> ∞ recovers the flow amplification P^(1-q)
    assert sampled_update_scale(0.01, 100000, 0.5) == pytest.approx(0.1, rel=1e-3)


def test_sampled_escape_steps_and_maxrl():
    a = 0.1 * 8 ** (0.5 - 1)
    assert sampled_escape_steps(1e-4, 8, 0.5, 0.1) == pytest.approx(1 / (8e-4 * (1 - math.exp(-a))))
    # maxrl objective -> log P, and its derivative is (1-(1-P)^M)/P
    assert maxrl_objective(0.3, 200) == pytest.approx(math.log(0.3), rel=1e-12)
    h = 1e-6
    deriv = (maxrl_objective(0.3 + h, 5) - maxrl_objective(0.3 - h, 5)) / (2 * h)
    assert deriv == pytest.approx((1 - 0.7**5) / 0.3, rel=1e-7)


def test_grpo_scale_approaches_half_amplification():
    # M·P ≫ 1: E[GRPO]/∇log P -> sqrt(P/(1-P)) (∝ [P(1-P)]^(-1/2)·∇P).
    for P in (0.05, 0.3):
        assert theory.grpo_update_scale(P, 4000, eps=0.0) == pytest.approx(
            math.sqrt(P / (1 - P)), rel=5e-3
        )
    with pytest.raises(ValueError, match="M >= 2"):
        theory.grpo_update_scale(0.5, 1)
