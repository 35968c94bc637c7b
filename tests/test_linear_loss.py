"""The loss from hidden states (kernels.linear, tsallis.linear_loss) against float64 autograd.

The oracle is textbook autograd of ``log_softmax(softcap(scale (H W^T + b)) / tau)`` in float64
on the materialised logits; shapes are awkward (N, H, V not multiples of anything, V = 1,
sequences with no scored row, empty sequences, chunks of one row).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tsallis
from kernels import (
    TokenLayout,
    fused_linear_sequence_loss,
    gather_lm_head,
    linear_token_logprobs,
)
from kernels.linear import TRL_TILE, chunk_rows
from kernels.testing import assert_close

F64 = torch.float64


def _oracle_logp(h, w, b, ids, scale=1.0, cap=None, tau=1.0):
    """float64 per-token log-probs and entropies on the materialised logits (autograd-able)."""
    z = h @ w.T
    if b is not None:
        z = z + b
    z = z * scale
    if cap is not None:
        z = cap * torch.tanh(z / cap)
    lsm = (z / tau).log_softmax(-1)
    lp = lsm.gather(-1, ids.clamp(0, w.shape[0] - 1).unsqueeze(-1)).squeeze(-1)
    ent = -(lsm.exp() * lsm).sum(-1)
    return lp, ent


def _problem(N, H, V, B, seed=0, with_bias=True):
    """Packed rows: sequence lengths summing to N (some empty), spans mixed, ids in range."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, H, generator=g, dtype=F64)
    w = torch.randn(V, H, generator=g, dtype=F64) / math.sqrt(H) * 2
    b = torch.randn(V, generator=g, dtype=F64) if with_bias else None
    ids = torch.randint(0, V, (N,), generator=g)
    cuts = torch.sort(torch.randint(0, N + 1, (B - 1,), generator=g)).values
    cu = torch.cat([torch.tensor([0]), cuts, torch.tensor([N])])
    span = torch.randint(0, 3, (N,), generator=g)
    rat, ans = span == 1, span == 2
    return h, w, b, ids, cu, rat, ans


def _oracle_loss(h, w, b, ids, lay, cz, cy, norm, **head):
    lp, ent = _oracle_logp(h, w, b, ids, **head)
    seq = lay.seq_index()
    B = lay.num_sequences
    z = torch.zeros(B, dtype=F64).index_add(0, seq, torch.where(lay.span == 1, lp, 0.0))
    y = torch.zeros(B, dtype=F64).index_add(0, seq, torch.where(lay.span == 2, lp, 0.0))
    return -(cz * z + cy * y).sum() / norm, z, y, lp, ent


HEADS = [
    {},
    {"scale": 0.7, "cap": 2.5, "tau": 0.8},
    {"scale": 1.9, "tau": 1.3},
]


def _kw(head):
    return {"logit_scale": head.get("scale", 1.0), "final_logit_softcapping": head.get("cap"),
            "temperature": head.get("tau", 1.0)}  # fmt: skip


@pytest.mark.parametrize("N,H,V,B,chunk", [(23, 7, 19, 4, None), (17, 5, 1, 3, 3),
                                           (30, 9, 41, 6, 1), (11, 3, 29, 5, 64)])  # fmt: skip
