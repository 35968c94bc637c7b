"""Models and exact dynamics of the simulators against tsallis.theory (Eq. 15 and its K-arm,
chain and latent analogues)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import tsallis
from sims.dynamics import exact_ascent, flow_escape, gd_escape
from sims.models import (
    KArmBandit,
    LatentCategorical,
    ManyExampleNoise,
    Sigmoid,
    TabularChain,
    TwoLabelNoise,
    TwoLabelNoiseDirect,
    make_model,
)
from sims.rng import counter_uniform
from sims.sampled import draw_and_score
from tsallis import theory

MODELS = [
    Sigmoid(),
    KArmBandit(K=4),
    KArmBandit(K=5, k=2),
    LatentCategorical(K=3),
    TabularChain(L=3, V=4),
    TwoLabelNoise(eps=0.2),
    TwoLabelNoiseDirect(eps=0.2),
    ManyExampleNoise(N=5, frac_wrong=0.4),
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_exact_gradient_matches_finite_differences(model):
    """-∇J_q by finite differences of J_q = Σ w_j ℓ_q(P_j) with tsallis.loss_q."""
    rng = np.random.default_rng(0)
    theta = model.init(0.2) + 0.3 * rng.standard_normal(model.dim)
    q = 0.6

    def J(th):
        w, P, _ = model.terms(th)
        return float(np.sum(w * tsallis.loss_q(P, q)))

    h = 1e-6
    fd = np.array([(J(theta + h * e) - J(theta - h * e)) / (2 * h) for e in np.eye(model.dim)])
    np.testing.assert_allclose(exact_ascent(model, theta, q), -fd, rtol=1e-5, atol=1e-8)


def test_sigmoid_flow_matches_table_of_the_readme():
    table = {(1e-2, 0.0): 108.2, (1e-4, 0.5): 201.2, (1e-6, 1.0): 14.82, (1e-6, 0.0): 1000027}
    for (p0, q), t in table.items():
        r = flow_escape(Sigmoid(), p0, q)
        assert not r.censored
        assert r.time == pytest.approx(t, rel=5e-4)
        assert r.time == pytest.approx(theory.sigmoid_escape_time(p0, q), rel=1e-8)


@pytest.mark.parametrize("q", [0.0, 0.5, 1.0])
def test_karm_and_chain_flow_match_theory(q):
    r = flow_escape(KArmBandit(K=4), 1e-3, q)
    assert r.time == pytest.approx(theory.karm_escape_time(1e-3, q, 4), rel=1e-8)
    r = flow_escape(KArmBandit(K=6, k=2), 1e-3, q)
    assert r.time == pytest.approx(theory.karm_escape_time(1e-3, q, 6, 2), rel=1e-8)
    ch = TabularChain(L=3, V=5)
    r = flow_escape(ch, None, q, theta0=ch.init())
    assert r.time == pytest.approx(theory.chain_escape_time(5.0**-3, q, 3, 5), rel=1e-7)


def test_latent_symmetric_flow_is_K_times_sigmoid():
    r = flow_escape(LatentCategorical(K=4), 1e-3, 0.5)
    assert r.time == pytest.approx(4 * theory.sigmoid_escape_time(1e-3, 0.5), rel=1e-8)


def test_karm_concentrated_wrong_mass_lies_between_the_bounds():
    """Wrong mass on one arm gives T between T_sigmoid/2 and (K-1)/K·T_sigmoid."""
    for q in (0.0, 0.5, 1.0):
        t = flow_escape(KArmBandit(K=5, wrong_init="concentrated"), 1e-3, q).time
        ts = theory.sigmoid_escape_time(1e-3, q)
        assert ts / 2 * (1 - 1e-6) <= t <= 0.8 * ts * (1 + 1e-6)


@settings(max_examples=15)
@given(perm_seed=st.integers(0, 1000), q=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]))
@example(perm_seed=0, q=0.0)
def test_karm_flow_is_symmetric_under_permuting_arms(perm_seed, q):
    """Relabelling arms (correct with correct, wrong with wrong) changes no escape time."""
    m = KArmBandit(K=5, k=2)
    rng = np.random.default_rng(perm_seed)
    theta = m.init(1e-2) + np.array([0.1, -0.2, 0.3, 0.0, -0.1])
    perm = np.concatenate([rng.permutation(2), 2 + rng.permutation(3)])
    a = flow_escape(m, None, q, theta0=theta).time
    b = flow_escape(m, None, q, theta0=theta[perm]).time
    assert a == pytest.approx(b, rel=1e-7)


def test_gd_approaches_flow_as_eta_shrinks_and_censors():
    m = Sigmoid()
    th0 = np.tile(m.init(1e-2), (2, 1))
    T = theory.sigmoid_escape_time(1e-2, 0.5)
    errs = []
    for eta in (0.5, 0.05):
        steps, cens = gd_escape(m, th0, 0.5, eta, 10**6)
        assert not cens.any()
        errs.append(abs(steps[0] * eta / T - 1))
    assert errs[1] < errs[0] < 0.1
    steps, cens = gd_escape(m, th0, 0.0, 0.1, 5)  # far too small a budget
    assert cens.all() and (steps == 5).all()


@settings(max_examples=25)
@given(
    q=st.floats(0.0, 1.0),
    M=st.integers(2, 16),
    p0=st.floats(1e-4, 0.9),
    mode=st.sampled_from(["verifier", "likelihood"]),
    est=st.sampled_from(["garl", "garl_rloo"]),
    step=st.integers(0, 10**6),
)
@example(q=0.0, M=2, p0=1e-4, mode="verifier", est="garl_rloo", step=0)
@example(q=1.0, M=16, p0=0.9, mode="likelihood", est="garl", step=3)
def test_paper_monitor_lies_in_unit_interval(q, M, p0, mode, est, step):
    """The Fig. 3 monitor max_m c_m/M^q lies in [0, 1] on the simulator's groups."""
    model = LatentCategorical(K=3)
    theta = torch.tensor(np.tile(model.init(p0), (8, 1)))
    draw = draw_and_score(model, theta, M, torch.arange(8, dtype=torch.int64), step, mode)
    mon = tsallis.get_estimator(est)(draw.log_w, q, mode=mode).max_amplified_advantage
    assert bool(((mon >= -1e-12) & (mon <= 1 + 1e-12)).all()), mon


