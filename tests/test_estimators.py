"""Estimators (Section 6, Appendix D; docs/conventions.md): hand values, exact expectations by
enumeration, bias, numerics, degenerate groups and input validation."""

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from latent_model import LatentModel, count_vectors, multinomial_pmf

from tsallis import estimators as est
from tsallis import theory
from tsallis.estimators import ESTIMATORS, get_estimator, rewards_to_log_w

ALL = sorted(ESTIMATORS)
NEEDS_TWO = {"garl_rloo", "rloo", "grpo"}

# ----------------------------------------------------------------------------- hand-checked group
# w = [1/2, 1/4, 1/8, 1/8], q = 1/2: w̄ = 1/4, w̄^(-1/2) = 2, leave-one-out means
# [1/6, 1/4, 7/24, 7/24]. Worked by hand in the comments.
W = torch.tensor([[0.5, 0.25, 0.125, 0.125]], dtype=torch.float64)
LOG_W = torch.log(W)
LOO = torch.tensor([1 / 6, 1 / 4, 7 / 24, 7 / 24], dtype=torch.float64)


def test_garl_hand_values():
    c = est.garl(LOG_W, 0.5)
    want = W * 2 / 4  # (w_m / w̄^q)/M
    torch.testing.assert_close(c.coef_z, want)
    torch.testing.assert_close(c.coef_y, want)
    assert float(c.log_w_mean) == pytest.approx(math.log(0.25))
    assert float(c.amplification) == pytest.approx(2.0)
    assert float(c.max_amplified_advantage) == pytest.approx(1.0 / 2.0)  # M·coef/M^q = 1/2
    assert not bool(c.stalled) and c.draw_counts is None


def test_garl_rloo_hand_values():
    c = est.garl_rloo(LOG_W, 0.5)
    c_m = W[0] * 2 - LOO.sqrt()  # [0.591752, 0, -0.290062, -0.290062]
    torch.testing.assert_close(c.coef_z[0], c_m / 4)
    torch.testing.assert_close(c.coef_y, W * 2 / 4)
    assert float(c.max_amplified_advantage) == pytest.approx((1 - math.sqrt(1 / 6)) / 2)
    assert float(c.coef_z[0, 1]) == pytest.approx(0.0, abs=1e-15)


def test_paft_hand_values():
    g = torch.Generator().manual_seed(1234)
    c = est.paft(LOG_W, 0.5, generator=g)
    n = c.draw_counts
    assert int(n.sum()) == 4
    torch.testing.assert_close(c.coef_z, 0.25**0.5 * n.double() / 4)  # w̄^(1-q)·n_m/K
    torch.testing.assert_close(c.coef_y, c.coef_z)


def test_baseline_hand_values():
    torch.testing.assert_close(est.reinforce(LOG_W).coef_z, W / 4)
    torch.testing.assert_close(est.rloo(LOG_W).coef_z[0], (W[0] - LOO) / 4)
    torch.testing.assert_close(est.rloo(LOG_W).coef_y, W / 4)
    torch.testing.assert_close(est.dr_grpo(LOG_W).coef_z, (W - 0.25) / 4)
    # verifier mode (rewards in [0, 1]): the unbiased sample std, as TRL
    std = math.sqrt((0.25**2 + 0 + 2 * 0.125**2) / 3)
    g = est.grpo(LOG_W, eps=0.0, mode="verifier")
    torch.testing.assert_close(g.coef_z, (W - 0.25) / std / 4)
    assert float(g.amplification) == pytest.approx(1 / std)
    # likelihood mode: the Bernoulli std of the reward w Rao-Blackwellises,
    # σ² = M/(M-1)·w̄(1-w̄) = (4/3)·(1/4)·(3/4) = 1/4, σ = 1/2
    g = est.grpo(LOG_W, eps=0.0)
    torch.testing.assert_close(g.coef_z, (W - 0.25) / 0.5 / 4)
    torch.testing.assert_close(g.coef_y, W / 0.5 / 4)
    assert float(g.amplification) == pytest.approx(2.0)
    torch.testing.assert_close(
        est.sft(LOG_W).coef_z, torch.tensor([[0.25, 0.0, 0.0, 0.0]], dtype=torch.float64)
    )
    torch.testing.assert_close(
        est.sft(LOG_W, threshold=0.2).coef_z,
        torch.tensor([[0.25, 0.25, 0.0, 0.0]], dtype=torch.float64),
    )