@pytest.mark.parametrize("head", HEADS, ids=["plain", "softcap", "scale"])
@pytest.mark.parametrize("mode", ["verifier", "likelihood"])
def test_fused_linear_matches_float64_autograd(N, H, V, B, chunk, head, mode):
    h, w, b, ids, cu, rat, ans = _problem(N, H, V, B, seed=N + V)
    lay = TokenLayout.from_varlen(cu, rat, ans)
    g = torch.Generator().manual_seed(1)
    cz, cy = torch.randn(B, generator=g, dtype=F64), torch.randn(B, generator=g, dtype=F64)
    hd = {"scale": head.get("scale", 1.0), "cap": head.get("cap"), "tau": head.get("tau", 1.0)}
    # likelihood mode: coefficients are a function of the answer log-probs (detached)
    with torch.no_grad():
        _, _, y_ref, _, _ = _oracle_loss(h, w, b, ids, lay, cz, cy, 1.0, **hd)

    def rule(logp_y):
        return torch.exp(0.3 * logp_y) * cz, -logp_y.tanh() * cy

    coefs = (cz, cy) if mode == "verifier" else rule
    want_cz, want_cy = (cz, cy) if mode == "verifier" else rule(y_ref)
    hh, ww, bb = (t.clone().requires_grad_(True) for t in (h, w, b))
    out = fused_linear_sequence_loss(hh, ww, ids, lay, coefs, bias=bb, normalizer=1.5,
                                     return_entropy=True, chunk_size=chunk,
                                     **_kw(head))  # fmt: skip
    out.loss.backward()
    h2, w2, b2 = (t.clone().requires_grad_(True) for t in (h, w, b))
    want, z, y, lp, ent = _oracle_loss(h2, w2, b2, ids, lay, want_cz, want_cy, 1.5, **hd)
    want.backward()
    active = rat | ans
    assert_close(out.loss, want, atol=1e-12, what="loss")
    assert_close(out.logp_z, z, atol=1e-12, what="logp_z")
    assert_close(out.logp_y, y, atol=1e-12, what="logp_y")
    assert_close(out.coef_z, want_cz, atol=1e-12, what="coef_z")
    assert_close(out.token_logp, torch.where(active, lp, 0.0), atol=1e-12, what="token logp")
    assert_close(out.entropy, torch.where(active, ent, 0.0), atol=1e-12, what="entropy")
    assert_close(hh.grad, h2.grad, atol=1e-12, what="d hidden")
    assert_close(ww.grad, w2.grad, atol=1e-12, what="d weight")
    assert_close(bb.grad, b2.grad, atol=1e-12, what="d bias")
    assert (hh.grad[~active] == 0).all()  # ignored rows: exactly zero


def test_float32_inputs_close_to_float64_and_3d_hidden():
    h, w, b, ids, _, _, _ = _problem(24, 16, 37, 2, seed=3)
    rat = torch.zeros(4, 6, dtype=torch.bool)
    rat[:, :4] = True
    ans = torch.zeros(4, 6, dtype=torch.bool)
    ans[:, 4] = True
    lay = TokenLayout.from_masks(rat, ans)
    cz, cy = torch.tensor([1.0, -0.5, 0.25, 2.0]), torch.tensor([0.5, 1.0, -1.0, 0.0])
    h32 = h.float().view(4, 6, 16).requires_grad_(True)
    w32 = w.float().requires_grad_(True)
    out = fused_linear_sequence_loss(h32, w32, ids.view(4, 6), lay, (cz, cy), bias=b.float())
    out.loss.backward()
    assert out.loss.dtype == torch.float32 and h32.grad.shape == (4, 6, 16)
    h2, w2 = h.view(4, 6, 16).clone().requires_grad_(True), w.clone().requires_grad_(True)
    lay_d = TokenLayout.from_masks(rat, ans)
    want, *_ = _oracle_loss(h2.view(24, 16), w2, b, ids, lay_d, cz.double(), cy.double(), 1.0)
    want.backward()
    assert_close(out.loss, want, atol=2e-5, rtol=1e-6, what="loss")
    assert_close(h32.grad, h2.grad, atol=2e-6, what="d hidden")
    assert_close(w32.grad, w2.grad, atol=2e-6, what="d weight")


