"""Triton kernels under TRITON_INTERPRET=1 against the float64 reference (values and grads).

Shapes are small and awkward (V prime, rows shorter than a block, N = 1) and the interpreter's
block is 32 wide (``kernels.triton.INTERPRET_BLOCK_V``), so the multi-block loops run. Every
fused variant (``kernels.FUSED_VARIANTS``) is checked for values, gradients, in-place equality,
bitwise batch invariance and repeatability.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

# before anything imports triton (the kernels are built interpreted or compiled at import)
os.environ["TRITON_INTERPRET"] = "1"
if importlib.util.find_spec("triton") is None:  # pragma: no cover
    pytest.skip("triton is not installed", allow_module_level=True)

import torch  # noqa: E402

from kernels import (  # noqa: E402
    FUSED_VARIANTS,
    TokenLayout,
    fused_sequence_loss,
    reference,
    sequence_logprobs,
    token_logprobs,
)
from kernels.reference import naive_logp_entropy  # noqa: E402
from kernels.testing import assert_close, enable_triton_interpreter  # noqa: E402

kt = enable_triton_interpreter()

# float32 kernels against the float64 oracle
TOL = {torch.float32: 2e-6, torch.float64: 2e-6}


def _data(shape, V, dtype=torch.float32, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, V, generator=g, dtype=torch.float64) * scale).to(dtype)
    ids = torch.randint(0, V, shape, generator=g)
    ids.view(-1)[0] = 0
    ids.view(-1)[-1] = V - 1
    return x, ids


def _ref_grad(x, ids, g_lp, g_ent, temperature):
    xd = x.detach().to(torch.float64).requires_grad_(True)
    lp, h = naive_logp_entropy(xd, ids, temperature)
    loss = (lp * g_lp.double()).sum() + (0 if g_ent is None else (h * g_ent.double()).sum())
    (g,) = torch.autograd.grad(loss, xd)
    return g


@pytest.mark.parametrize(
    "shape,V",
    [((1,), 37), ((5,), 97), ((3,), 1), ((2, 3), 13)],
    ids=["N1-V37", "N5-V97", "V1", "B2T3-V13"],
)
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_forward_backward_match_float64(shape, V, temperature):
    x, ids = _data(shape, V)
    x.requires_grad_(True)
    lp, h = token_logprobs(x, ids, temperature=temperature, return_entropy=True, impl="triton")
    want_lp, want_h = naive_logp_entropy(x.detach(), ids, temperature)
    assert lp.dtype == torch.float32
    assert_close(lp, want_lp, atol=3e-6, rtol=1e-6, what="logp")
    assert_close(h, want_h, atol=3e-6, rtol=1e-6, what="entropy")
    g_lp = torch.linspace(-1, 2, lp.numel()).view(lp.shape)
    g_h = torch.linspace(0.5, -0.5, lp.numel()).view(lp.shape)
    (g,) = torch.autograd.grad((lp * g_lp).sum() + (h * g_h).sum(), x)
    assert_close(g, _ref_grad(x, ids, g_lp, g_h, temperature), atol=3e-6, what="grad")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_no_farther_than_torch_in_that_dtype(dtype):
    """bf16/fp16 tolerance by comparison: kernel error <= error of torch computing in dtype."""
    x, ids = _data((6,), 61, dtype=dtype)
    x.requires_grad_(True)
    lp = token_logprobs(x, ids, impl="triton")
    want, _ = naive_logp_entropy(x.detach(), ids)
    torch_lp = x.detach().log_softmax(-1).gather(-1, ids[:, None]).squeeze(-1)
    err_kernel = (lp.double() - want).abs().max()
    err_torch = (torch_lp.double() - want).abs().max()
    assert err_kernel <= err_torch, (err_kernel, err_torch)
    assert err_kernel < 1e-5
    g_lp = torch.linspace(-1, 1, 6)
    (g,) = torch.autograd.grad((lp * g_lp).sum(), x)
    assert g.dtype == dtype
    want_g = _ref_grad(x, ids, g_lp, None, 1.0)
    xt = x.detach().clone().requires_grad_(True)
    t_lp = xt.log_softmax(-1).gather(-1, ids[:, None]).squeeze(-1)
    (g_torch,) = torch.autograd.grad((t_lp * g_lp.to(dtype)).sum(), xt)
    err_torch = (g_torch.double() - want_g).abs().max()
    # the kernel's math, rounded to nearest like the GPU's cvt.rn: no farther than torch
    x32 = x.detach().float().requires_grad_(True)
    (g32,) = torch.autograd.grad((token_logprobs(x32, ids, impl="triton") * g_lp).sum(), x32)
    assert (g32.to(dtype).double() - want_g).abs().max() <= err_torch
    # the interpreter itself converts fp32 -> bf16 by truncation (numpy has no bf16), so its
    # stored gradient is within one unit in the last place of the rounded value
    ulp = torch.finfo(dtype).eps * g32.abs().clamp(min=torch.finfo(dtype).tiny)
    assert ((g.double() - g32.to(dtype).double()).abs() <= ulp.double() + 1e-12).all()


def test_minus_inf_logits_and_noncontiguous_inputs():
    base, _ = _data((4, 2), 86)
    x = base.transpose(0, 1)[:, :, ::2]  # [2, 4, 43], strides (86, 172, 2): not 2-D-able
    assert not x.is_contiguous()
    x[0, 1, 5] = float("-inf")
    x[1, 2, :10] = float("-inf")
    ids = torch.tensor([[0, 3, 42, 7], [1, 2, 10, 42]])
    ids_nc = ids.t().contiguous().t()
    leaf = base.clone().requires_grad_(True)
    xr = leaf.transpose(0, 1)[:, :, ::2]
    lp = token_logprobs(xr, ids_nc, impl="triton")
    assert_close(lp, naive_logp_entropy(x.detach(), ids)[0], atol=3e-6, what="logp")
    (g,) = torch.autograd.grad(lp.sum(), xr)
    assert_close(g, _ref_grad(x, ids, torch.ones(2, 4), None, 1.0), atol=3e-6, what="grad")
    assert (g[1, 2, :10] == 0).all()


def _layout_batch(seed=0):
    """Four sequences of a padded [4, 7] batch: one all-masked, one with an empty answer."""
    rat = torch.tensor(
        [[1, 1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0], [0] * 7, [1, 1, 1, 1, 1, 1, 0]],
        dtype=torch.bool,
    )
    ans = torch.tensor(
        [[0, 0, 0, 0, 1, 1, 0], [0, 0, 1, 0, 0, 0, 0], [0] * 7, [0] * 7], dtype=torch.bool
    )
    x, ids = _data((4, 7), 41, seed=seed)
    ids[2] = -100  # the all-masked sequence holds ignore ids
    ids[:, 6] = -100
    return x, ids, rat, ans


def test_sequence_logprobs_match_reference_and_all_masked_is_zero():
    x, ids, rat, ans = _layout_batch()
    lay = TokenLayout.from_masks(rat, ans)
    x.requires_grad_(True)
    o = sequence_logprobs(x, ids, lay, impl="triton", return_entropy=True)
    xd = x.detach().double().requires_grad_(True)
    r = sequence_logprobs(xd, ids, lay, impl="torch", return_entropy=True)
    assert_close(o.logp_z, r.logp_z, atol=1e-5, what="logp_z")
    assert_close(o.logp_y, r.logp_y, atol=1e-5, what="logp_y")
    assert o.logp_z[2] == 0 and o.logp_y[2] == 0
    w = torch.tensor([1.0, -2.0, 3.0, 0.5])
    (g,) = torch.autograd.grad((w * o.logp_z).sum() + o.logp_y.sum() + o.entropy.sum(), x)
    (gr,) = torch.autograd.grad((w * r.logp_z).sum() + r.logp_y.sum() + r.entropy.sum(), xd)
    assert_close(g, gr, atol=3e-6, what="grad")
    assert (g[2] == 0).all()


@pytest.mark.parametrize("variant", FUSED_VARIANTS)
@pytest.mark.parametrize("mode", ["verifier", "likelihood"])
def test_fused_matches_reference(variant, mode):
    x, ids, rat, ans = _layout_batch(seed=1)
    lay = TokenLayout.from_masks(rat, ans)
    cz, cy = torch.tensor([0.7, -0.3, 0.0, 1.5]), torch.tensor([0.2, 1.0, 0.0, 0.4])
    coefs = (cz, cy) if mode == "verifier" else (lambda y: (cz * y.exp() - 0.1, cy * y.exp()))
    a = x.clone().requires_grad_(True)
    res = fused_sequence_loss(a, ids, lay, coefs, normalizer=2.0, temperature=0.8,
                              return_entropy=True, impl="triton", variant=variant)  # fmt: skip
    (3.0 * res.loss).backward()  # an upstream gradient != 1 is applied by the scale kernel
    b = x.clone().double().requires_grad_(True)
    ref = fused_sequence_loss(b, ids, lay, coefs, normalizer=2.0, temperature=0.8,
                              return_entropy=True, impl="torch")  # fmt: skip
    (3.0 * ref.loss).backward()
    assert_close(res.logp_z, ref.logp_z, atol=1e-5, what="logp_z")
    assert_close(res.logp_y, ref.logp_y, atol=1e-5, what="logp_y")
    assert_close(res.coef_z, ref.coef_z, atol=1e-5, what="coef_z")
    assert_close(res.loss, ref.loss, atol=1e-5, what="loss")
    assert_close(res.entropy, ref.entropy, atol=1e-5, what="entropy")
    assert_close(a.grad, b.grad, atol=1e-5, what="grad")
    assert (a.grad[2] == 0).all() and (a.grad[:, 6] == 0).all()
    # the interpreter runs programs one after another: in a cooperative launch every program
    # but the last of a row times out and recomputes the row's partials (same bits, counted)
    swept = int(((rat | ans) if mode == "verifier" else rat).sum())
    per_row = {"split": -(-x.shape[-1] // kt.INTERPRET_BLOCK_V),
               "multi": kt.programs_per_row(x.shape[-1])}.get(variant, 1)  # fmt: skip
    assert int(res.timeouts) == swept * (per_row - 1)


@pytest.mark.parametrize("nprog", [1, 5])
def test_multi_programs_per_row_and_empty_ranges(nprog):
    """multi with P programs per row, V = 97 (prime): with P = 5 the ranges are 32 columns
    wide (rounded up to the block), so the last program of each row has no columns at all."""
    x, ids = _data((2, 3), 97, seed=6)
    span = torch.tensor([1, 2, 0, 1, 1, 2], dtype=torch.int8)
    g = torch.tensor([0.5, -1.0, 0.0, 2.0, 0.25, 1.0])
    x3 = x.view(2, 3, 97)
    out = torch.empty_like(x3)
    logp, ent, err = kt.fused_rows(x3, ids.view(-1), span, g, 1.25, True, out, variant="multi",
                                   nprog=nprog)  # fmt: skip
    want_lp, want_h = naive_logp_entropy(x.view(6, 97), ids.view(-1), 0.8)
    act = span != 0
    assert_close(logp[act], want_lp[act], atol=3e-6, what="logp")
    assert_close(ent[act], want_h[act], atol=1e-5, what="entropy")
    assert (logp[~act] == 0).all()
    want_g = _ref_grad(x.view(6, 97), ids.view(-1), g, None, 0.8)
    assert_close(out.view(6, 97), want_g, atol=3e-6, what="grad")
    assert int(err) == int(act.sum()) * (nprog - 1)


@pytest.mark.parametrize("variant", ["split", "multi"])
def test_inplace_cooperative_timeout_raises(variant, monkeypatch):
    """In place a timed-out wait has no same-bits fallback (the row may already hold gradient):
    it must raise, never return NaN or wrong values silently. On the GPU the in-place bound is
    seconds long and a row's programs are always co-resident (kernels/README.md); here the
    interpreter, told it is a GPU so that it keeps the cooperative launch, forces the timeout."""
    from kernels.triton import fused_split

    x, ids, rat, ans = _layout_batch(seed=5)
    lay = TokenLayout.from_masks(rat, ans)
    span = lay.span
    ids_c = torch.where(span != 0, ids.reshape(-1), torch.zeros((), dtype=torch.long))
    g = torch.where(span != 0, torch.tensor(0.5), torch.tensor(0.0))
    out = x.clone()
    monkeypatch.setattr(fused_split, "INTERPRET", False)
    with pytest.raises(RuntimeError, match="in-place cooperative wait timed out"):
        kt.fused_rows(out, ids_c, span, g, 1.0, False, out, variant=variant, block_v=32,
                      max_spin=2)  # fmt: skip


@pytest.mark.parametrize(
    "variant,dtype",
    [(v, torch.bfloat16) for v in FUSED_VARIANTS] + [("split", torch.float32)],
)
def test_fused_inplace_equals_out_of_place(variant, dtype):
    """Bitwise. In the interpreter the in-place split/multi run as two launches (published
    partials only) while out of place most programs recompute their row's partials after a
    timed-out wait: equality here is the same-bits guarantee of that recomputation."""
    x, ids, rat, ans = _layout_batch(seed=2)
    x = x.to(dtype)
    lay = TokenLayout.from_masks(rat, ans)
    coefs = (torch.tensor([0.7, -0.3, 1.0, 1.5]), torch.tensor([0.2, 1.0, 1.0, 0.4]))
    a = x.clone().requires_grad_(True)
    ra = fused_sequence_loss(a, ids, lay, coefs, impl="triton", variant=variant)
    ra.loss.backward()
    leaf = x.clone().requires_grad_(True)
    b = leaf * 1
    ptr = b.data_ptr()
    res = fused_sequence_loss(b, ids, lay, coefs, impl="triton", variant=variant,
                              inplace_grad=True)  # fmt: skip
    res.loss.backward()
    assert torch.equal(leaf.grad, a.grad)
    assert torch.equal(res.logp_z, ra.logp_z) and torch.equal(res.logp_y, ra.logp_y)
    assert b.data_ptr() == ptr and torch.equal(b.detach(), a.grad)  # the storage holds the grad


def test_backward_inplace_equals_out_of_place():
    x, ids = _data((3, 4), 45)
    a = x.clone().requires_grad_(True)
    lp, h = token_logprobs(a, ids, impl="triton", return_entropy=True)
    (lp.sum() + 0.5 * h.sum()).backward()
    leaf = x.clone().requires_grad_(True)
    lp2, h2 = token_logprobs(leaf * 1, ids, impl="triton", return_entropy=True,
                             inplace_backward=True)  # fmt: skip
    (lp2.sum() + 0.5 * h2.sum()).backward()
    assert torch.equal(leaf.grad, a.grad)


@pytest.mark.parametrize("variant", FUSED_VARIANTS)
def test_batch_invariance_and_repeatability_bitwise(variant):
    """A sequence's log-probs and gradient do not depend on the rest of the batch, and a second
    run gives the same bits (every variant)."""
    x, ids, rat, ans = _layout_batch(seed=4)
    lay = TokenLayout.from_masks(rat, ans)
    coefs = (torch.tensor([0.7, -0.3, 1.0, 1.5]), torch.tensor([0.2, 1.0, 1.0, 0.4]))
    grads = []
    for _ in range(2):
        a = x.clone().requires_grad_(True)
        full = fused_sequence_loss(a, ids, lay, coefs, impl="triton", variant=variant)
        full.loss.backward()
        grads.append(a.grad)
    assert torch.equal(grads[0], grads[1])
    o = sequence_logprobs(x, ids, lay, impl="triton")
    for b in (0, 3) if variant == "row" else (3,):  # (interpreter time)
        sub = TokenLayout.from_masks(rat[b : b + 1], ans[b : b + 1])
        xb = x[b : b + 1].clone().requires_grad_(True)
        one = fused_sequence_loss(xb, ids[b : b + 1], sub,
                                  (coefs[0][b : b + 1], coefs[1][b : b + 1]), impl="triton",
                                  variant=variant)  # fmt: skip
        one.loss.backward()
        assert torch.equal(one.logp_z[0], full.logp_z[b])
        assert torch.equal(one.logp_y[0], full.logp_y[b])
        assert torch.equal(xb.grad[0], grads[0][b])
        if variant == "row":
            ob = sequence_logprobs(x[b : b + 1], ids[b : b + 1], sub, impl="triton")
            assert torch.equal(ob.logp_z[0], o.logp_z[b]) and torch.equal(ob.logp_y[0], o.logp_y[b])


def test_segment_sum_kernel_long_sequence_and_varlen():
    """Per-sequence sums over several 256-token blocks, packed varlen, fixed order."""
    g = torch.Generator().manual_seed(0)
    lengths = [600, 1, 0, 257]
    N = sum(lengths)
    vals = torch.randn(N, generator=g)
    span = torch.randint(0, 3, (N,), generator=g).to(torch.int8)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    lay = TokenLayout(cu_seqlens=cu, span=span)
    z, y = kt.segment_sums(vals, lay)
    rz, ry = reference.segment_sums(vals.double(), lay)
    assert_close(z, rz, atol=1e-4, what="z")
    assert_close(y, ry, atol=1e-4, what="y")
    assert z[2] == 0 and y[2] == 0


def narrow_program_ids(source: str) -> list:
    """Lines of Triton source where a program id or an atomic ticket (``tl.program_id(...)``,
    ``tl.atomic_add(TICKET, ...)``) is used without an immediate ``.to(tl.int64)``: int32
    values that would wrap in ``row * stride`` once N * V > 2^31."""
    import ast

    bad = []
    parents = {}
    tree = ast.parse(source)
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name = node.func.attr
        is_ticket = name == "atomic_add" and node.args and ast.unparse(node.args[0]) == "TICKET"
        if name != "program_id" and not is_ticket:
            continue
        up = parents.get(node)
        call = parents.get(up)
        widened = (isinstance(up, ast.Attribute) and up.attr == "to" and isinstance(call, ast.Call)
                   and call.args and ast.unparse(call.args[0]) == "tl.int64")  # fmt: skip
        if not widened:
            bad.append(f"line {node.lineno}: {ast.unparse(parents.get(node, node))}")
    return bad


def test_row_offsets_are_64_bit():
    """Every program id and ticket in kernels/triton/*.py is widened to int64 at once, so row
    offsets (``row * stride``, ``row_offset``) never wrap at N * V > 2^31 (no such tensor fits
    a CPU test: this is a scan of the source); the scan itself flags a narrow id. Then the
    offset helper, fed int64 rows, gives exact offsets past 2^31 (interpreter)."""
    import glob

    import triton
    import triton.language as tl

    files = sorted(glob.glob(os.path.join(os.path.dirname(kt.__file__), "*.py")))
    found = 0
    for path in files:
        src = open(path).read()
        found += src.count("tl.program_id(") + src.count("tl.atomic_add(TICKET")
        assert narrow_program_ids(src) == [], path
    assert found >= 7  # forward, backward x2, fused_row, fused_split x2, segsum
    bad = "row = tl.program_id(0)\nvid = tl.atomic_add(TICKET, 1).to(tl.int32)\n"
    assert narrow_program_ids(bad) == ["line 1: row = tl.program_id(0)",
                                       "line 2: tl.atomic_add(TICKET, 1).to"]  # fmt: skip
    assert narrow_program_ids("row = tl.program_id(0).to(tl.int64)\n") == []

    @triton.jit
    def _probe(OUT, T, sb, st):
        row = tl.program_id(0).to(tl.int64)
        tl.store(OUT + row, kt._common.row_offset(row, T, sb, st))

    out = torch.zeros(4, dtype=torch.int64)
    sb, st = 3 * 2**31 + 7, 151936
    _probe[(4,)](out, 2, sb, st)
    assert out.tolist() == [0, st, sb, sb + st]
