"""Review findings of issue 14 on the logits path, on every path (torch, and the Triton kernels
under TRITON_INTERPRET=1): shift-invariant numerics, and the in-place gradient of 2-D logits.

Shift invariance: logits ``x + offset`` (the same fp32 numbers the oracle sees, in float64)
give log-probs, entropies and gradients as accurate at offset 1e5 as at 0, because every path
keeps the row maximum ``m`` and ``log s`` apart (``logp = (u - m) - log s``) and accumulates the
entropy on shifted values. Rows holding bf16-max entries are finite and exact.
"""

from __future__ import annotations

import importlib.util
import math
import os

import pytest

os.environ["TRITON_INTERPRET"] = "1"
HAS_TRITON = importlib.util.find_spec("triton") is not None

import torch  # noqa: E402

import tsallis  # noqa: E402
from kernels import (  # noqa: E402
    FUSED_VARIANTS,
    TokenLayout,
    fused_sequence_loss,
    sequence_logprobs,
    token_logprobs,
)
from kernels.reference import naive_logp_entropy  # noqa: E402
from kernels.testing import assert_close, enable_triton_interpreter  # noqa: E402

if HAS_TRITON:
    enable_triton_interpreter()

IMPLS = ["torch"] + (["triton"] if HAS_TRITON else [])
BF16_MAX = float(torch.finfo(torch.bfloat16).max)


def _rows(N, V, offset, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(N, V, generator=g, dtype=torch.float64) * 3 + offset).float()
    ids = torch.randint(0, V, (N,), generator=g)
    return x, ids


def _oracle(x, ids, g_lp, g_ent):
    xd = x.detach().double().requires_grad_(True)
    lp, h = naive_logp_entropy(xd, ids)
    (grad,) = torch.autograd.grad((lp * g_lp).sum() + (h * g_ent).sum(), xd)
    return lp.detach(), h.detach(), grad


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("offset", [0.0, 1e3, 1e4, 1e5, -1e5])
def test_token_logprobs_entropy_and_gradient_are_shift_invariant(impl, offset):
    x, ids = _rows(6, 71, offset)
    g = torch.Generator().manual_seed(1)
    g_lp, g_ent = torch.randn(6, generator=g).double(), torch.randn(6, generator=g).double()
    a = x.clone().requires_grad_(True)
    lp, h = token_logprobs(a, ids, return_entropy=True, impl=impl)
    ((lp * g_lp).sum() + (h * g_ent).sum()).backward()
    want_lp, want_h, want_g = _oracle(x, ids, g_lp, g_ent)
    # the textbook fp32 torch error level (about 4e-7 at every offset)
    assert_close(lp, want_lp, atol=2e-6, what=f"logp at offset {offset}")
    assert_close(h, want_h, atol=2e-6, what=f"entropy at offset {offset}")
    assert_close(a.grad, want_g, atol=2e-6, what=f"gradient at offset {offset}")


@pytest.mark.parametrize("variant", FUSED_VARIANTS if HAS_TRITON else [])
@pytest.mark.parametrize("mode", ["verifier", "likelihood"])
def test_fused_loss_shift_invariant_every_variant(variant, mode):
    _fused_at_offsets("triton", variant, mode)


@pytest.mark.parametrize("mode", ["verifier", "likelihood"])
def test_fused_loss_shift_invariant_torch(mode):
    _fused_at_offsets("torch", None, mode)


def _fused_at_offsets(impl, variant, mode):
    N, V = 8, 67
    cu = torch.tensor([0, 3, 8])
    rat = torch.tensor([1, 1, 0, 1, 1, 1, 0, 0], dtype=torch.bool)
    ans = torch.tensor([0, 0, 1, 0, 0, 0, 1, 1], dtype=torch.bool)
    lay = TokenLayout.from_varlen(cu, rat, ans)
    cz, cy = torch.tensor([0.7, -1.2]), torch.tensor([1.5, 0.4])
    coefs = (cz, cy) if mode == "verifier" else (lambda y: (cz * torch.sigmoid(y), cy))
    for offset in (1e3, 1e5):
        x, ids = _rows(N, V, offset, seed=3)
        a = x.clone().requires_grad_(True)
        out = fused_sequence_loss(a, ids, lay, coefs, return_entropy=True, impl=impl,
                                  variant=variant)  # fmt: skip
        out.loss.backward()
        lp, h = naive_logp_entropy(x.double(), ids)
        seq = lay.seq_index()
        y = torch.zeros(2, dtype=torch.float64).index_add(0, seq, torch.where(ans, lp, 0.0))
        wz, wy = (cz, cy) if mode == "verifier" else coefs(y.float())
        g_tok = torch.where(rat, wz.double()[seq], 0.0) + torch.where(ans, wy.double()[seq], 0.0)
        _, _, want_g = _oracle(x, ids, -g_tok, torch.zeros(N, dtype=torch.float64))
        active = rat | ans
        assert_close(out.entropy, torch.where(active, h, 0.0), atol=2e-6, what=f"H {offset}")
        assert_close(out.logp_y, y, atol=5e-6, what=f"logp_y {offset}")
        assert_close(a.grad, want_g, atol=2e-6, what=f"grad {offset}")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_rows_with_bf16_max_entries_are_exact(impl, dtype):
    V = 40
    x = torch.randn(3, V, generator=torch.Generator().manual_seed(0)).to(dtype)
    x[0, [3, 17, 30]] = BF16_MAX  # three tied maxima: p = 1/3 each
    x[1, 5] = BF16_MAX
    x[1, 6] = -BF16_MAX
    x[2, :] = BF16_MAX  # a row of maxima: uniform
    ids = torch.tensor([17, 6, 9])
    a = x.clone().requires_grad_(True)
    lp, h = token_logprobs(a, ids, return_entropy=True, impl=impl)
    (lp.sum() + h.sum()).backward()
    assert_close(lp, torch.tensor([-math.log(3), -math.inf, -math.log(V)]), atol=1e-6,
                 what="logp")  # fmt: skip
    assert_close(h, torch.tensor([math.log(3), 0.0, math.log(V)]), atol=1e-6, what="entropy")
    assert torch.isfinite(a.grad.float()).all()
    want = torch.zeros(V)
    want[[3, 17, 30]] = -1 / 3 - 0.0
    want[17] += 1.0
    # d(logp + H)/du = onehot - p - p (log p + H) = onehot - p on a uniform-over-ties row
    assert_close(a.grad[0].float(), want, atol=1e-2 if dtype == torch.bfloat16 else 1e-6,
                 what="gradient of a tied-maxima row")  # fmt: skip


