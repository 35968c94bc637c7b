"""The plain-torch reference path of ``kernels`` (CPU path and float64 oracle)."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import (
    TokenLayout,
    fused_sequence_loss,
    reference,
    sequence_logprobs,
    shift_for_causal_lm,
    token_logprobs,
)
from kernels.reference import naive_logp_entropy
from kernels.testing import assert_close


def _data(shape, V, dtype=torch.float64, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, V, generator=g, dtype=torch.float64) * scale).to(dtype)
    ids = torch.randint(0, V, shape, generator=g)
    return x, ids


@pytest.mark.parametrize("shape,V", [((1,), 1), ((1,), 7), ((6,), 101), ((2, 5), 31)])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_values_match_textbook_float64(shape, V, temperature):
    x, ids = _data(shape, V)
    ids.view(-1)[0] = 0
    ids.view(-1)[-1] = V - 1
    logp, ent = token_logprobs(x, ids, temperature=temperature, return_entropy=True, impl="torch")
    want_lp, want_ent = naive_logp_entropy(x, ids, temperature)
    assert logp.dtype == torch.float64 and logp.shape == ids.shape
    assert_close(logp, want_lp, atol=1e-12, what="logp")
    assert_close(ent, want_ent, atol=1e-12, what="entropy")


def test_float32_output_for_low_precision_logits():
    x, ids = _data((4,), 50, dtype=torch.bfloat16)
    for dt in (torch.bfloat16, torch.float16, torch.float32):
        out = token_logprobs(x.to(dt), ids, impl="torch")
        assert out.dtype == torch.float32


def test_gradcheck_float64_logp_and_entropy():
    x, ids = _data((3,), 9, scale=1.0)
    x.requires_grad_(True)

    def f(z):
        lp, h = token_logprobs(z, ids, temperature=0.8, return_entropy=True, impl="torch")
        return lp, h

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-7)


def test_gradcheck_float64_sequence_logprobs():
    x, ids = _data((2, 4), 7, scale=1.0)
    x.requires_grad_(True)
    lay = TokenLayout.from_masks(
        torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]]), torch.tensor([[0, 0, 1, 0], [0, 1, 1, 0]])
    )

    def f(z):
        o = sequence_logprobs(z, ids, lay, impl="torch", return_entropy=True)
        return o.logp_z, o.logp_y, o.entropy

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-7)


def test_minus_inf_logits():
    x, ids = _data((3,), 11)
    x[0, 3] = float("-inf")
    x[1, :5] = float("-inf")
    ids[1] = 7
    x.requires_grad_(True)
    lp, h = token_logprobs(x, ids, return_entropy=True, impl="torch")
    want_lp, want_h = naive_logp_entropy(x.detach(), ids)
    assert_close(lp, want_lp, atol=1e-12, what="logp")
    assert_close(h, want_h, atol=1e-12, what="entropy")
    (g,) = torch.autograd.grad(lp.sum() + h.sum(), x)
    assert torch.isfinite(g).all()
    assert (g[1, :5] == 0).all()


def test_chunking_does_not_change_results(monkeypatch):
    x, ids = _data((2, 9), 13)
    x.requires_grad_(True)
    full = token_logprobs(x, ids, impl="torch", return_entropy=True)
    (g_full,) = torch.autograd.grad(full[0].sum() + full[1].sum(), x)
    monkeypatch.setattr(reference, "CHUNK_ELEMENTS", 13 * 2)  # two rows per chunk
    small = token_logprobs(x, ids, impl="torch", return_entropy=True)
    (g_small,) = torch.autograd.grad(small[0].sum() + small[1].sum(), x)
    assert torch.equal(full[0], small[0]) and torch.equal(full[1], small[1])
    assert torch.equal(g_full, g_small)


def test_non_contiguous_and_strided_inputs(monkeypatch):
    monkeypatch.setattr(reference, "CHUNK_ELEMENTS", 40)
    base, _ = _data((6, 3), 34)
    x = base.transpose(0, 1)[:, :, ::2]  # [3, 6, 17], batch stride != T * row stride
    assert not x.is_contiguous()
    _, ids = _data((3, 6), 17, seed=1)
    ids_nc = ids.t().contiguous().t()  # non-contiguous ids
    x = x.detach().requires_grad_(True)
    lp = token_logprobs(x, ids_nc, impl="torch")
    assert_close(lp, naive_logp_entropy(x.detach(), ids)[0], atol=1e-12, what="logp")
    (g,) = torch.autograd.grad(lp.sum(), x)
    xc = x.detach().contiguous().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(naive_logp_entropy(xc, ids)[0].sum(), xc)
    assert_close(g, g_ref, atol=1e-12, what="grad")


def test_stride_zero_rows():
    row = torch.randn(1, 10, dtype=torch.float64)
    x = row.expand(4, 10)
    ids = torch.tensor([0, 3, 9, 3])
    lp = token_logprobs(x, ids, impl="torch")
    assert_close(lp, naive_logp_entropy(x.contiguous(), ids)[0], atol=1e-12, what="logp")


@pytest.mark.parametrize("api", ["token_logprobs", "fused"])
def test_inplace_gradient_rejects_overlapping_logits(api):
    """An expanded (stride-0) logits view cannot receive an in-place gradient: clear error."""
    from kernels import TokenLayout, fused_sequence_loss

    leaf = torch.randn(1, 10, dtype=torch.float64, requires_grad=True)
    x = leaf.expand(4, 10)
    ids = torch.tensor([0, 3, 9, 3])
    with pytest.raises(ValueError, match="share memory"):
        if api == "token_logprobs":
            token_logprobs(x, ids, impl="torch", inplace_backward=True)
        else:
            lay = TokenLayout.from_varlen(torch.tensor([0, 4]), torch.ones(4))
            fused_sequence_loss(x, ids, lay, (torch.ones(1), torch.ones(1)), impl="torch",
                                inplace_grad=True)  # fmt: skip


def test_sequence_sums_and_all_masked_sequence():
    x, ids = _data((3, 5), 8)
    rat = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    ans = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0], [0, 1, 0, 0, 0]], dtype=torch.bool)
    ids[1] = -100  # ignored positions may hold anything
    lay = TokenLayout.from_masks(rat, ans)
    x.requires_grad_(True)
    out = sequence_logprobs(x, ids, lay, impl="torch")
    lp = naive_logp_entropy(x.detach(), ids.clamp(min=0))[0]
    assert_close(out.logp_z, (lp * rat).sum(1), atol=1e-12, what="logp_z")
    assert_close(out.logp_y, (lp * ans).sum(1), atol=1e-12, what="logp_y")
    assert out.logp_z[1] == 0 and out.logp_y[1] == 0
    (g,) = torch.autograd.grad(out.logp_z.sum() + out.logp_y.sum(), x)
    assert (g[1] == 0).all() and (g[0, 3:] != 0).any()


def test_batch_invariance_reference():
    """A sequence's log-probs and gradient are bitwise the same whatever else is in the batch."""
    x, ids = _data((5, 70), 6, dtype=torch.float32, seed=3)
    lengths = torch.tensor([70, 3, 64, 65, 1])
    rat = torch.arange(70)[None, :] < lengths[:, None]
    ans = torch.zeros_like(rat)
    ans[:, :2] = rat[:, :2]
    rat = rat & ~ans
    full = TokenLayout.from_masks(rat, ans)
    x.requires_grad_(True)
    o = sequence_logprobs(x, ids, full, impl="torch")
    (g,) = torch.autograd.grad(o.logp_z.sum() + 2 * o.logp_y.sum(), x)
    for b in range(5):
        xb = x.detach()[b : b + 1].clone().requires_grad_(True)
        ob = sequence_logprobs(xb, ids[b : b + 1], TokenLayout.from_masks(rat[b : b + 1],
                               ans[b : b + 1]), impl="torch")  # fmt: skip
        (gb,) = torch.autograd.grad(ob.logp_z.sum() + 2 * ob.logp_y.sum(), xb)
        assert torch.equal(ob.logp_z[0], o.logp_z[b]) and torch.equal(ob.logp_y[0], o.logp_y[b])
        assert torch.equal(gb[0], g[b])