def test_linear_token_logprobs_values_and_both_gradients():
    h, w, b, ids, _, _, _ = _problem(13, 6, 23, 2, seed=5)
    g = torch.Generator().manual_seed(2)
    g_lp, g_ent = torch.randn(13, generator=g, dtype=F64), torch.randn(13, generator=g, dtype=F64)
    for head in HEADS:
        hd = {"scale": head.get("scale", 1.0), "cap": head.get("cap"), "tau": head.get("tau", 1.0)}
        hh, ww, bb = (t.clone().requires_grad_(True) for t in (h, w, b))
        lp, ent = linear_token_logprobs(hh, ww, ids, bias=bb, return_entropy=True, chunk_size=4,
                                        **_kw(head))  # fmt: skip
        ((lp * g_lp).sum() + (ent * g_ent).sum()).backward()
        h2, w2, b2 = (t.clone().requires_grad_(True) for t in (h, w, b))
        lp2, ent2 = _oracle_logp(h2, w2, b2, ids, **hd)
        ((lp2 * g_lp).sum() + (ent2 * g_ent).sum()).backward()
        assert_close(lp, lp2, atol=1e-12, what="logp")
        assert_close(ent, ent2, atol=1e-12, what="entropy")
        for a, e, n in ((hh, h2, "d hidden"), (ww, w2, "d weight"), (bb, b2, "d bias")):
            assert_close(a.grad, e.grad, atol=1e-12, what=n)


def test_frozen_and_tied_weights():
    h, w, b, ids, cu, rat, ans = _problem(12, 5, 17, 3, seed=7, with_bias=False)
    lay = TokenLayout.from_varlen(cu, rat, ans)
    cz = cy = torch.ones(3, dtype=F64)
    # frozen: no weight gradient is computed, the hidden one is unchanged
    hh = h.clone().requires_grad_(True)
    out = fused_linear_sequence_loss(hh, w, ids, lay, (cz, cy))
    out.loss.backward()
    h2 = h.clone().requires_grad_(True)
    _oracle_loss(h2, w, None, ids, lay, cz, cy, 1.0)[0].backward()
    assert_close(hh.grad, h2.grad, atol=1e-12, what="d hidden, frozen head")
    # tied: the same parameter embeds the inputs and is the head; autograd adds both paths
    emb = torch.nn.Embedding(17, 5).double()
    inp = torch.randint(0, 17, (12,), generator=torch.Generator().manual_seed(0))
    loss = fused_linear_sequence_loss(emb(inp) * 1.5, emb.weight, ids, lay, (cz, cy)).loss
    (g_ours,) = torch.autograd.grad(loss, emb.weight)
    want = _oracle_loss(emb(inp) * 1.5, emb.weight, None, ids, lay, cz, cy, 1.0)[0]
    (g_want,) = torch.autograd.grad(want, emb.weight)
    assert_close(g_ours, g_want, atol=1e-12, what="d tied weight")


def test_upstream_gradient_scales_and_backward_once():
    h, w, b, ids, cu, rat, ans = _problem(10, 4, 9, 2, seed=9)
    lay = TokenLayout.from_varlen(cu, rat, ans)
    coefs = (torch.tensor([1.0, -2.0], dtype=F64), torch.tensor([0.5, 1.0], dtype=F64))
    grads = []
    for factor in (1.0, 0.125):
        hh, ww = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
        out = fused_linear_sequence_loss(hh, ww, ids, lay, coefs, bias=b)
        (out.loss * factor).backward()
        grads.append((hh.grad, ww.grad))
        with pytest.raises(RuntimeError, match="only once"):
            out.loss.backward()
    assert_close(grads[1][0], grads[0][0] * 0.125, atol=1e-15, what="d hidden scaled")
    assert_close(grads[1][1], grads[0][1] * 0.125, atol=1e-15, what="d weight scaled")
    # folding the factor into the normaliser gives the same gradient
    hh = h.clone().requires_grad_(True)
    fused_linear_sequence_loss(hh, w, ids, lay, coefs, bias=b, normalizer=8.0).loss.backward()
    assert_close(hh.grad, grads[1][0], atol=1e-15, what="normaliser fold")


