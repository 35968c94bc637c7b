"""Bad inputs that used to slip through or turn into NaN, dtype policy, GRPO in likelihood mode,
integer arguments and the estimator decorator (see docs/conventions.md)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from latent_model import LatentModel

import tsallis
from tsallis import estimators as est
from tsallis.estimators import ESTIMATORS, get_estimator, rewards_to_log_w
from tsallis.logits_loss import TsallisLoss, tsallis_logits_loss
from tsallis.loss import TsallisSequenceLoss, sequence_loss, tsallis_sequence_loss

ROOT = Path(__file__).resolve().parents[1]
G, M, T, V = 2, 2, 4, 7
B = G * M


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, V, generator=g, dtype=torch.float64)
    ids = torch.randint(0, V, (B, T), generator=g)
    rat = torch.tensor([[1, 1, 0, 0]] * B, dtype=torch.bool)
    ans = torch.tensor([[0, 0, 1, 1]] * B, dtype=torch.bool)
    return x, ids, rat, ans


# ----------------------------------------------------------------------------- empty answers


@pytest.mark.parametrize("fused", [True, False])
def test_likelihood_mode_sequence_without_answer_tokens_is_an_error(fused):
    x, ids, rat, ans = _batch()
    ans[2] = False  # sequence 2 has no answer: its log w would be 0, the group's largest
    with pytest.raises(ValueError, match=r"sequence\(s\) 2 of 4 have no answer token"):
        tsallis_logits_loss(x.clone().requires_grad_(), ids, 0.5, group_size=M, rationale_mask=rat,
                            answer_mask=ans, fused=fused, impl="torch")  # fmt: skip
    with pytest.raises(ValueError, match="no answer token"):
        TsallisLoss(0.5, group_size=M, fused=fused, impl="torch")(x, ids, rat, ans)
    # packed layout: the same rows, the same message
    lengths = torch.full((B,), T)
    cu = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    with pytest.raises(ValueError, match=r"sequence\(s\) 2 of 4"):
        tsallis_logits_loss(x.reshape(B * T, V), ids.reshape(-1), 0.5, group_size=M,
                            rationale_mask=rat.reshape(-1), answer_mask=ans.reshape(-1),
                            cu_seqlens=cu, fused=fused, impl="torch")  # fmt: skip
    # verifier mode needs no answer span at all
    r = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    loss = tsallis_logits_loss(x, ids, 0.5, group_size=M, rationale_mask=rat, answer_mask=ans,
                               rewards=r, fused=fused, impl="torch")  # fmt: skip
    assert torch.isfinite(loss)


# --------------------------------------------------------------------------- zero-probability gold


def test_sequence_loss_zero_coefficient_against_minus_inf_is_zero():
    logp_y = torch.tensor([-1.0, -math.inf, -2.0, -0.5], requires_grad=True)
    logp_z = torch.tensor([-3.0, -4.0, -5.0, -6.0], requires_grad=True)
    coef = torch.tensor([[0.5, 0.0], [0.25, 0.25]])
    loss = sequence_loss(logp_z, logp_y, coef, coef)
    assert torch.isfinite(loss)
    assert float(loss.detach()) == pytest.approx((0.5 * 4 + 0.25 * 7 + 0.25 * 6.5) / 2)
    gz, gy = torch.autograd.grad(loss, (logp_z, logp_y))
    assert torch.isfinite(gz).all() and torch.isfinite(gy).all() and float(gy[1]) == 0.0


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_tsallis_sequence_loss_gold_answer_of_probability_zero_is_finite(name):
    logp_z = torch.tensor([-3.0, -4.0, -5.0, -6.0], dtype=torch.float64, requires_grad=True)
    logp_y = torch.tensor([-0.7, -math.inf, -1.0, -2.0], dtype=torch.float64, requires_grad=True)
    kw = {"generator": torch.Generator().manual_seed(0)} if name == "paft" else {}
    loss = tsallis_sequence_loss(logp_z, logp_y, 0.5, group_size=2, estimator=name, **kw)
    assert torch.isfinite(loss)
    gz, gy = torch.autograd.grad(loss, (logp_z, logp_y))
    assert torch.isfinite(gz).all() and torch.isfinite(gy).all()


@pytest.mark.parametrize("fused", [False, True])
def test_logits_loss_gold_token_of_probability_zero_is_finite(fused):
    """A -inf logit on a gold answer token: weight 0, finite loss and gradient (likelihood)."""
    x, ids, rat, ans = _batch()
    x[1, 2, ids[1, 2]] = -math.inf  # sequence 1's first answer token has probability 0
    a = x.clone().requires_grad_(True)
    loss, info = tsallis_logits_loss(a, ids, 0.5, group_size=M, rationale_mask=rat,
                                     answer_mask=ans, fused=fused, impl="torch",
                                     return_info=True)  # fmt: skip
    loss.backward()
    assert float(info.log_w[0, 1]) == -math.inf and float(info.coef_y[0, 1]) == 0.0
    assert torch.isfinite(loss), f"loss {float(loss)}"
    assert torch.isfinite(a.grad[torch.isfinite(x)]).all()
    # the same loss as the per-sequence form with that weight set to 0
    b = x.clone().requires_grad_(True)
    want = tsallis_logits_loss(b, ids, 0.5, group_size=M, rationale_mask=rat, answer_mask=ans,
                               fused=False, impl="torch")  # fmt: skip
    torch.testing.assert_close(loss, want)


# --------------------------------------------------------------------------- logp_z / logp_y values


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 0.5])
def test_tsallis_sequence_loss_checks_logp_z_values(bad):
    lz = torch.tensor([-1.0, -2.0, bad, -3.0], dtype=torch.float64)
    ly = torch.tensor([-0.1, -0.2, -0.3, -0.4], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"logp_z must be finite and <= 0 .* sequence 2"):
        tsallis_sequence_loss(lz, ly, 0.5, group_size=2)
    with pytest.raises(ValueError, match="logp_z"):
        tsallis_sequence_loss(lz, None, 0.5, group_size=2, rewards=torch.ones(4))


def test_tsallis_sequence_loss_checks_logp_y_values():
    lz = torch.tensor([-1.0, -2.0, -1.5, -3.0], dtype=torch.float64)
    for bad in (math.nan, math.inf, 0.5):
        ly = torch.tensor([-0.1, bad, -0.3, -0.4], dtype=torch.float64)
        with pytest.raises(ValueError, match=r"logp_y .* sequence 1"):
            tsallis_sequence_loss(lz, ly, 0.5, group_size=2)
    # -inf: a weight of 0 in likelihood mode, an impossible sampled answer in verifier mode
    ly = torch.tensor([-0.1, -math.inf, -0.3, -0.4], dtype=torch.float64)
    assert torch.isfinite(tsallis_sequence_loss(lz, ly, 0.5, group_size=2))
    with pytest.raises(ValueError, match=r"logp_y must be finite .* sequence 1"):
        tsallis_sequence_loss(lz, ly, 0.5, group_size=2, rewards=torch.ones(4))
    # rounding a few ulps above 0 is tolerated (float32 log-softmax of a confident token)
    ok = torch.tensor([-1.0, 2e-4, -1.5, -3.0])
    assert torch.isfinite(tsallis_sequence_loss(ok, ok, 0.5, group_size=2))


# --------------------------------------------------------------------------- GRPO, likelihood mode


def test_grpo_likelihood_nearly_equal_weights_is_not_amplified():
    # four weights of 0.3: σ² = (4/3)·0.3·0.7, coef_y = 0.3/(4σ) = 0.1417 (not 0.3/(4·eps) = 750)
    c = est.grpo(torch.log(torch.full((1, 4), 0.3, dtype=torch.float64)))
    sigma = math.sqrt(4 / 3 * 0.3 * 0.7)
    torch.testing.assert_close(c.coef_y, torch.full((1, 4), 0.3 / (4 * (sigma + 1e-4)),
                                                    dtype=torch.float64))  # fmt: skip
    # RLOO's coef_y is 0.3/4 = 0.075; GRPO's is that over σ, about 2x, not 10^4x
    rloo_y = float(est.rloo(torch.log(torch.full((1, 4), 0.3))).coef_y.max())
    assert float(c.coef_y.max()) < 2 * rloo_y
    torch.testing.assert_close(c.coef_z, torch.zeros(1, 4, dtype=torch.float64))


def test_grpo_likelihood_with_01_weights_equals_verifier_grpo():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    lw = rewards_to_log_w(r)
    a = est.grpo(lw, mode="likelihood")
    b = est.grpo(lw, mode="verifier")
    torch.testing.assert_close(a.coef_z, b.coef_z, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(a.amplification, b.amplification, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("w_range", [(0.29, 0.31), (0.05, 0.95), (0.6, 0.99)])
@pytest.mark.parametrize("M", [2, 4, 8])
def test_grpo_likelihood_expected_gradient_is_sane(w_range, M):
    """E[GRPO] (exact, by enumeration) is GRPO's q ≈ 1/2 update -∇P/sqrt(P(1-P)) up to the
    unbiased-std factor: same direction, size between sqrt((M-1)/M)·0.85 and 1 of it. With
    nearly equal weights (the case that was amplified ~1000x) the factor is sqrt((M-1)/M)."""
    for seed in range(2):
        model = LatentModel.random_likelihood(3, seed, w_range=w_range)
        P = float(model.success_prob())
        target = -model.grad(model.success_prob) / math.sqrt(P * (1 - P))
        mean, _ = model.moments(est.grpo, 0.0, M)
        cos = float(mean @ target / (mean.norm() * target.norm()))
        ratio = float(mean.norm() / target.norm())
        assert cos > 0.95, (cos, ratio)
        assert 0.85 * math.sqrt((M - 1) / M) < ratio < 1.0, (cos, ratio)
        if w_range == (0.29, 0.31):
            assert ratio == pytest.approx(math.sqrt((M - 1) / M), rel=2e-3)


# ----------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("name", ["garl", "garl_rloo", "paft"])
def test_monitors_do_not_overflow_in_float32(name):
    # log w̄ = -100 < -88/q: w̄^(-q) = e^100 overflows float32 but not float64
    lw = torch.full((2, 4), -100.0, dtype=torch.float32)
    kw = {"generator": torch.Generator().manual_seed(0)} if name == "paft" else {}
    c = get_estimator(name)(lw, 1.0, **kw)
    for t in (c.log_w_mean, c.amplification, c.max_amplified_advantage):
        assert t.dtype == torch.float64 and torch.isfinite(t).all()
    assert float(c.amplification[0]) == pytest.approx(math.exp(100.0), rel=1e-6)
    assert c.coef_z.dtype == torch.float32 and torch.isfinite(c.coef_z).all()


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_rewards_give_float32_coefficients_of_those_rewards(name, dtype):
    g = torch.Generator().manual_seed(3)
    r = torch.rand(16, 8, generator=g).to(dtype)  # the rewards as the trainer holds them
    kw = lambda: {"generator": torch.Generator().manual_seed(1)} if name == "paft" else {}  # noqa: E731
    low = get_estimator(name)(rewards_to_log_w(r), 0.5, mode="verifier", **kw())
    ref = get_estimator(name)(rewards_to_log_w(r.double()), 0.5, mode="verifier", **kw())
    assert low.coef_z.dtype == torch.float32
    # only the float32 rounding of the result: far below bf16's 2^-8 (0.4%)
    torch.testing.assert_close(low.coef_z, ref.coef_z.float(), rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(low.max_amplified_advantage, ref.max_amplified_advantage,
                               rtol=1e-6, atol=1e-9)  # fmt: skip


def test_loss_is_computed_in_at_least_float32():
    lz = torch.tensor([-3.0, -5.0, -4.0, -6.0], dtype=torch.bfloat16, requires_grad=True)
    loss = tsallis_sequence_loss(lz, None, 0.5, group_size=2,
                                 rewards=torch.tensor([1.0, 0.0, 0.3, 0.7]))  # fmt: skip
    assert loss.dtype == torch.float32
    loss.backward()
    assert lz.grad.dtype == torch.bfloat16


# ----------------------------------------------------------------------------- integer arguments


@pytest.mark.parametrize("m", [np.int64(2), np.int32(2), torch.tensor(2), 2])
def test_group_size_accepts_any_integer(m):
    lz = torch.tensor([-3.0, -5.0, -4.0, -6.0], requires_grad=True)
    ly = torch.tensor([-0.5, -0.1, -0.2, -0.3])
    want = tsallis_sequence_loss(lz, ly, 0.5, group_size=2)
    torch.testing.assert_close(tsallis_sequence_loss(lz, ly, 0.5, group_size=m), want)
    torch.testing.assert_close(TsallisSequenceLoss(0.5, group_size=m)(lz, ly), want)
    assert TsallisLoss(0.5, group_size=m).group_size == 2
    coef = torch.full((4,), 0.25)
    torch.testing.assert_close(sequence_loss(lz, ly, coef, group_size=m),
                               sequence_loss(lz, ly, coef, group_size=2))  # fmt: skip
    x, ids, rat, ans = _batch()
    tsallis_logits_loss(x, ids, 0.5, group_size=m, rationale_mask=rat, answer_mask=ans,
                        impl="torch")  # fmt: skip
    c = est.paft(torch.log(torch.rand(1, 4)), 0.5, num_draws=np.int64(3))
    assert int(c.draw_counts.sum()) == 3


@pytest.mark.parametrize("m", [True, 2.0, np.float64(2.0), "2"])
def test_group_size_rejects_bools_and_floats(m):
    lz = torch.tensor([-3.0, -5.0, -4.0, -6.0])
    with pytest.raises(TypeError, match="group_size .* must be a positive integer"):
        tsallis_sequence_loss(lz, lz, 0.5, group_size=m)
    with pytest.raises(TypeError, match="positive integer"):
        TsallisLoss(0.5, group_size=m)
    with pytest.raises(TypeError, match="positive integer"):
        TsallisSequenceLoss(0.5, group_size=m)
    with pytest.raises(ValueError, match="positive integer, got 0"):
        TsallisSequenceLoss(0.5, group_size=0)


# ----------------------------------------------------------------------------- code health


def test_every_registered_estimator_comes_from_the_decorator():
    for name, fn in ESTIMATORS.items():
        assert fn.__name__ == name and callable(fn.formula)
    assert est.RANDOMIZED == {"paft"}


def test_a_new_estimator_is_its_formula():
    """The decorator owns validation, stalled groups, verifier coef_y, monitor and registry."""

    @est.estimator("test_half_garl")
    def half_garl(g: est.Group, *, factor: float = 0.5) -> est.Terms:
        c = factor * g.amplified() / g.M
        return est.Terms(c, c, g.amplification())

    try:
        assert get_estimator("test_half_garl") is half_garl
        import inspect

        assert list(inspect.signature(half_garl).parameters) == [
            "log_w", "q", "mode", "paper_normalization", "factor",
        ]  # fmt: skip
        lw = rewards_to_log_w(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
        c = half_garl(lw, 0.5, mode="verifier")
        torch.testing.assert_close(c.coef_z, est.garl(lw, 0.5, mode="verifier").coef_z / 2)
        assert c.stalled.tolist() == [True, False] and torch.equal(c.coef_y, c.coef_z)
        with pytest.raises(ValueError, match=r"q must lie in \[0, 1\]"):
            half_garl(lw, 2.0)
        with pytest.raises(TypeError, match="missing required argument: 'q'"):
            half_garl(lw)
    finally:
        del ESTIMATORS["test_half_garl"]


def test_logits_loss_imports_no_private_helper_of_loss():
    tree = ast.parse((ROOT / "tsallis" / "logits_loss.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("loss", "tsallis.loss"):
            assert not [a.name for a in node.names if a.name.startswith("_")]


def test_no_citation_of_design_notes_in_the_package():
    # the names of planning notes that live outside this repository (built, not written out,
    # so that this test is not itself such a citation)
    notes = ("math", "kernel", "sims", "architecture", "integrations")
    banned = (*(f"{n}.md" for n in notes), "lm_cold_start", "/".join(("shared", "design")))
    paths = [*sorted((ROOT / "tsallis").glob("*.py")), ROOT / "docs" / "api-contract.md",
             ROOT / "docs" / "conventions.md"]  # fmt: skip
    for path in paths:
        text = path.read_text()
        for b in banned:
            assert b not in text, f"{path.name} cites {b}"
        assert not __import__("re").search(r"\bissue \d", text), f"{path.name} cites an issue"


def test_top_level_exports_resolve():
    for name in tsallis.__all__:
        assert getattr(tsallis, name) is not None