def test_varlen_layout_equals_padded():
    x, ids = _data((2, 4), 9)
    rat = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    ans = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 1]])
    padded = sequence_logprobs(x, ids, TokenLayout.from_masks(rat, ans), impl="torch")
    keep = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    xp = x[keep]
    lay = TokenLayout.from_varlen(torch.tensor([0, 3, 7]), rat[keep], ans[keep])
    packed = sequence_logprobs(xp, ids[keep], lay, impl="torch")
    assert_close(packed.logp_z, padded.logp_z, atol=1e-12, what="logp_z")
    assert_close(packed.logp_y, padded.logp_y, atol=1e-12, what="logp_y")


def test_fused_torch_matches_unfused_and_grad_scaling():
    x, ids = _data((4, 3), 10)
    rat = torch.tensor([[1, 1, 0]] * 4)
    ans = torch.tensor([[0, 0, 1]] * 4)
    lay = TokenLayout.from_masks(rat, ans)
    cz, cy = torch.tensor([0.5, -1.0, 0.0, 2.0]), torch.tensor([1.0, 0.25, 0.0, 0.5])
    x1 = x.clone().requires_grad_(True)
    res = fused_sequence_loss(x1, ids, lay, (cz, cy), normalizer=2.0, impl="torch")
    (3.0 * res.loss).backward()
    x2 = x.clone().requires_grad_(True)
    o = sequence_logprobs(x2, ids, lay, impl="torch")
    loss2 = -(cz.double() * o.logp_z + cy.double() * o.logp_y).sum() / 2.0
    (3.0 * loss2).backward()
    assert_close(res.loss, loss2, atol=1e-12, what="loss")
    assert_close(x1.grad, x2.grad, atol=1e-12, what="grad")
    with pytest.raises(RuntimeError, match="only once"):
        res2 = fused_sequence_loss(x.clone().requires_grad_(True), ids, lay, (cz, cy),
                                   impl="torch")  # fmt: skip
        res2.loss.backward(retain_graph=True)
        res2.loss.backward()