def test_bitwise_repeatable_and_batch_invariant():
    """A sequence's log-probs and hidden-state gradient are the same bits alone and inside a
    larger batch (fixed chunk shape), and a second call repeats the bits."""
    H, V, C = 16, 257, 8
    g = torch.Generator().manual_seed(11)
    w = torch.randn(V, H, generator=g) / 4
    seqs = [torch.randn(L, H, generator=g) for L in (9, 5, 14)]
    ids = [torch.randint(0, V, (len(s),), generator=g) for s in seqs]
    coef = torch.tensor(0.75)

    def run(which):
        hid = torch.cat([seqs[i] for i in which]).requires_grad_(True)
        tok = torch.cat([ids[i] for i in which])
        lens = torch.tensor([len(seqs[i]) for i in which])
        cu = torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)])
        rat = torch.ones(len(tok), dtype=torch.bool)
        ans = torch.zeros_like(rat)
        for e in cu[1:]:
            rat[e - 2], ans[e - 2] = False, True
        lay = TokenLayout.from_varlen(cu, rat, ans)
        k = len(which)
        out = fused_linear_sequence_loss(hid, w, tok, lay, (coef.expand(k), coef.expand(k)),
                                         chunk_size=C)  # fmt: skip
        out.loss.backward()
        return out, hid.grad, cu

    alone, g_alone, _ = run([1])
    both, g_both, cu = run([0, 1, 2])
    assert torch.equal(alone.logp_z, both.logp_z[1:2])
    assert torch.equal(alone.logp_y, both.logp_y[1:2])
    assert torch.equal(g_alone, g_both[cu[1] : cu[2]])
    again, g_again, _ = run([0, 1, 2])
    assert torch.equal(again.loss, both.loss) and torch.equal(g_again, g_both)


def test_no_scored_rows_and_empty_sequences():
    h, w, b, ids, _, _, _ = _problem(6, 3, 5, 1, seed=2)
    lay = TokenLayout.from_varlen(torch.tensor([0, 0, 6, 6]), torch.zeros(6, dtype=torch.bool))
    hh, ww = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
    ids = torch.full((6,), -100)  # ignored rows may hold anything
    out = fused_linear_sequence_loss(hh, ww, ids, lay, (torch.ones(3), torch.ones(3)))
    out.loss.backward()
    assert float(out.loss.detach()) == 0.0 and (out.logp_z == 0).all()
    assert (hh.grad == 0).all() and (ww.grad == 0).all()


def test_input_errors_are_clear():
    h, w, b, ids, cu, rat, ans = _problem(8, 4, 7, 2)
    lay = TokenLayout.from_varlen(cu, rat, ans)
    c = (torch.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match=r"weight must have shape \[V, H\] = \[V, 4\]"):
        fused_linear_sequence_loss(h, w[:, :3], ids, lay, c)
    with pytest.raises(ValueError, match="bias must be"):
        fused_linear_sequence_loss(h, w, ids, lay, c, bias=b[:3])
    with pytest.raises(ValueError, match="token ids must lie in"):
        bad = ids.clone()
        bad[torch.nonzero(rat | ans)[0, 0]] = 7
        fused_linear_sequence_loss(h, w, bad, lay, c)
    with pytest.raises(ValueError, match="final_logit_softcapping"):
        fused_linear_sequence_loss(h, w, ids, lay, c, final_logit_softcapping=0.0)
    with pytest.raises(ValueError, match="logit_scale"):
        fused_linear_sequence_loss(h, w, ids, lay, c, logit_scale=float("nan"))
    with pytest.raises(ValueError, match="layout describes"):
        fused_linear_sequence_loss(h[:5], w, ids[:5], lay, c)
    with pytest.raises(TypeError, match="hidden must be a floating-point"):
        fused_linear_sequence_loss(ids, w, ids, lay, c)
    with pytest.raises(ValueError, match="chunk_size"):
        fused_linear_sequence_loss(h, w, ids, lay, c, chunk_size=0)


