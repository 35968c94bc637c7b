"""The loss on logits (tsallis.logits_loss) against the foundation's loss on sequence log-probs."""

from __future__ import annotations

import pytest
import torch

import tsallis
from kernels import TokenLayout, sequence_logprobs, shift_for_causal_lm
from kernels.testing import assert_close
from tsallis.logits_loss import LogitsLossInfo, TsallisLoss, tsallis_logits_loss

G, M, T, V = 2, 3, 5, 13
B = G * M


def _batch(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2).to(dtype)
    ids = torch.randint(0, V, (B, T), generator=g)
    rat = torch.tensor([[1, 1, 1, 0, 0]] * B, dtype=torch.bool)
    ans = torch.tensor([[0, 0, 0, 1, 1]] * B, dtype=torch.bool)
    rat[4, 2] = False  # a shorter rationale
    ans[4, 4] = False
    return x, ids, rat, ans


REWARDS = torch.tensor([0.0, 1.0, 0.5, 0.0, 0.0, 0.0], dtype=torch.float64)  # group 2 stalls


def _opts(est):
    return {"generator": torch.Generator().manual_seed(7)} if est == "paft" else {}


@pytest.mark.parametrize("estimator", sorted(tsallis.ESTIMATORS))
@pytest.mark.parametrize("mode", ["likelihood", "verifier"])
@pytest.mark.parametrize("fused", [True, False])
def test_agrees_with_foundation_loss(estimator, mode, fused):
    """Same coefficients, same loss, same gradient as tsallis_sequence_loss on the logp's."""
    x, ids, rat, ans = _batch()
    rewards = REWARDS if mode == "verifier" else None
    q = 0.5
    a = x.clone().requires_grad_(True)
    loss, info = tsallis_logits_loss(
        a, ids, q, group_size=M, rationale_mask=rat, answer_mask=ans, estimator=estimator,
        rewards=rewards, fused=fused, impl="torch", return_info=True, **_opts(estimator),
    )  # fmt: skip
    loss.backward()
    b = x.clone().requires_grad_(True)
    o = sequence_logprobs(b, ids, TokenLayout.from_masks(rat, ans), impl="torch")
    want, winfo = tsallis.tsallis_sequence_loss(
        o.logp_z, o.logp_y, q, group_size=M, estimator=estimator, rewards=rewards,
        return_info=True, **_opts(estimator),
    )  # fmt: skip
    want.backward()
    assert_close(loss, want, atol=1e-12, what="loss")
    assert_close(info.coef_z, winfo.coefficients.coef_z, atol=1e-12, what="coef_z")
    assert_close(info.coef_y, winfo.coefficients.coef_y, atol=1e-12, what="coef_y")
    assert_close(info.logp_y, o.logp_y, atol=1e-12, what="logp_y")
    assert_close(a.grad, b.grad, atol=1e-12, what="grad")
    assert isinstance(info, LogitsLossInfo)
    if mode == "verifier" and estimator not in ("sft",):
        assert bool(info.stalled[1]) and info.num_stalled >= 1
        assert (a.grad[3:] == 0).all()  # a stalled group contributes nothing


def test_info_record_fields():
    x, ids, rat, ans = _batch()
    loss, info = tsallis_logits_loss(x, ids, 0.75, group_size=M, rationale_mask=rat,
                                     answer_mask=ans, impl="torch", return_info=True)  # fmt: skip
    assert info.logp_z.shape == (B,) and info.log_w.shape == (G, M)
    assert info.log_w_mean.shape == (G,) and info.max_amplified_advantage.shape == (G,)
    assert info.stalled.dtype == torch.bool
    # mean entropy over rationale and answer tokens, against the textbook value
    active = rat | ans
    p = x.softmax(-1)
    h = -(p * x.log_softmax(-1)).sum(-1)
    assert_close(info.mean_entropy, h[active].mean(), atol=1e-10, what="mean entropy")
    assert torch.isfinite(loss)


def test_reductions_and_module():
    x, ids, rat, ans = _batch()
    kw = dict(group_size=M, rationale_mask=rat, answer_mask=ans, impl="torch")
    per_seq = tsallis_logits_loss(x, ids, 0.3, reduction="none", **kw)
    total = tsallis_logits_loss(x, ids, 0.3, reduction="sum", **kw)
    mean = tsallis_logits_loss(x, ids, 0.3, reduction="mean", **kw)
    assert per_seq.shape == (B,)
    assert_close(per_seq.sum(), total, atol=1e-12, what="sum")
    assert_close(total / G, mean, atol=1e-12, what="mean")
    mod = TsallisLoss(0.3, group_size=M, impl="torch")
    assert_close(mod(x, ids, rat, ans), mean, atol=1e-12, what="module")
    assert mod.last_info is not None and "q=0.3" in repr(mod)