def test_fused_likelihood_rule_sees_answer_logprobs():
    x, ids = _data((4, 3), 10)
    lay = TokenLayout.from_masks(torch.tensor([[1, 1, 0]] * 4), torch.tensor([[0, 0, 1]] * 4))
    seen = {}

    def rule(logp_y):
        seen["y"] = logp_y.clone()
        return torch.softmax(logp_y, 0), torch.ones_like(logp_y)

    res = fused_sequence_loss(x.requires_grad_(True), ids, lay, rule, impl="torch")
    assert torch.equal(seen["y"], res.logp_y)
    assert_close(res.coef_z, torch.softmax(res.logp_y, 0), atol=0, what="coef_z")


def test_inplace_gradient_equals_out_of_place():
    x, ids = _data((2, 3), 12, dtype=torch.float32)
    lay = TokenLayout.from_masks(torch.tensor([[1, 1, 0], [1, 0, 0]]),
                                 torch.tensor([[0, 0, 1], [0, 1, 0]]))  # fmt: skip
    coefs = (torch.tensor([1.0, -0.5]), torch.tensor([0.3, 2.0]))
    a = x.clone().requires_grad_(True)
    fused_sequence_loss(a, ids, lay, coefs, impl="torch").loss.backward()
    leaf = x.clone().requires_grad_(True)
    b = leaf * 1.0  # non-leaf whose storage the kernel may overwrite
    fused_sequence_loss(b, ids, lay, coefs, impl="torch", inplace_grad=True).loss.backward()
    assert_close(leaf.grad, a.grad, atol=1e-6, what="in-place grad")
    # token_logprobs' in-place backward
    c = x.clone().requires_grad_(True)
    c2 = c * 1.0
    token_logprobs(c2, ids, impl="torch", inplace_backward=True).sum().backward()
    d = x.clone().requires_grad_(True)
    token_logprobs(d, ids, impl="torch").sum().backward()
    assert_close(c.grad, d.grad, atol=1e-6, what="in-place backward")


def test_inplace_clobber_of_saved_tensor_raises():
    x, ids = _data((2, 3), 12, dtype=torch.float32)
    leaf = x.clone().requires_grad_(True)
    z = leaf.exp()  # exp saves its output for backward: overwriting it must not go unnoticed
    lay = TokenLayout.from_masks(torch.ones(2, 3), None)
    res = fused_sequence_loss(z, ids, lay, (torch.ones(2), torch.ones(2)), impl="torch",
                              inplace_grad=True)  # fmt: skip
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        res.loss.backward()


def test_causal_lm_shift_equals_slicing():
    x, ids = _data((2, 6), 9)
    rat = torch.tensor([[0, 1, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0]])
    ans = torch.tensor([[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 0]])
    sliced = sequence_logprobs(
        x[:, :-1], ids[:, 1:], TokenLayout.from_masks(rat[:, 1:], ans[:, 1:]), impl="torch"
    )
    labels, r, a = shift_for_causal_lm(ids, rat, ans)
    full = sequence_logprobs(x, labels, TokenLayout.from_masks(r, a), impl="torch")
    assert_close(full.logp_z, sliced.logp_z, atol=1e-12, what="logp_z")
    assert_close(full.logp_y, sliced.logp_y, atol=1e-12, what="logp_y")


