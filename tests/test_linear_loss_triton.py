"""The loss from hidden states on its Triton path (TRITON_INTERPRET=1, CPU tensors) against
float64 autograd: each chunk's logits go through the fused Triton kernel in place."""

from __future__ import annotations

import importlib.util
import os

import pytest

os.environ["TRITON_INTERPRET"] = "1"
if importlib.util.find_spec("triton") is None:  # pragma: no cover
    pytest.skip("triton is not installed", allow_module_level=True)

import torch  # noqa: E402

from kernels import TokenLayout, fused_linear_sequence_loss  # noqa: E402
from kernels.testing import assert_close, enable_triton_interpreter  # noqa: E402

enable_triton_interpreter()


def _oracle(h, w, b, ids, rat, ans, seq, B, cz, cy, scale, cap, tau):
    z = (h @ w.T + b) * scale
    if cap is not None:
        z = cap * torch.tanh(z / cap)
    lsm = (z / tau).log_softmax(-1)
    lp = lsm.gather(-1, ids[:, None])[:, 0]
    lz = torch.zeros(B, dtype=h.dtype).index_add(0, seq, torch.where(rat, lp, 0.0))
    ly = torch.zeros(B, dtype=h.dtype).index_add(0, seq, torch.where(ans, lp, 0.0))
    ent = -(lsm.exp() * lsm).sum(-1)
    return lz, ly, ent


@pytest.mark.parametrize("variant", ["row", "multi", "split"])
@pytest.mark.parametrize("mode", ["verifier", "likelihood"])
@pytest.mark.parametrize("head", [(1.0, None, 1.0), (0.8, 3.0, 0.7)], ids=["plain", "softcap"])
def test_triton_linear_path_matches_float64(variant, mode, head):
    scale, cap, tau = head
    N, H, V, B = 13, 6, 45, 3
    g = torch.Generator().manual_seed(5)
    h = torch.randn(N, H, generator=g, dtype=torch.float64)
    w = torch.randn(V, H, generator=g, dtype=torch.float64)
    b = torch.randn(V, generator=g, dtype=torch.float64)
    ids = torch.randint(0, V, (N,), generator=g)
    cu = torch.tensor([0, 5, 5, 13])  # an empty sequence in the middle
    span = torch.tensor([1, 1, 2, 0, 2, 1, 1, 0, 1, 1, 2, 2, 0])
    rat, ans = span == 1, span == 2
    lay = TokenLayout.from_varlen(cu, rat, ans)
    seq = lay.seq_index()
    cz, cy = torch.tensor([0.5, 1.0, -1.5]), torch.tensor([2.0, 0.0, 0.75])

    def rule(logp_y):
        return cz * torch.sigmoid(logp_y), cy

    hh = h.float().requires_grad_(True)
    ww = w.float().requires_grad_(True)
    bb = b.float().requires_grad_(True)
    out = fused_linear_sequence_loss(
        hh, ww, ids, lay, (cz, cy) if mode == "verifier" else rule, bias=bb, normalizer=2.0,
        temperature=tau, logit_scale=scale, final_logit_softcapping=cap, return_entropy=True,
        impl="triton", chunk_size=4, variant=variant,
    )  # fmt: skip
    out.loss.backward()
    h2, w2, b2 = (t.clone().requires_grad_(True) for t in (h, w, b))
    with torch.no_grad():
        _, ly0, _ = _oracle(h, w, b, ids, rat, ans, seq, B, cz, cy, scale, cap, tau)
    wz, wy = (cz, cy) if mode == "verifier" else rule(ly0.float())
    lz, ly, ent = _oracle(h2, w2, b2, ids, rat, ans, seq, B, cz, cy, scale, cap, tau)
    loss = -(wz.double() * lz + wy.double() * ly).sum() / 2.0
    loss.backward()
    assert_close(out.loss, loss, atol=2e-5, rtol=1e-6, what="loss")
    assert_close(out.logp_z, lz, atol=2e-5, what="logp_z")
    assert_close(out.logp_y, ly, atol=2e-5, what="logp_y")
    assert_close(out.entropy, torch.where(rat | ans, ent, 0.0), atol=2e-5, what="entropy")
    assert_close(hh.grad, h2.grad, atol=2e-5, what="d hidden")
    assert_close(ww.grad, w2.grad, atol=2e-5, what="d weight")
    assert_close(bb.grad, b2.grad, atol=2e-5, what="d bias")
    # the torch path on the same float32 inputs: the same numbers to float32 rounding
    hh3, ww3 = h.float().requires_grad_(True), w.float().requires_grad_(True)
    ref = fused_linear_sequence_loss(
        hh3, ww3, ids, lay, (cz, cy) if mode == "verifier" else rule, bias=b.float(),
        normalizer=2.0, temperature=tau, logit_scale=scale, final_logit_softcapping=cap,
        impl="torch", chunk_size=4,
    )  # fmt: skip
    ref.loss.backward()
    assert_close(hh.grad, hh3.grad, atol=2e-6, what="triton vs torch d hidden")


@pytest.mark.parametrize("variant", ["row", "split"])
def test_triton_linear_path_batch_invariant_and_repeatable(variant):
    """A sequence alone and inside a batch (fixed chunk shape): the same bits."""
    H, V, C = 8, 37, 4
    g = torch.Generator().manual_seed(3)
    w = torch.randn(V, H, generator=g)
    seqs = [torch.randn(L, H, generator=g) for L in (5, 3, 7)]
    ids = [torch.randint(0, V, (len(s),), generator=g) for s in seqs]

    def run(which):
        hid = torch.cat([seqs[i] for i in which]).requires_grad_(True)
        tok = torch.cat([ids[i] for i in which])
        lens = torch.tensor([len(seqs[i]) for i in which])
        cu = torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)])
        ans = torch.zeros(len(tok), dtype=torch.bool)
        ans[cu[1:] - 1] = True
        lay = TokenLayout.from_varlen(cu, ~ans, ans)
        k = len(which)
        out = fused_linear_sequence_loss(hid, w, tok, lay, (torch.ones(k), torch.ones(k)),
                                         impl="triton", chunk_size=C, variant=variant)  # fmt: skip
        out.loss.backward()
        return out, hid.grad, cu

    alone, g_alone, _ = run([1])
    both, g_both, cu = run([0, 1, 2])
    assert torch.equal(alone.logp_z, both.logp_z[1:2])
    assert torch.equal(alone.logp_y, both.logp_y[1:2])
    assert torch.equal(g_alone, g_both[cu[1] : cu[2]])
    again, g_again, _ = run([0, 1, 2])
    assert torch.equal(again.loss, both.loss) and torch.equal(g_again, g_both)