def test_varlen_equals_padded():
    x, ids, rat, ans = _batch(dtype=torch.float32)
    keep = torch.ones(B, T, dtype=torch.bool)
    keep[4, 4] = False  # drop an ignored position from the packed form
    cu = torch.tensor([0, *keep.sum(1).cumsum(0).tolist()])
    a = x.clone().requires_grad_(True)
    padded = tsallis_logits_loss(a, ids, 0.6, group_size=M, rationale_mask=rat,
                                 answer_mask=ans, impl="torch")  # fmt: skip
    padded.backward()
    xp = x[keep].clone().requires_grad_(True)
    packed = tsallis_logits_loss(xp, ids[keep], 0.6, group_size=M, rationale_mask=rat[keep],
                                 answer_mask=ans[keep], cu_seqlens=cu, impl="torch")  # fmt: skip
    packed.backward()
    assert_close(packed, padded, atol=1e-6, what="loss")
    assert_close(xp.grad, a.grad[keep], atol=1e-7, what="grad")


def test_inplace_grad_and_hf_alignment():
    """Full logits + shifted labels (HF causal LM) == sliced logits; in-place == out-of-place."""
    x, ids, rat, ans = _batch(dtype=torch.float32)
    in_rat = torch.zeros(B, T + 1, dtype=torch.bool)
    in_ans = torch.zeros_like(in_rat)
    in_rat[:, 1:] = rat
    in_ans[:, 1:] = ans
    input_ids = torch.zeros(B, T + 1, dtype=torch.long)
    input_ids[:, 1:] = ids
    full = torch.cat([x, torch.randn(B, 1, V)], 1)  # logits[:, t] predicts input_ids[:, t+1]
    labels, r, a = shift_for_causal_lm(input_ids, in_rat, in_ans)
    leaf1 = full.clone().requires_grad_(True)
    l1 = tsallis_logits_loss(leaf1 * 1, labels, 0.5, group_size=M, rationale_mask=r,
                             answer_mask=a, impl="torch", inplace_grad=True)  # fmt: skip
    l1.backward()
    leaf2 = full.clone().requires_grad_(True)
    l2 = tsallis_logits_loss(leaf2[:, :-1], input_ids[:, 1:], 0.5, group_size=M,
                             rationale_mask=in_rat[:, 1:], answer_mask=in_ans[:, 1:],
                             impl="torch")  # fmt: skip
    l2.backward()
    assert_close(l1, l2, atol=1e-6, what="loss")
    assert_close(leaf1.grad, leaf2.grad, atol=1e-7, what="grad")
    assert (leaf1.grad[:, -1] == 0).all()


def test_errors():
    x, ids, rat, ans = _batch()
    kw = dict(rationale_mask=rat, answer_mask=ans, impl="torch")
    with pytest.raises(ValueError, match="not a multiple of group_size"):
        tsallis_logits_loss(x, ids, 0.5, group_size=4, **kw)
    with pytest.raises(ValueError, match="needs answer_mask"):
        tsallis_logits_loss(x, ids, 0.5, group_size=M, rationale_mask=rat)
    with pytest.raises(ValueError, match="rewards must be a tensor of shape"):
        tsallis_logits_loss(x, ids, 0.5, group_size=M, rewards=torch.ones(3), **kw)
    with pytest.raises(ValueError, match="q"):
        tsallis_logits_loss(x, ids, 1.5, group_size=M, **kw)
    with pytest.raises(ValueError):
        tsallis_logits_loss(x, ids, 0.5, group_size=M, estimator="garl_rlooo", **kw)
    with pytest.raises(ValueError, match=r"\[0, V\)"):
        bad = ids.clone()
        bad[0, 0] = V
        tsallis_logits_loss(x, bad, 0.5, group_size=M, **kw)
    with pytest.raises(TypeError, match="floating-point"):
        tsallis_logits_loss(x.long(), ids, 0.5, group_size=M, **kw)
    with pytest.raises(ValueError, match="rationale_mask must have shape"):
        tsallis_logits_loss(x, ids, 0.5, group_size=M, rationale_mask=rat[:, :2], impl="torch")
    with pytest.raises(ValueError, match="reduction"):
        tsallis_logits_loss(x, ids, 0.5, group_size=M, reduction="avg", **kw)


def test_triton_interpreter_path_agrees(monkeypatch):
    """One likelihood-mode and one verifier-mode batch through the Triton kernels (interpreter)."""
    if not __import__("kernels").triton_available():
        pytest.skip("triton not installed")
    from kernels.testing import enable_triton_interpreter

    enable_triton_interpreter()
    x, ids, rat, ans = _batch(dtype=torch.float32)
    for rewards, est in ((None, "garl_rloo"), (REWARDS.float(), "grpo")):
        a = x.clone().requires_grad_(True)
        l1, i1 = tsallis_logits_loss(a, ids, 0.5, group_size=M, rationale_mask=rat,
                                     answer_mask=ans, rewards=rewards, estimator=est,
                                     impl="triton", return_info=True)  # fmt: skip
        l1.backward()
        b = x.clone().double().requires_grad_(True)
        l2, i2 = tsallis_logits_loss(b, ids, 0.5, group_size=M, rationale_mask=rat,
                                     answer_mask=ans, rewards=rewards, estimator=est,
                                     impl="torch", return_info=True)  # fmt: skip
        l2.backward()
        assert_close(l1, l2, atol=1e-5, what=f"{est} loss")
        assert_close(i1.coef_z, i2.coef_z, atol=1e-5, what=f"{est} coef_z")
        assert_close(a.grad, b.grad, atol=1e-5, what=f"{est} grad")
        assert_close(i1.mean_entropy, i2.mean_entropy, atol=1e-5, what="entropy")