def test_zero3_partitioned_weight_is_a_clear_error_and_dtensor_is_gathered():
    w = torch.nn.Parameter(torch.empty(0))
    w.ds_id, w.ds_status = 3, type("S", (), {"name": "NOT_AVAILABLE"})()
    with pytest.raises(ValueError, match="ZeRO-3 partitioned.*GatheredParameters"):
        gather_lm_head(w)
    full = torch.nn.Parameter(torch.ones(3, 2))
    full.ds_id, full.ds_status = 4, type("S", (), {"name": "AVAILABLE"})()
    assert gather_lm_head(full)[0] is full  # already gathered (e.g. a tied embedding)
    dist = pytest.importorskip("torch.distributed")
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        mesh = dist.device_mesh.init_device_mesh("cpu", (1,))
        base = torch.randn(7, 4, dtype=F64)
        dw = distribute_tensor(base, mesh, [Shard(0)]).requires_grad_(True)
        assert isinstance(dw, DTensor)
        h, _, _, ids, cu, rat, ans = _problem(9, 4, 7, 2)
        lay = TokenLayout.from_varlen(cu, rat, ans)
        out = fused_linear_sequence_loss(h, dw, ids, lay, (torch.ones(2), torch.ones(2)))
        out.loss.backward()
        w2 = base.clone().requires_grad_(True)
        _oracle_loss(h, w2, None, ids, lay, torch.ones(2, dtype=F64), torch.ones(2, dtype=F64),
                     1.0)[0].backward()  # fmt: skip
        assert isinstance(dw.grad, DTensor)
        assert_close(dw.grad.redistribute(mesh, [Replicate()]).to_local(), w2.grad, atol=1e-12,
                     what="d weight through full_tensor()")  # fmt: skip
    finally:
        dist.destroy_process_group()


@given(st.integers(1, 20000), st.integers(1, 300000), st.integers(1, 3))
def test_chunk_never_exceeds_one_trl_tile(n, V, buffers):
    C = chunk_rows(n, V, buffers)
    assert 1 <= C <= n
    assert C == 1 or C * V * buffers <= min(n, TRL_TILE[0]) * TRL_TILE[1]


# --------------------------------------------------------------------------------------------
# tsallis.tsallis_linear_loss against tsallis.tsallis_logits_loss on materialised logits
# --------------------------------------------------------------------------------------------
def _opts(est):
    return {"generator": torch.Generator().manual_seed(7)} if est == "paft" else {}


@pytest.mark.parametrize("estimator", sorted(tsallis.ESTIMATORS))
@pytest.mark.parametrize("mode", ["likelihood", "verifier"])
def test_tsallis_linear_loss_is_the_logits_loss(estimator, mode):
    G, M, T, H, V = 2, 3, 5, 6, 13
    B = G * M
    g = torch.Generator().manual_seed(0)
    hid = torch.randn(B, T, H, generator=g, dtype=F64)
    w = torch.randn(V, H, generator=g, dtype=F64)
    bias = torch.randn(V, generator=g, dtype=F64)
    ids = torch.randint(0, V, (B, T), generator=g)
    rat = torch.tensor([[1, 1, 1, 0, 0]] * B, dtype=torch.bool)
    ans = torch.tensor([[0, 0, 0, 1, 1]] * B, dtype=torch.bool)
    rewards = None
    if mode == "verifier":
        rewards = torch.tensor([0.0, 1.0, 0.5, 0.0, 0.0, 0.0], dtype=F64)
    kw = {"group_size": M, "rationale_mask": rat, "answer_mask": ans, "estimator": estimator,
          "rewards": rewards, "temperature": 0.9, "return_info": True}  # fmt: skip
    for reduction in ("mean", "sum", "none"):
        a, wa = hid.clone().requires_grad_(True), w.clone().requires_grad_(True)
        loss, info = tsallis.tsallis_linear_loss(a, wa, ids, 0.5, bias=bias, logit_scale=1.3,
                                                 reduction=reduction, **kw,
                                                 **_opts(estimator))  # fmt: skip
        loss.sum().backward()
        b_, wb = hid.clone().requires_grad_(True), w.clone().requires_grad_(True)
        logits = (b_ @ wb.T + bias) * 1.3
        want, winfo = tsallis.tsallis_logits_loss(logits, ids, 0.5, reduction=reduction,
                                                  impl="torch", **kw,
                                                  **_opts(estimator))  # fmt: skip
        want.sum().backward()
        assert_close(loss, want, atol=1e-12, what=f"loss {reduction}")
        assert_close(info.coef_z, winfo.coef_z, atol=1e-12, what="coef_z")
        assert_close(info.logp_y, winfo.logp_y, atol=1e-12, what="logp_y")
        assert_close(info.mean_entropy, winfo.mean_entropy, atol=1e-12, what="mean entropy")
        assert_close(a.grad, b_.grad, atol=1e-12, what=f"d hidden {reduction}")
        assert_close(wa.grad, wb.grad, atol=1e-12, what=f"d weight {reduction}")
        assert isinstance(info, tsallis.LogitsLossInfo)