def test_model_validation():
    with pytest.raises(ValueError, match="k < K"):
        KArmBandit(K=3, k=3)
    with pytest.raises(ValueError, match="p0"):
        Sigmoid().init(0.0)
    with pytest.raises(ValueError, match="unknown model"):
        make_model("nope")
    with pytest.raises(ValueError, match="shape"):
        Sigmoid().terms(np.zeros(3))
    with pytest.raises(ValueError, match="q must"):
        flow_escape(Sigmoid(), 0.1, 1.5)


def test_counter_rng_is_batch_independent_and_uniform():
    keys = torch.arange(500, dtype=torch.int64) * 7919
    u = counter_uniform(keys, 3, 20)
    assert torch.equal(counter_uniform(keys[100:200], 3, 20), u[100:200])
    assert not torch.equal(counter_uniform(keys, 4, 20), u)
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.005


@pytest.mark.parametrize(
    "model,mode",
    [
        (Sigmoid(), "verifier"),
        (KArmBandit(K=4, k=2), "verifier"),
        (LatentCategorical(K=3), "verifier"),
        (LatentCategorical(K=3), "likelihood"),
        (TabularChain(L=3, V=3), "verifier"),
    ],
    ids=lambda x: getattr(x, "name", x),
)
def test_sampled_update_equals_autograd_of_sequence_loss(model, mode):
    """The simulator's Σ coef·score equals -∇ of tsallis.sequence_loss on the same samples."""
    R, M = 3, 6
    theta0 = torch.tensor(np.tile(model.init(0.3), (R, 1))) + 0.1 * torch.randn(
        R, model.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    keys = torch.arange(R, dtype=torch.int64) + 11
    draw = draw_and_score(model, theta0, M, keys, 0, mode)
    co = tsallis.get_estimator("garl_rloo")(draw.log_w, 0.5, mode=mode)
    ours = draw.direction(co.coef_z, co.coef_y)
    # autograd: recompute the per-sample log-probs from the same uniforms
    theta = theta0.clone().requires_grad_(True)
    u = counter_uniform(keys, 0, M * max(2, getattr(model, "L", 1)))
    logp_z, logp_y = _logps(model, theta, u, M, mode)
    loss = tsallis.sequence_loss(
        logp_z, logp_y, co.coef_z.flatten(), co.coef_y.flatten(), reduction="sum"
    )
    loss.backward()
    torch.testing.assert_close(ours, -theta.grad, rtol=1e-10, atol=1e-12)


def _logps(model, theta, u, M, mode):
    """Per-sample (log p(z), log p(y|z)) with autograd, mirroring sims.sampled's draws."""
    R = theta.shape[0]
    if model.name == "sigmoid":
        P = torch.sigmoid(theta[:, 0])
        y = (u[:, :M] < P.detach()[:, None]).double()
        lp = y * torch.log(P)[:, None] + (1 - y) * torch.log1p(-P)[:, None]
        return torch.zeros_like(lp).flatten(), lp.flatten()
    if model.name == "karm":
        pi = torch.softmax(theta, -1)
        cdf = pi.detach().cumsum(-1)
        arm = torch.searchsorted(cdf, u[:, :M].contiguous() * cdf[:, -1:]).clamp(max=model.K - 1)
        lp = torch.log(torch.gather(pi, 1, arm))
        return torch.zeros_like(lp).flatten(), lp.flatten()
    if model.name == "latent":
        K = model.K
        pi = torch.softmax(theta[:, :K], -1)
        cdf = pi.detach().cumsum(-1)
        z = torch.searchsorted(cdf, u[:, :M].contiguous() * cdf[:, -1:]).clamp(max=K - 1)
        lpz = torch.log(torch.gather(pi, 1, z))
        w = torch.sigmoid(torch.gather(theta[:, K:], 1, z))
        if mode == "likelihood":
            lpy = torch.log(w)
        else:
            y = (u[:, M : 2 * M] < w.detach()).double()
            lpy = y * torch.log(w) + (1 - y) * torch.log1p(-w)
        return lpz.flatten(), lpy.flatten()
    L, V = model.L, model.V
    logpi = torch.log_softmax(theta.view(R, L, V), -1)
    uu = u[:, : M * L].reshape(R, M, L)
    cdf = logpi.detach().exp().cumsum(-1)
    tok = (
        torch.searchsorted(
            cdf[:, None].expand(R, M, L, V).contiguous(), (uu * cdf[:, None, :, -1]).unsqueeze(-1)
        )
        .squeeze(-1)
        .clamp(max=V - 1)
    )
    hit = tok == 0
    alive = torch.cat([torch.ones_like(hit[..., :1]), hit[..., :-1].cumprod(-1).bool()], -1)
    lp_tok = torch.gather(logpi[:, None].expand(R, M, L, V), 3, tok.unsqueeze(-1)).squeeze(-1)
    lp = (lp_tok * alive.double()).sum(-1)  # off-path tables are not the tracked ones
    return torch.zeros_like(lp).flatten(), lp.flatten()


@pytest.mark.parametrize("q", [0.5, 1.0])
def test_bounded_score_noise_model_flow_and_paper_law(q):
    """p~ as the parameter: ‖∇p~‖ = 1, p~' = ε p~^-q - (1-ε)(1-p~)^-q, escort fixed point, and
    the ODE's time to a small level equals the quadrature of the experiment and the paper's
    η^(q+1)/((q+1)ε) (Prop. C.2) to leading order."""
    from sims.experiments.label_noise import _run_direct

    eps = 0.1
    m = make_model("two_label_direct", eps=eps)
    for p in (1e-9, 0.03, 0.7):
        _w, P, dP = m.terms(m.init(p))
        np.testing.assert_allclose(P, [1 - p, p])
        assert np.linalg.norm(dP[1]) == 1.0
        v = exact_ascent(m, m.init(p), q)[0]
        assert v == pytest.approx(eps * p**-q - (1 - eps) * (1 - p) ** -q, rel=1e-12)
    eq = theory.noise_equilibrium(eps, q)
    assert abs(exact_ascent(m, m.init(eq), q)[0]) < 1e-9
    res = _run_direct({"eps": eps, "q": q, "p_tilde0_fit": 1e-16, "id": "t"})
    lv = list(res["levels"])
    i = lv.index(1e-4)
    ode = flow_escape(m, None, q, delta=1e-4, theta0=m.init(1e-16), t_max=1e9, method="LSODA",
                      atol=1e-30)
    assert ode.time == pytest.approx(res["fit_time"][i], rel=1e-4)
    j = lv.index(1e-8)  # (η/p~*)^q ≤ 1e-3: the clean label's pull is negligible
    assert res["fit_time"][j] == pytest.approx(theory.noise_fitting_time(1e-8, eps, q), rel=2e-3)


def test_latent_symmetric_start_is_the_slowest_start_with_that_p0():
    """Why sampled likelihood-mode runs escape faster than K·T_sigmoid/η (README, sampled
    training): not the step size (exact-gradient GD at η = 2 keeps the flow time), but the
    symmetric start itself — the flow from a start whose answer heads differ (P still p0)
    escapes several times faster, down towards T_sigmoid = (1/K)·K·T_sigmoid."""
    from scipy.optimize import brentq

    K, q, p0, eta = 4, 1.0, 1e-3, 2.0
    m = LatentCategorical(K=K)
    sym = m.init(p0)
    t_sym = flow_escape(m, None, q, theta0=sym).time
    assert t_sym == pytest.approx(K * theory.sigmoid_escape_time(p0, q), rel=1e-6)
    steps, _ = gd_escape(m, sym[None], q, np.array([eta]), 10**4)
    assert steps[0] * eta == pytest.approx(t_sym, rel=0.05)
    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(4):
        th = sym.copy()
        th[K:] += rng.normal(0.0, 0.7, K)
        shift = brentq(
            lambda d, th=th: float(m.monitor(np.concatenate([th[:K], th[K:] + d]))) - p0, -30, 30
        )
        th[K:] += shift
        assert float(m.monitor(th)) == pytest.approx(p0, rel=1e-9)
        ratios.append(flow_escape(m, None, q, theta0=th).time / t_sym)
    assert max(ratios) < 0.8 and min(ratios) > 1.0 / K - 1e-9