# --------------------------------------------------------------------------------------------
# in place on 2-D [N, V] logits (the layout of packed varlen batches)
# --------------------------------------------------------------------------------------------
def _packed(seed=0, V=29):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(9, V, generator=g) * 2
    ids = torch.randint(0, V, (9,), generator=g)
    cu = torch.tensor([0, 4, 9])
    rat = torch.tensor([1, 1, 0, 0, 1, 1, 1, 0, 0], dtype=torch.bool)
    ans = torch.tensor([0, 0, 1, 1, 0, 0, 0, 1, 1], dtype=torch.bool)
    return x, ids, cu, rat, ans


PATHS = [("torch", None)] + [("triton", v) for v in (FUSED_VARIANTS if HAS_TRITON else [])]


@pytest.mark.parametrize("impl,variant", PATHS)
@pytest.mark.parametrize("mode", ["verifier", "likelihood"])
def test_fused_inplace_on_2d_logits(impl, variant, mode):
    x, ids, cu, rat, ans = _packed()
    lay = TokenLayout.from_varlen(cu, rat, ans)
    c = (torch.tensor([1.0, -0.5]), torch.tensor([0.25, 2.0]))
    coefs = c if mode == "verifier" else (lambda y: (c[0] * y.exp(), c[1]))
    ref = x.clone().requires_grad_(True)
    out_ref = fused_sequence_loss(ref, ids, lay, coefs, impl=impl, variant=variant)
    out_ref.loss.backward()
    leaf = x.clone().requires_grad_(True)
    work = leaf * 1.0  # a non-leaf [N, V] tensor: the gradient may overwrite it
    out = fused_sequence_loss(work, ids, lay, coefs, impl=impl, variant=variant,
                              inplace_grad=True)  # fmt: skip
    out.loss.backward()
    assert torch.equal(out.loss, out_ref.loss)
    assert torch.equal(leaf.grad, ref.grad)
    assert torch.equal(work.detach(), ref.grad)  # the gradient was written into the logits


@pytest.mark.parametrize("impl", IMPLS)
def test_packed_tsallis_logits_loss_inplace(impl):
    x, ids, cu, rat, ans = _packed(seed=1)
    kw = {"group_size": 2, "rationale_mask": rat, "answer_mask": ans, "cu_seqlens": cu,
          "impl": impl}  # fmt: skip
    a = x.clone().requires_grad_(True)
    tsallis.tsallis_logits_loss(a, ids, 0.5, **kw).backward()
    leaf = x.clone().requires_grad_(True)
    tsallis.tsallis_logits_loss(leaf * 1.0, ids, 0.5, inplace_grad=True, **kw).backward()
    assert_close(leaf.grad, a.grad, atol=0.0, what="in place vs out of place")


@pytest.mark.parametrize("impl", IMPLS)
def test_token_logprobs_inplace_backward_on_2d_logits(impl):
    x, ids, cu, rat, ans = _packed(seed=2)
    a = x.clone().requires_grad_(True)
    sequence_logprobs(a, ids, TokenLayout.from_varlen(cu, rat, ans), impl=impl).logp_z.sum(
    ).backward()  # fmt: skip
    leaf = x.clone().requires_grad_(True)
    out = sequence_logprobs(leaf * 1.0, ids, TokenLayout.from_varlen(cu, rat, ans), impl=impl,
                            inplace_backward=True)  # fmt: skip
    out.logp_z.sum().backward()
    assert_close(leaf.grad, a.grad, atol=0.0, what="in-place backward, 2-D")