def test_tsallis_linear_loss_packed_module_and_checks():
    g = torch.Generator().manual_seed(4)
    N, H, V = 11, 4, 9
    hid = torch.randn(N, H, generator=g, dtype=F64, requires_grad=True)
    w = torch.randn(V, H, generator=g, dtype=F64)
    ids = torch.randint(0, V, (N,), generator=g)
    cu = torch.tensor([0, 3, 7, 9, 11])
    rat = torch.tensor([1, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0], dtype=torch.bool)
    ans = torch.tensor([0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 1], dtype=torch.bool)
    fn = tsallis.TsallisLinearLoss(q=0.25, group_size=2)
    loss = fn(hid, w, ids, rat, ans, cu_seqlens=cu)
    want = tsallis.tsallis_logits_loss(hid @ w.T, ids, 0.25, group_size=2, rationale_mask=rat,
                                       answer_mask=ans, cu_seqlens=cu)  # fmt: skip
    assert_close(loss, want, atol=1e-12, what="packed loss")
    assert fn.last_info.logp_z.shape == (4,)
    with pytest.raises(ValueError, match="needs answer_mask"):
        tsallis.tsallis_linear_loss(hid, w, ids, 0.5, group_size=2, rationale_mask=rat,
                                    cu_seqlens=cu)  # fmt: skip
    no_ans = ans.clone()
    no_ans[7:9] = False
    with pytest.raises(ValueError, match=r"sequence\(s\) 2 of 4 have no answer"):
        tsallis.tsallis_linear_loss(hid, w, ids, 0.5, group_size=2, rationale_mask=rat,
                                    answer_mask=no_ans, cu_seqlens=cu)  # fmt: skip
    with pytest.raises(ValueError, match="hidden states must be packed"):
        tsallis.tsallis_linear_loss(hid.view(1, N, H), w, ids.view(1, N), 0.5, group_size=1,
                                    rationale_mask=rat.view(1, N), cu_seqlens=cu)  # fmt: skip


def test_docs_kernels_example_runs():
    """docs/kernels.md's example is executed as written."""
    import pathlib
    import re

    doc = pathlib.Path(__file__).resolve().parents[1] / "docs" / "kernels.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert blocks, "docs/kernels.md has no python example"
    for code in blocks:
        exec(compile(code, str(doc), "exec"), {"__name__": "docs_kernels"})


