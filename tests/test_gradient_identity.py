"""Prop. 4.1 with autograd on a categorical latent model: every J_Q member has the RLVR gradient
direction, amplified by P^(-q); and the posterior form of the gradient (Prop. 4.1)."""

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from latent_model import LatentModel

from tsallis import amplification, loss_q


@given(q=st.floats(0.0, 1.0), seed=st.integers(0, 100_000), K=st.integers(2, 6))
@example(q=0.0, seed=0, K=2)
@example(q=1.0, seed=1, K=6)
def test_gradient_identity(q, seed, K):
    model = LatentModel.random_likelihood(K, seed, w_range=(1e-3, 0.999))
    P = model.success_prob().detach()
    g_q = model.true_grad(q)
    g_0 = model.true_grad(0.0)
    g_1 = model.true_grad(1.0)
    torch.testing.assert_close(g_q, amplification(P, q) * g_0, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(g_q, P ** (1 - q) * g_1, rtol=1e-10, atol=1e-14)
    assert float(torch.dot(g_q, g_0)) >= 0  # same direction


@given(q=st.floats(0.0, 1.0), seed=st.integers(0, 100_000))
def test_posterior_form_of_the_gradient(q, seed):
    # ∇ℓ_q = -P^(1-q)·E_{z ~ p(z|x*, y*)}[∇log p(z, y*|x*)], summed exactly over the K latents.
    model = LatentModel.random_likelihood(4, seed)
    pi, w = model.prior(), model.weights()
    P = (pi * w).sum()
    posterior = pi * w / P
    score_z, score_y = model.scores()
    expected = -(P ** (1 - q)) * (posterior[:, None] * (score_z + score_y)).sum(0)
    torch.testing.assert_close(model.true_grad(q), expected, rtol=1e-10, atol=1e-14)


def test_prior_form_of_the_rl_gradient():
    # ∇ℓ_0 = -E_{z ~ p(z|x*)}[w(z)·∇log p(z, y*|x*)]
    model = LatentModel.random_likelihood(5, 3)
    pi, w = model.prior(), model.weights()
    score_z, score_y = model.scores()
    expected = -(pi[:, None] * w[:, None] * (score_z + score_y)).sum(0)
    torch.testing.assert_close(model.true_grad(0.0), expected, rtol=1e-12, atol=1e-15)


def test_loss_endpoints_on_the_model():
    model = LatentModel.random_likelihood(3, 0)
    P = model.success_prob()
    assert float(loss_q(P, 0.0)) == pytest.approx(float(1 - P))
    assert float(loss_q(P, 1.0)) == pytest.approx(float(-torch.log(P)))