def test_verifier_mode_uses_the_same_coefficient_for_both_spans():
    log_r = rewards_to_log_w(torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
    for name in ALL:
        c = get_estimator(name)(log_r, 0.5, mode="verifier")
        torch.testing.assert_close(c.coef_y, c.coef_z)


# ----------------------------------------------------------------------------- exact expectations


def _latent(seed, K=3):
    return LatentModel.random_likelihood(K, seed)


@given(seed=st.integers(0, 10_000), q=st.floats(0.0, 1.0), M=st.integers(2, 6))
@example(seed=0, q=1.0, M=2)
@example(seed=1, q=0.0, M=6)
def test_garl_rloo_has_the_expectation_of_garl(seed, q, M):
    # Prop. 6.2: the RLOO control variate changes the variance, not the mean, for every M.
    model = _latent(seed)
    mean_plug, _ = model.moments(est.garl, q, M)
    mean_rloo, _ = model.moments(est.garl_rloo, q, M)
    torch.testing.assert_close(mean_rloo, mean_plug, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(
    "name, M",
    [(n, M) for n in ("garl", "garl_rloo", "rloo", "reinforce") for M in (1, 2, 3, 7)
     if not (n in NEEDS_TWO and M == 1)],
)  # fmt: skip
def test_q0_estimators_are_unbiased_for_every_M(name, M):
    for seed in range(3):
        model = _latent(seed)
        mean, _ = model.moments(get_estimator(name), 0.0, M)
        torch.testing.assert_close(mean, model.true_grad(0.0), rtol=1e-10, atol=1e-13)


def test_dr_grpo_is_rloo_scaled_by_m_minus_1_over_m_in_verifier_mode():
    model = LatentModel.bandit([0.3, -0.2, 0.1, 0.5], correct=[0])
    for M in (2, 5):
        mean, _ = model.moments(est.dr_grpo, 0.0, M)
        torch.testing.assert_close(mean, (M - 1) / M * model.true_grad(0.0), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("q", [0.0, 0.3, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("M", [1, 3, 8])
def test_sampled_update_scale_is_the_exact_expectation_for_01_rewards(q, M):
    # the sampled trap: E[-ĝ] = c(P, M, q)·∇log P with c = Σ Binom(n)(n/M)^(1-q).
    model = LatentModel.bandit([0.2, -0.4, 0.9, -1.0, 0.0], correct=[0, 3])
    P = float(model.success_prob())
    grad_log_p = model.grad(lambda psi: torch.log(model.success_prob(psi)))
    for name in ("garl", "garl_rloo") if M > 1 else ("garl",):
        mean, _ = model.moments(get_estimator(name), q, M)
        torch.testing.assert_close(
            -mean, theory.sampled_update_scale(P, M, q) * grad_log_p, rtol=1e-10, atol=1e-13
        )


@pytest.mark.parametrize("M", [2, 4, 9])
def test_grpo_expectation_matches_theory(M):
    model = LatentModel.bandit([0.2, -0.4, 0.9], correct=[1])
    P = float(model.success_prob())
    grad_log_p = model.grad(lambda psi: torch.log(model.success_prob(psi)))
    mean, _ = model.moments(est.grpo, 0.0, M, eps=1e-4)
    torch.testing.assert_close(
        -mean, theory.grpo_update_scale(P, M, eps=1e-4) * grad_log_p, rtol=1e-9, atol=1e-13
    )


@pytest.mark.parametrize("M", [1, 2, 5, 12])
def test_maxrl_identity_at_q1(M):
    # At q = 1 with 0/1 rewards, E[ĝ] ascends -Σ_{k<=M} (1-P)^k/k exactly.
    model = LatentModel.bandit([0.5, -0.3, 0.2, -1.2], correct=[1])
    want = model.grad(
        lambda psi: -sum((1 - model.success_prob(psi)) ** k / k for k in range(1, M + 1))
    )
    names = ("garl", "garl_rloo") if M > 1 else ("garl",)
    for name in names:
        mean, _ = model.moments(get_estimator(name), 1.0, M)
        torch.testing.assert_close(-mean, want, rtol=1e-10, atol=1e-13)


def _paft_exact_moments(model: LatentModel, q: float, M: int, K_draws: int):
    """Mean/cov of PAFT over pools and draws, from Algorithm 2's definition (independent of the
    implementation): n ~ Multinomial(K, w/Σw), ĝ = -(w̄^(1-q)/K)·Σ_m n_m ∇log p(z_m, y*)."""
    tuples, pool_probs = model.pools(M)
    score_z, score_y = model.scores()
    draws = torch.as_tensor(count_vectors(M, K_draws), dtype=torch.float64)  # [D, M]
    means, second = 0.0, 0.0
    for tup, p_pool in zip(tuples, pool_probs, strict=True):
        w = model.weights()[tup]
        draw_probs = torch.as_tensor(multinomial_pmf(draws.long().numpy(), (w / w.sum()).numpy()))
        coef = w.mean() ** (1 - q) * draws / K_draws  # [D, M]
        g = -(coef @ (score_z[tup] + score_y[tup]))  # [D, 2K]
        means = means + p_pool * (draw_probs[:, None] * g).sum(0)
        second = second + p_pool * torch.einsum("d,di,dj->ij", draw_probs, g, g)
    return means, second - torch.outer(means, means)


@pytest.mark.parametrize("q", [0.0, 0.5, 1.0])
def test_paft_is_garl_in_expectation_with_more_variance(q):
    # Prop. D.3: E[PAFT | pool] = GARL plug-in; Prop. D.4: Cov(PAFT) ⪰ Cov(GARL) (total variance).
    model = _latent(7)
    M = 3
    mean_garl, cov_garl = model.moments(est.garl, q, M)
    mean_paft, cov_paft = _paft_exact_moments(model, q, M, K_draws=M)
    torch.testing.assert_close(mean_paft, mean_garl, rtol=1e-10, atol=1e-13)
    extra = torch.linalg.eigvalsh(cov_paft - cov_garl)
    assert extra.min() > -1e-12
    assert torch.trace(cov_paft) > torch.trace(cov_garl)  # strict: several pools have >= 2 weights


def test_paft_sampler_draws_from_the_posterior():
    # The implementation's draws: mean coefficients over many resamplings of one pool equal
    # GARL's (Prop. D.3), within 4 standard errors.
    q, N = 0.5, 40_000
    log_w = LOG_W.expand(N, 4).contiguous()
    c = est.paft(log_w, q, generator=torch.Generator().manual_seed(0))
    garl = est.garl(LOG_W, q).coef_z[0]
    mean = c.coef_z.mean(0)
    se = c.coef_z.std(0) / math.sqrt(N)
    assert torch.all((mean - garl).abs() < 4 * se)
    assert torch.all(c.draw_counts.sum(-1) == 4)


def test_paft_randomness_only_through_the_generator():
    log_w = torch.log(torch.rand(16, 8, generator=torch.Generator().manual_seed(3)))
    a = est.paft(log_w, 0.5, generator=torch.Generator().manual_seed(11))
    b = est.paft(log_w, 0.5, generator=torch.Generator().manual_seed(11))
    assert torch.equal(a.draw_counts, b.draw_counts)
    c = est.paft(log_w, 0.5, num_draws=20, generator=torch.Generator().manual_seed(11))
    assert torch.all(c.draw_counts.sum(-1) == 20)
    # draws only land on positive weights
    r = rewards_to_log_w(torch.tensor([[0.0, 1.0, 0.0, 1.0]])).expand(100, 4)
    d = est.paft(r, 0.5, mode="verifier", generator=torch.Generator().manual_seed(0))
    assert int(d.draw_counts[:, [0, 2]].sum()) == 0


# ----------------------------------------------------------------------------- bias (Thm 6.1)


@pytest.mark.parametrize("q", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("P, M", [(0.2, 60), (0.5, 40), (0.3, 200)])
def test_bias_01_rewards_matches_leading_term_when_MP_large(q, P, M):
    # Regime M·P ≫ 1 (here >= 12). For 0/1 rewards Var(w) = P(1-P), Cov(g, w) = -(1-P)∇P,
    # so Thm 6.1's leading term is a relative bias r = -q(1-q)(1-P)/(2MP); the remainder is
    # O((MP)^-2) with the constant 0.071 found over M·P >= 10 (we allow 0.08).
    r_exact = theory.sampled_update_scale(P, M, q) / P ** (1 - q) - 1
    grad_p = np.array([1.0])  # direction is irrelevant: every estimator is ∝ ∇P here
    lead = theory.garl_bias_leading_term(
        P, q, M, var_w=P * (1 - P), cov_gw=-(1 - P) * grad_p, grad_l1=-grad_p / P
    )
    r_lead = float(lead[0] / -(P ** (-q)))  # relative to ∇ℓ_q = -P^(-q)∇P
    assert r_lead == pytest.approx(-q * (1 - q) * (1 - P) / (2 * M * P), rel=1e-12)
    assert abs(r_exact - r_lead) <= 0.08 / (M * P) ** 2
    assert r_exact < 0  # GARL under-amplifies: Jensen on (n/M)^(1-q)


# The constant of the uniform bound over all (M, P, q) for 0/1 rewards, found by a grid search
# over M ∈ [1, 4096], P ∈ [1e-5, 0.999], q ∈ (0, 1]: the supremum 0.5801 is approached as q -> 0
# at M·P ≈ 1.35. It covers the regime M·P ≪ 1 too, where the leading term itself is vacuous.
BIAS_CONSTANT_01 = 0.581


@given(M=st.integers(1, 512), P=st.floats(1e-5, 0.999), q=st.floats(1e-6, 1.0))
@example(M=1000, P=1.35e-3, q=1e-6)
@example(M=1, P=1e-5, q=1.0)
def test_bias_bound_holds_uniformly_for_01_rewards(M, P, q):
    # ‖E[ĝ] - ∇ℓ_q‖ = |c - P^(1-q)|·‖∇P‖/P <= C·q/(M·P^(q+1))·‖∇P‖.
    c = theory.sampled_update_scale(P, M, q)
    assert abs(c - P ** (1 - q)) * M * P**q / q <= BIAS_CONSTANT_01


@pytest.mark.parametrize("q", [0.5, 1.0])
def test_bias_continuous_weights_matches_leading_term(q):
    # Likelihood mode, regime M ≫ Var(w)/P² (here Var(w)/P² ≈ 0.2 and M up to 48): the exact
    # bias minus Thm 6.1's term is O(M^-2), so its size relative to the term falls like 1/M.
    model = LatentModel.random_likelihood(3, seed=5, w_range=(0.3, 0.9))
    pi, w = model.prior(), model.weights()
    P = float((pi * w).sum())
    score_z, score_y = model.scores()
    g_per = -w[:, None] * (score_z + score_y)  # g = -w ∇log p(z, y*)
    mean_g = (pi[:, None] * g_per).sum(0)
    var_w = float((pi * w**2).sum() - P**2)
    cov_gw = (pi[:, None] * g_per * w[:, None]).sum(0) - mean_g * P
    grad_l1 = model.true_grad(1.0)
    assert var_w / P**2 < 0.3
    rel_errors = []
    for M in (6, 12, 24, 48):
        mean, _ = model.moments(est.garl, q, M)
        bias = (mean - model.true_grad(q)).numpy()
        lead = theory.garl_bias_leading_term(P, q, M, var_w, cov_gw.numpy(), grad_l1.numpy())
        rel_errors.append(np.linalg.norm(bias - lead) / np.linalg.norm(lead))
        # the sign pattern of the leading term is the exact bias's
        assert np.dot(bias, lead) > 0
    assert rel_errors[-1] < 0.01
    ratios = np.array(rel_errors[:-1]) / np.array(rel_errors[1:])
    assert np.all(ratios > 1.9)  # halving with each doubling of M, up to O(M^-3)


def test_q0_has_no_bias_and_bias_grows_with_q():
    model = LatentModel.random_likelihood(3, seed=2, w_range=(0.1, 0.6))
    norms = []
    for q in (0.0, 0.5, 1.0):
        mean, _ = model.moments(est.garl, q, 4)
        norms.append(
            float(
                torch.linalg.norm(mean - model.true_grad(q)) / torch.linalg.norm(model.true_grad(q))
            )
        )
    assert norms[0] < 1e-12 and norms[0] < norms[1] < norms[2]


# ----------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("name", ["garl", "garl_rloo", "paft"])
def test_log_space_arithmetic_survives_log_w_minus_1000(name):
    base = torch.tensor([[-0.1, -1.3, -2.0, -0.7]], dtype=torch.float64)
    fn = get_estimator(name)
    kw = {"generator": torch.Generator().manual_seed(0)} if name == "paft" else {}
    ref = fn(base, 1.0, **kw)
    kw = {"generator": torch.Generator().manual_seed(0)} if name == "paft" else {}
    far = fn(base - 1000.0, 1.0, **kw)
    # q = 1 is invariant to scaling all weights: w_m/w̄ and w̄^0
    torch.testing.assert_close(far.coef_z, ref.coef_z, rtol=1e-12, atol=1e-15)
    assert float(far.log_w_mean) == pytest.approx(float(ref.log_w_mean) - 1000.0)
    # q = 1/2: coefficients scale by e^(-1000·(1-q)) = e^-500, still representable in float64
    if name == "garl":
        half = fn(base - 1000.0, 0.5)
        torch.testing.assert_close(
            half.coef_z, fn(base, 0.5).coef_z * math.exp(-500.0), rtol=1e-10, atol=0
        )
        assert torch.isfinite(half.coef_z).all() and (half.coef_z > 0).all()


@given(
    log_w=st.lists(st.floats(-50.0, 0.0), min_size=2, max_size=8),
    q=st.floats(0.0, 1.0),
    perm_seed=st.integers(0, 1000),
)
def test_permuting_a_group_permutes_its_coefficients(log_w, q, perm_seed):
    lw = torch.tensor([log_w], dtype=torch.float64)
    perm = torch.randperm(lw.shape[1], generator=torch.Generator().manual_seed(perm_seed))
    for name in ("garl", "garl_rloo", "grpo", "dr_grpo", "rloo", "reinforce", "sft"):
        fn = get_estimator(name)
        a, b = fn(lw, q), fn(lw[:, perm], q)
        torch.testing.assert_close(b.coef_z, a.coef_z[:, perm], rtol=1e-9, atol=1e-15)
        torch.testing.assert_close(b.coef_y, a.coef_y[:, perm], rtol=1e-9, atol=1e-15)


@given(
    w=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=12),
    q=st.floats(0.0, 1.0),
)
@example(w=[1.0, 0.0], q=0.0)
@example(w=[1e-300, 1.0, 1.0], q=1.0)
def test_amplified_advantage_monitor_lies_in_unit_interval(w, q):
    # Fig. 3's monitor: max_m c_m/M^q ∈ [0, 1] for weights in [0, 1] (c_m <= w_m^(1-q)·M^q, and the
    # heaviest sample has w_m >= w̄ >= w̄_¬m).
    lw = rewards_to_log_w(torch.tensor([w], dtype=torch.float64))
    m = est.garl_rloo(lw, q, mode="verifier").max_amplified_advantage
    assert -1e-12 <= float(m) <= 1 + 1e-12


def test_paper_normalization_rescales_by_m_pow_q_only():
    for name in ("garl", "garl_rloo"):
        a = get_estimator(name)(LOG_W, 0.75)
        b = get_estimator(name)(LOG_W, 0.75, paper_normalization=True)
        torch.testing.assert_close(b.coef_z, a.coef_z / 4**0.75)
        torch.testing.assert_close(b.max_amplified_advantage, a.max_amplified_advantage)
    # a group with one success gets the same update for every q once normalised
    one = rewards_to_log_w(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    vals = [
        float(est.garl(one, q, mode="verifier", paper_normalization=True).coef_z[0, 0])
        for q in (0.0, 0.5, 1.0)
    ]
    assert vals == pytest.approx([0.25] * 3)


def test_tensor_q_matches_per_row_calls():
    g = torch.Generator().manual_seed(0)
    lw = torch.log(torch.rand(3, 5, generator=g, dtype=torch.float64))
    qs = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    for name in ("garl", "garl_rloo"):
        batch = get_estimator(name)(lw, qs)
        for i, q in enumerate(qs.tolist()):
            row = get_estimator(name)(lw[i : i + 1], q)
            torch.testing.assert_close(batch.coef_z[i], row.coef_z[0])
            torch.testing.assert_close(batch.amplification[i], row.amplification[0])


def test_float32_in_float32_out_and_leading_dims():
    lw = torch.log(torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(1)))
    c = est.garl_rloo(lw, 0.5)
    assert c.coef_z.dtype == torch.float32 and c.coef_z.shape == (2, 3, 4)
    assert c.log_w_mean.shape == (2, 3) and c.stalled.shape == (2, 3)


# ----------------------------------------------------------------------------- degenerate groups


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("q", [0.0, 0.5, 1.0])
def test_all_zero_verifier_group_is_stalled_not_nan(name, q):
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    kw = {"generator": torch.Generator().manual_seed(0)} if name == "paft" else {}
    c = get_estimator(name)(rewards_to_log_w(rewards), q, mode="verifier", **kw)
    for t in (c.coef_z, c.coef_y, c.amplification, c.max_amplified_advantage):
        assert torch.isfinite(t).all()
    assert c.stalled.tolist() == [True, False]
    assert torch.all(c.coef_z[0] == 0) and torch.all(c.coef_y[0] == 0)
    assert float(c.amplification[0]) == 0.0 and float(c.log_w_mean[0]) == -math.inf
    assert torch.any(c.coef_z[1] != 0)


def test_q1_loo_baseline_of_an_all_zero_remainder_is_zero():
    # c_m = w_m/w̄ - (w̄_¬m)^(1-q) with 0^(1-q) := 0 also at q = 1 (the q -> 1 limit): the lone
    # success keeps its full weight M, and E[GARL-RLOO] = E[GARL] survives stalled groups.
    c = est.garl_rloo(rewards_to_log_w(torch.tensor([[1.0, 0.0, 0.0]])), 1.0, mode="verifier")
    torch.testing.assert_close(c.coef_z, torch.tensor([[1.0, -1 / 3, -1 / 3]]))
    # with every weight positive the centred (IWAE) weights sum to 0 at q = 1
    d = est.garl_rloo(torch.log(torch.tensor([[0.5, 0.2, 0.1]], dtype=torch.float64)), 1.0)
    assert float(d.coef_z.sum()) == pytest.approx(0.0, abs=1e-15)


# ----------------------------------------------------------------------------- validation


def test_validation_errors_name_what_was_expected():
    with pytest.raises(ValueError, match=r"q must lie in \[0, 1\], got 1.5"):
        est.garl(LOG_W, 1.5)
    with pytest.raises(TypeError, match="floating tensor"):
        est.garl(torch.tensor([[0, -1]]), 0.5)
    with pytest.raises(TypeError, match="torch tensor"):
        est.garl([[-0.1, -0.2]], 0.5)
    with pytest.raises(ValueError, match="NaN"):
        est.garl(torch.tensor([[-0.1, math.nan]]), 0.5)
    with pytest.raises(ValueError, match="<= 0"):
        est.garl(torch.tensor([[-0.1, 0.5]]), 0.5)
    with pytest.raises(ValueError, match="<= 0"):
        est.garl(torch.tensor([[-0.1, 1e-5]], dtype=torch.float64), 0.5)
    # fp32 log-probs a rounding error above 0 are clamped, not rejected
    ok = est.garl(torch.tensor([[-0.1, 2e-4]]), 0.5)
    assert float(ok.log_w_mean) <= 0.0
    for name in NEEDS_TWO:
        with pytest.raises(ValueError, match="M = 1"):
            get_estimator(name)(torch.tensor([[-0.1], [-0.2]]), 0.5)
    with pytest.raises(ValueError, match="mode must be one of"):
        est.garl(LOG_W, 0.5, mode="reward")
    with pytest.raises(ValueError, match="unknown estimator 'garl-rloo'"):
        get_estimator("garl-rloo")
    with pytest.raises(ValueError, match="num_draws"):
        est.paft(LOG_W, 0.5, num_draws=0)
    with pytest.raises(TypeError, match="torch.Generator"):
        est.paft(LOG_W, 0.5, generator=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rewards_to_log_w(torch.tensor([0.0, 2.0]))
    with pytest.raises(ValueError, match="broadcast"):
        est.garl(LOG_W.expand(3, 4), torch.tensor([0.1, 0.2]))


def test_registry_round_trip():
    assert set(ESTIMATORS) == {
        "garl",
        "garl_rloo",
        "paft",
        "grpo",
        "dr_grpo",
        "rloo",
        "reinforce",
        "sft",
    }

    def half_reinforce(log_w, q, **kw):
        c = est.reinforce(log_w, q, **kw)
        return c

    est.register_estimator("test_half_reinforce", half_reinforce)
    try:
        assert get_estimator("test_half_reinforce") is half_reinforce
        with pytest.raises(ValueError, match="already registered"):
            est.register_estimator("test_half_reinforce", half_reinforce)
    finally:
        del ESTIMATORS["test_half_reinforce"]


def test_likelihood_mode_bias_can_over_amplify_along_the_target():
    # With 0/1 rewards E[ĝ] = (1+r)·∇ℓ_q with r < 0 (tested above); in likelihood mode E[ĝ] turns,
    # and its component along ∇ℓ_q can exceed it: r = <E[ĝ] - ∇ℓ_q, ∇ℓ_q>/|∇ℓ_q|² > 0.
    model = LatentModel.random_likelihood(3, 4, w_range=(0.01, 0.5))
    target = model.true_grad(1.0)
    mean, _ = model.moments(est.garl, 1.0, 2)
    r = float(mean @ target / (target @ target)) - 1.0
    assert float(model.success_prob()) == pytest.approx(0.2239, abs=1e-4)
    assert r == pytest.approx(0.0268, abs=5e-4)