# ---------------------------------------------------------------------------------- errors
def test_errors_are_clear():
    x, ids = _data((3,), 5)
    with pytest.raises(ValueError, match=r"\[0, V\) = \[0, 5\).*found 5"):
        token_logprobs(x, torch.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match="found -1"):
        token_logprobs(x, torch.tensor([0, -1, 1]))
    with pytest.raises(ValueError, match="leading shape"):
        token_logprobs(x, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="floating-point"):
        token_logprobs(torch.ones(3, 5, dtype=torch.int64), ids)
    with pytest.raises(TypeError, match="integer tensor"):
        token_logprobs(x, ids.double())
    with pytest.raises(ValueError, match=r"\[N, V\] or \[B, T, V\]"):
        token_logprobs(torch.randn(5), ids)
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(x, ids, temperature=0.0)
    with pytest.raises(ValueError, match="impl must be one of"):
        token_logprobs(x, ids, impl="cuda")
    with pytest.raises(ValueError, match="both rationale and answer"):
        TokenLayout.from_masks(torch.tensor([[1, 1]]), torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="cu_seqlens must start at 0"):
        TokenLayout.from_varlen(torch.tensor([0, 2, 1]), torch.ones(3))
    with pytest.raises(ValueError, match="layout describes 4 tokens"):
        sequence_logprobs(x, ids, TokenLayout.from_masks(torch.ones(1, 4)))
    with pytest.raises(ValueError, match="coef_z must have shape"):
        fused_sequence_loss(x, ids, TokenLayout.from_masks(torch.ones(1, 3)),
                            (torch.ones(2), torch.ones(1)), impl="torch")  # fmt: skip


def test_impl_triton_without_gpu_or_interpreter(monkeypatch):
    if not kernels.triton_available():
        pytest.skip("triton not installed")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x, ids = _data((2,), 5)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        token_logprobs(x, ids, impl="triton")
    assert kernels.resolve_impl("auto", x.device) == "torch"


# ------------------------------------------------------------------------- properties, docs
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 9), min_size=1, max_size=5),
    V=st.integers(1, 23),
    seed=st.integers(0, 2**16),
    temperature=st.sampled_from([0.5, 1.0, 1.3]),
)
def test_masking_a_token_equals_deleting_it(lengths, V, seed, temperature):
    """Packed sequences: the sums ignore masked rows exactly as if they were not there."""
    g = torch.Generator().manual_seed(seed)
    N = sum(lengths)
    x = torch.randn(N, V, generator=g, dtype=torch.float64) * 2
    ids = torch.randint(0, V, (N,), generator=g)
    span = torch.randint(0, 3, (N,), generator=g)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    out = sequence_logprobs(x, ids, TokenLayout.from_varlen(cu, span == 1, span == 2),
                            temperature=temperature, impl="torch")  # fmt: skip
    keep = span != 0
    seq = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    kept_len = torch.zeros(len(lengths), dtype=torch.long).index_add_(
        0, seq[keep], torch.ones_like(seq[keep])
    )
    cu2 = torch.tensor([0, *kept_len.cumsum(0).tolist()])
    out2 = sequence_logprobs(x[keep], ids[keep],
                             TokenLayout.from_varlen(cu2, span[keep] == 1, span[keep] == 2),
                             temperature=temperature, impl="torch")  # fmt: skip
    assert_close(out.logp_z, out2.logp_z, atol=1e-12, what="logp_z")
    assert_close(out.logp_y, out2.logp_y, atol=1e-12, what="logp_y")
    lp, _ = naive_logp_entropy(x, ids, temperature)
    want_z = torch.zeros(len(lengths), dtype=torch.float64).index_add_(0, seq, lp * (span == 1))
    assert_close(out.logp_z, want_z, atol=1e-10, what="logp_z vs textbook")


def test_docstring_examples_run():
    """The kernels package's docstring examples (doctests; kernels/ is not in testpaths)."""
    import doctest

    from kernels import layout, ops

    for mod in (layout, ops, reference):
        res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
        assert res.failed == 0, f"{mod.__name__}: {res.failed} doctest failures"
    assert doctest.testmod(ops).attempted >= 3