@given(
    st.integers(1, 40), st.integers(1, 9), st.integers(1, 60), st.integers(1, 5),
    st.one_of(st.none(), st.integers(1, 17)), st.booleans(), st.integers(0, 2**16),
)
def test_property_any_shape_matches_float64(N, H, V, B, chunk, likelihood, seed):
    """Random shapes, layouts (empty sequences, unscored rows), chunkings and both modes."""
    h, w, b, ids, cu, rat, ans = _problem(N, H, V, B, seed=seed)
    lay = TokenLayout.from_varlen(cu, rat, ans)
    g = torch.Generator().manual_seed(seed + 1)
    cz, cy = torch.randn(B, generator=g, dtype=F64), torch.randn(B, generator=g, dtype=F64)
    if likelihood:
        with torch.no_grad():
            y0 = _oracle_loss(h, w, b, ids, lay, cz, cy, 1.0)[2]
        coefs, want_c = (lambda y: (cz * y.sigmoid(), cy)), (cz * y0.sigmoid(), cy)
    else:
        coefs = want_c = (cz, cy)
    hh, ww, bb = (t.clone().requires_grad_(True) for t in (h, w, b))
    out = fused_linear_sequence_loss(hh, ww, ids, lay, coefs, bias=bb, chunk_size=chunk)
    out.loss.backward()
    h2, w2, b2 = (t.clone().requires_grad_(True) for t in (h, w, b))
    want = _oracle_loss(h2, w2, b2, ids, lay, *want_c, 1.0)[0]
    want.backward()
    assert_close(out.loss, want, atol=1e-11, what="loss")
    for a, e, n in ((hh, h2, "d hidden"), (ww, w2, "d weight"), (bb, b2, "d bias")):
        assert_close(a.grad, e.grad, atol=1e-11, what=n)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs(dtype):
    h, w, b, ids, cu, rat, ans = _problem(20, 8, 33, 3, seed=4)
    lay = TokenLayout.from_varlen(cu, rat, ans)
    c = (torch.tensor([1.0, -1.0, 0.5]), torch.tensor([0.5, 2.0, 1.0]))
    hh = h.to(dtype).requires_grad_(True)
    ww = w.to(dtype).requires_grad_(True)
    out = fused_linear_sequence_loss(hh, ww, ids, lay, c, bias=b.to(dtype))
    out.loss.backward()
    assert hh.grad.dtype == dtype and ww.grad.dtype == dtype and out.loss.dtype == torch.float32
    h2 = hh.detach().double().requires_grad_(True)
    w2 = ww.detach().double().requires_grad_(True)
    want = _oracle_loss(h2, w2, b.to(dtype).double(), ids, lay, c[0].double(), c[1].double(),
                        1.0)[0]  # fmt: skip
    want.backward()
    # the logits are rounded to the input dtype (as TRL's tiles are): a few ulps of it
    tol = 0.05 if dtype == torch.bfloat16 else 0.01
    assert_close(out.loss, want, atol=tol * float(want.abs()) + tol, what="loss")
    assert_close(hh.grad, h2.grad, atol=tol, what="d hidden")
    assert_close(ww.grad, w2.grad, atol=tol, what="d weight")


def test_linear_token_logprobs_3d_and_id_check():
    h, w, _, ids, _, _, _ = _problem(12, 4, 9, 1)
    lp = linear_token_logprobs(h.view(3, 4, 4), w, ids.view(3, 4))
    assert lp.shape == (3, 4)
    assert_close(lp.reshape(-1), _oracle_logp(h, w, None, ids)[0], atol=1e-12, what="logp")
    bad = ids.clone()
    bad[5] = 9
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, V\) = \[0, 9\)"):
        linear_token_logprobs(h, w, bad)


@pytest.mark.parametrize("which", ["linear", "logits"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_loss_scale_is_folded_into_the_normaliser(which, reduction):
    g = torch.Generator().manual_seed(8)
    hid = torch.randn(4, 3, 5, generator=g, dtype=F64)
    w = torch.randn(7, 5, generator=g, dtype=F64)
    ids = torch.randint(0, 7, (4, 3), generator=g)
    rat, ans = torch.tensor([[1, 1, 0]] * 4), torch.tensor([[0, 0, 1]] * 4)
    grads = []
    for scale, outer in ((0.25, 1.0), (1.0, 0.25)):
        a = hid.clone().requires_grad_(True)
        kw = {"group_size": 2, "rationale_mask": rat, "answer_mask": ans,
              "reduction": reduction, "loss_scale": scale}  # fmt: skip
        if which == "linear":
            loss = tsallis.tsallis_linear_loss(a, w, ids, 0.5, **kw)
        else:
            loss = tsallis.tsallis_logits_loss(a @ w.T, ids, 0.5, impl="torch", **kw)
        (loss.sum() * outer).backward()
        grads.append((loss.detach() * outer, a.grad))
    assert_close(grads[0][0], grads[1][0], atol=1e-14, what="loss")
    assert_close(grads[0][1], grads[1][1], atol=1e-14, what="gradient")
    with pytest.raises(ValueError, match="loss_scale"):
        tsallis.tsallis_linear_loss(hid, w, ids, 0.5, group_size=2, rationale_mask=rat,
                                    answer_mask=ans, loss_scale=0.0)  # fmt: skip
