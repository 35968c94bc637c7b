"""The surrogate loss on per-sequence log-probs (docs/conventions.md): its gradient is the
estimator's."""

import math

import pytest
import torch
from latent_model import LatentModel

from tsallis import TsallisSequenceLoss, sequence_loss, tsallis_sequence_loss
from tsallis import estimators as est
from tsallis.estimators import ESTIMATORS, get_estimator


def test_sequence_loss_hand_values_and_reductions():
    logp_z = torch.tensor([-1.0, -2.0, -3.0, -4.0], requires_grad=True)
    logp_y = torch.tensor([-0.5, -0.5, -1.0, -1.0], requires_grad=True)
    coef_z = torch.tensor([[0.5, 0.0], [0.25, 0.25]])
    coef_y = torch.tensor([[1.0, 0.0], [0.0, 0.5]])
    per_seq = sequence_loss(logp_z, logp_y, coef_z, coef_y, reduction="none")
    # -(a·logp_z + b·logp_y): [0.5+0.5, 0, 0.75, 1+0.5]
    torch.testing.assert_close(per_seq, torch.tensor([1.0, 0.0, 0.75, 1.5]))
    total = sequence_loss(logp_z, logp_y, coef_z, coef_y, reduction="sum")
    assert float(total.detach()) == pytest.approx(3.25)
    mean = sequence_loss(logp_z, logp_y, coef_z, coef_y)  # over G = 2 groups
    assert float(mean.detach()) == pytest.approx(1.625)
    gz, gy = torch.autograd.grad(mean, (logp_z, logp_y))
    torch.testing.assert_close(gz, -coef_z.reshape(-1) / 2)
    torch.testing.assert_close(gy, -coef_y.reshape(-1) / 2)


def test_coefficients_are_detached():
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    coef = (logp.detach() * 0 + 1).requires_grad_(True)
    loss = sequence_loss(logp, None, coef, group_size=2)
    loss.backward()
    assert coef.grad is None and logp.grad is not None


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("q", [0.0, 0.6, 1.0])
def test_loss_gradient_is_the_estimators_gradient(name, q):
    # On the latent model, autograd of the surrogate through log p(z_m) and log p(y*|z_m) gives
    # exactly ĝ = -Σ [coef_z ∇log π(z_m) + coef_y ∇log w(z_m)] for one pool.
    model = LatentModel.random_likelihood(4, seed=11)
    z = torch.tensor([[0, 2, 2, 3], [1, 1, 0, 3]])  # G = 2 groups of M = 4
    psi = model.params().clone().requires_grad_(True)
    K = model.K
    log_pi = torch.log_softmax(psi[:K], 0)[z].reshape(-1)
    log_w = torch.nn.functional.logsigmoid(psi[K:])[z].reshape(-1)
    kw = {"generator": torch.Generator().manual_seed(5)} if name == "paft" else {}
    loss = tsallis_sequence_loss(
        log_pi, log_w, q, group_size=4, estimator=name, reduction="sum", **kw
    )
    (grad,) = torch.autograd.grad(loss, psi)
    kw = {"generator": torch.Generator().manual_seed(5)} if name == "paft" else {}
    c = get_estimator(name)(log_w.detach().reshape(2, 4), q, **kw)
    want = model.estimates(c.coef_z, c.coef_y, z).sum(0)
    torch.testing.assert_close(grad, want, rtol=1e-12, atol=1e-14)


def test_verifier_mode_with_rewards_and_no_answer_span():
    logp = torch.tensor([-3.0, -4.0, -5.0, -6.0], requires_grad=True)
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])
    loss, info = tsallis_sequence_loss(
        logp, None, 0.5, group_size=4, rewards=rewards, return_info=True
    )
    c = est.garl_rloo(torch.log(rewards).reshape(1, 4), 0.5, mode="verifier")
    (g,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(g, -c.coef_z.reshape(-1))
    assert info.coefficients.mode == "verifier" and info.num_stalled == 0


def test_all_stalled_batch_gives_zero_loss_and_zero_gradient():
    logp = torch.tensor([-3.0, -4.0, -5.0, -6.0], requires_grad=True)
    loss = tsallis_sequence_loss(logp, None, 1.0, group_size=2, rewards=torch.zeros(4))
    (g,) = torch.autograd.grad(loss, logp)
    assert float(loss.detach()) == 0.0 and torch.all(g == 0) and not torch.isnan(g).any()


def test_module_wraps_the_functional():
    fn = TsallisSequenceLoss(q=0.75, group_size=2, estimator="garl", paper_normalization=True)
    logp_z = torch.tensor([-3.0, -5.0, -4.0, -6.0], requires_grad=True)
    logp_y = torch.log(torch.tensor([0.5, 0.1, 0.2, 0.2]))
    loss = fn(logp_z, logp_y)
    ref = tsallis_sequence_loss(
        logp_z, logp_y, 0.75, group_size=2, estimator="garl", paper_normalization=True
    )
    assert float(loss.detach()) == pytest.approx(float(ref.detach()))
    info = fn.last_info
    assert info.coefficients.estimator == "garl" and info.log_w.shape == (2, 2)
    assert "q=0.75" in repr(fn)


def test_loss_errors():
    lz = torch.zeros(6)
    with pytest.raises(ValueError, match=r"B = 6 sequences is not a multiple of group_size M = 4"):
        tsallis_sequence_loss(lz, lz, 0.5, group_size=4)
    with pytest.raises(ValueError, match="reduction must be one of"):
        sequence_loss(lz, None, torch.zeros(2, 3), reduction="avg")
    with pytest.raises(ValueError, match="shape"):
        sequence_loss(lz, None, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="needs group_size"):
        sequence_loss(lz, None, torch.zeros(6))
    with pytest.raises(TypeError, match="floating"):
        sequence_loss(torch.zeros(6, dtype=torch.long), None, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"shape \[B\]"):
        sequence_loss(torch.zeros(2, 3), None, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="rewards must be a tensor of shape"):
        tsallis_sequence_loss(lz, None, 0.5, group_size=3, rewards=torch.zeros(5))
    with pytest.raises(ValueError, match="needs logp_y"):
        tsallis_sequence_loss(lz, None, 0.5, group_size=3)
    with pytest.raises(ValueError, match="unknown estimator"):
        TsallisSequenceLoss(0.5, group_size=2, estimator="ppo")
    with pytest.raises(ValueError, match=r"q must lie in \[0, 1\]"):
        TsallisSequenceLoss(2.0, group_size=2)
    with pytest.raises(ValueError, match="M = 1"):
        tsallis_sequence_loss(lz, lz - 1, 0.5, group_size=1, estimator="garl_rloo")
    assert math.isfinite(
        float(tsallis_sequence_loss(lz, lz - 1, 0.5, group_size=1, estimator="garl"))
    )
