"""The tiny transformer cold-start simulator: causality, marker forcing, p0 control, batch
independence, and the gradient through TsallisLoss against the hand formula (Eq. 12)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sims.transformer import (
    ModelSpec,
    Task,
    answer_logprob,
    bias_for_p0,
    estimate_p,
    forward,
    init_params,
    q_at_step,
    sample_sequences,
    sequence_loss,
    train,
)

TASK, SPEC = Task(), ModelSpec()


def _params(E=2, p0=1e-3, std=None):
    spec = SPEC if std is None else ModelSpec(init_std=std)
    return init_params(TASK, spec, np.arange(E) + 11, [bias_for_p0(TASK, p0)] * E), spec


def test_causal():
    params, spec = _params(std=0.5)
    ids = torch.randint(0, TASK.V, (2, 3, TASK.T), generator=torch.Generator().manual_seed(0))
    base = forward(params, ids, spec)
    for t in range(1, TASK.T):
        ids2 = ids.clone()
        ids2[:, :, t] = (ids2[:, :, t] + 1) % TASK.V
        out = forward(params, ids2, spec)
        assert torch.equal(out[:, :, :t], base[:, :, :t])
        assert not torch.allclose(out[:, :, t:], base[:, :, t:])


def test_members_independent():
    params, spec = _params(E=3, std=0.5)
    ids = torch.randint(0, TASK.V, (3, 4, TASK.T), generator=torch.Generator().manual_seed(1))
    full = forward(params, ids, spec)
    one = forward({k: v[1:2] for k, v in params.items()}, ids[1:2], spec)
    torch.testing.assert_close(one[0], full[1], rtol=0, atol=1e-6)


def test_marker_forcing_and_layout():
    # a large init makes both sampled and forced markers common
    params, spec = _params(E=4, p0=1e-2, std=1.0)
    b = sample_sequences(params, TASK, spec, torch.arange(4) + 3, 0, 4, 16, verifier=False)
    k, forced = b.rat_len, b.forced
    assert forced.any() and (~forced).any()
    ar = torch.arange(TASK.T)
    marker_pos = 2 + k
    at_marker = torch.gather(b.ids, 2, marker_pos[..., None]).squeeze(-1)
    assert bool((at_marker == TASK.marker).all())
    assert bool((k <= TASK.R).all()) and bool((k[forced] == TASK.R).all())
    # no marker inside the sampled rationale tokens
    inside = (ar >= 2) & (ar < marker_pos[..., None])
    assert not bool(((b.ids == TASK.marker) & inside).any())
    # the rationale span: sampled tokens plus a sampled marker; a forced marker is in no span
    span_len = b.rat_mask.sum(-1)
    assert torch.equal(span_len, k + (~forced).long())
    assert not bool((b.rat_mask & b.ans_mask).any())
    # answer: L gold tokens right after the marker
    assert bool((b.ans_mask.sum(-1) == TASK.L).all())
    a, bb = b.prompt // TASK.n, b.prompt % TASK.n
    for j in range(TASK.L):
        pos = (marker_pos + 1 + j)[..., None]
        got = torch.gather(b.ids, 2, pos).squeeze(-1)
        want = TASK.n + 1 + (a + (j + 1) * bb).repeat_interleave(16, 1) % TASK.n
        assert torch.equal(got, want)


@pytest.mark.parametrize("p0", [1e-2, 1e-12, 1e-30])
def test_p0_control(p0):
    params, spec = _params(E=2, p0=p0)
    lp = estimate_p(params, TASK, spec, np.arange(2) + 11, samples_per_prompt=16)
    assert np.all(np.abs(lp / math.log(10) - math.log10(p0)) < 0.15)


def test_bias_for_p0_errors():
    with pytest.raises(ValueError, match="p0 must lie"):
        bias_for_p0(TASK, TASK.p0_max())
    with pytest.raises(ValueError, match="p0 must lie"):
        bias_for_p0(TASK, 0.0)
    with pytest.raises(ValueError):
        Task(n=1)
    with pytest.raises(ValueError):
        ModelSpec(d=128)


def test_step_schedule_and_train_errors():
    from tsallis.schedules import Step

    for s in range(5):  # the vectorised schedule is tsallis.schedules.Step, member by member
        expect = [Step(at_step=3, q_before=1.0, q_after=q)(s) for q in (0.0, 0.25)]
        assert q_at_step([0.0, 0.25], s, 3).tolist() == expect
    assert q_at_step([0.0, 0.25], 0, None).tolist() == [0.0, 0.25]
    with pytest.raises(ValueError, match="mode"):
        train(TASK, SPEC, [1], 1e-3, 0.5, 0.1, steps=1, mode="x")
    with pytest.raises(ValueError, match="optimizer"):
        train(TASK, SPEC, [1], 1e-3, 0.5, 0.1, steps=1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="one entry per member"):
        train(TASK, SPEC, [1, 2, 3], [1e-3, 1e-4], 0.5, 0.1, steps=1)
    with pytest.raises(ValueError, match="unknown estimator"):
        train(TASK, SPEC, [1], 1e-3, 0.5, 0.1, steps=1, estimator="nope")


@pytest.mark.parametrize(
    "kw",
    [
        {"optimizer": "sgd", "mode": "likelihood"},
        {"optimizer": "adam", "mode": "verifier", "lr": 0.05},
        {"optimizer": "adam", "mode": "likelihood", "lr": 0.05, "switch": 2},
    ],
)
def test_batched_equals_one_at_a_time(kw):
    kw = dict(kw)
    lr = kw.pop("lr", 0.3)
    keys, p0s, qs = [5, 6, 7], [1e-2, 1e-3, 1e-6], [0.0, 0.5, 1.0]
    res = train(TASK, SPEC, keys, p0s, qs, lr, steps=4, freeze_escaped=False, **kw)
    for i in range(3):
        one = train(TASK, SPEC, [keys[i]], p0s[i], qs[i], lr, steps=4, freeze_escaped=False, **kw)
        for k, v in one.params.items():
            torch.testing.assert_close(v[0], res.params[k][i], rtol=0, atol=1e-6)
        np.testing.assert_allclose(one.log_p_hat[0], res.log_p_hat[i], rtol=0, atol=1e-6)


def test_gradient_is_the_hand_formula():
    """d(loss)/dθ through TsallisLoss = autograd of -Σ_m [c_m log p(z_m) + (w_m/w̄^q) log p(y|z_m)]
    /(M·G) with c_m = w_m/w̄^q - (w̄_¬m)^(1-q) computed by hand (Eq. 12)."""
    torch.manual_seed(0)
    params, spec = _params(E=2, p0=1e-2, std=0.3)
    params = {k: v.double().requires_grad_(True) for k, v in params.items()}
    G, M, q = 2, 4, 0.6
    b = sample_sequences(params, TASK, spec, torch.tensor([3, 4]), 0, G, M, verifier=False)
    loss, _ = sequence_loss(forward(params, b.ids, spec), b, TASK, q, M, estimator="garl_rloo",
                            verifier=False)  # fmt: skip
    got = torch.autograd.grad(loss, list(params.values()))
    logits = forward(params, b.ids, spec)
    lp = torch.log_softmax(logits[:, :, :-1], -1)
    tok = torch.gather(lp, -1, b.ids[:, :, 1:, None]).squeeze(-1)
    logp_z = (tok * b.rat_mask[:, :, 1:]).sum(-1)
    logp_y = (tok * b.ans_mask[:, :, 1:]).sum(-1)
    w = logp_y.detach().exp().reshape(2, G, M)
    wbar = w.mean(-1, keepdim=True)
    loo = (w.sum(-1, keepdim=True) - w) / (M - 1)
    amp = w / wbar**q
    c = amp - loo ** (1 - q)
    hand = -(c.reshape(2, -1) * logp_z + amp.reshape(2, -1) * logp_y).sum() / (M * G)
    want = torch.autograd.grad(hand, list(params.values()))
    for g1, g2 in zip(got, want, strict=True):
        torch.testing.assert_close(g1, g2, rtol=1e-6, atol=1e-9)
    # and the measured weights are the teacher-forced answer probabilities
    torch.testing.assert_close(answer_logprob(params, b, spec), logp_y.detach())


def test_adam_threshold_smoke():
    """At p0 = 1e-30 with ε = 1e-8 (q* ≈ 0.73): q = 1 escapes within 40 steps, q = 0 does not
    move (its gradient is ≈ 1e-30·s ≪ ε)."""
    r = train(TASK, SPEC, [1, 2], 1e-30, [0.0, 1.0], 0.05, steps=40, optimizer="adam",
              delta=0.05)  # fmt: skip
    assert r.censored[0] and not r.censored[1]
    assert r.grad_absmax0[0] < 1e-25 < 0.1 < r.grad_absmax0[1]
    assert abs(np.nanmax(r.log_p_hat[0]) / math.log(10) + 30) < 0.5
