"""The Triton kernels compiled on a GPU, off the benchmark's timed shapes: awkward shapes and
dtypes, V = 151936 rows, the hidden-state loss at shapes that are multiples of nothing, one
sequence of 70000 tokens (no grid limit), a non-contiguous view, forced cooperative-wait
timeouts, split's fallback, and no host synchronisation.

On a CUDA machine this file runs the compiled kernels at GPU sizes; ``benchmarks/gpu_bench.py``
runs it with pytest before its first case (in its own process: the other kernel test files
switch the interpreter on at import). Without CUDA the same tests run under
``TRITON_INTERPRET=1`` at tiny shapes (the logic, in CI). The criteria are the benchmark's
(``benchmarks/gpu/checks.py``): one correctness policy for what is timed and what is tested.
Fixed kernel configs (``TSALLIS_TRITON_AUTOTUNE=0``): autotuning every odd shape costs minutes.
"""

from __future__ import annotations

import importlib.util
import math
import os

import pytest

if importlib.util.find_spec("triton") is None:  # pragma: no cover
    pytest.skip("triton is not installed", allow_module_level=True)

import torch  # noqa: E402

CUDA = torch.cuda.is_available()
if not CUDA:  # before anything imports triton: the kernels are built interpreted
    os.environ["TRITON_INTERPRET"] = "1"

from _gpu_bench import load_bench  # noqa: E402

from kernels import (  # noqa: E402
    FUSED_VARIANTS,
    TokenLayout,
    fused_sequence_loss,
    sequence_logprobs,
    token_logprobs,
)
from kernels.reference import naive_logp_entropy  # noqa: E402

bench = load_bench()
checks = bench.checks
from kernels import triton as kt  # noqa: E402

if CUDA and kt.INTERPRET:  # pragma: no cover (collected after an interpreter file)
    pytest.skip("kernels.triton was built for the interpreter in this process; run this file "
                "alone for the compiled kernels: pytest tests/test_kernels_gpu.py",
                allow_module_level=True)  # fmt: skip

DEV = "cuda" if CUDA else "cpu"
CRIT = checks.Criteria(interpreter=not CUDA)
Workload = bench.registry.Workload

#: token_logprobs shapes: (leading shape, V, dtype)
ROWS = (
    [((1,), 37, "float32"), ((7,), 1009, "bfloat16"), ((3, 5), 257, "float16"),
     ((4, 300), 4099, "bfloat16"), ((2, 3), 151936, "bfloat16")]
    if CUDA else [((3,), 37, "float32"), ((2, 2), 45, "bfloat16")]
)  # fmt: skip
#: one long sequence (T, V): 70000 tokens exceed a (B, T) grid's limit of 65535
LONG = (70000, 1024) if CUDA else (9, 33)
NONCONTIG = (6, 4, 301) if CUDA else (3, 2, 21)
#: same-bits workload; at V = 151936, 38 chunks of 4096 (split proper) and, with 1024-wide
#: chunks, 149 > the SMs of an H100/H200 (split falls back to split_2pass)
SAME_BITS = (Workload(4, 256, 151936, masked_tail=16, temperature=0.7) if CUDA
             else Workload(2, 2, 37, masked_tail=0, answer_len=1, temperature=0.7))  # fmt: skip
FALLBACK_BLOCK_V = 1024 if CUDA else None
#: hidden-state loss (B, T, V, H, masked_tail, answer_len): N, V, H multiples of no block
LINEAR = (3, 347, 50021, 200, 13, 7) if CUDA else (2, 3, 37, 8, 1, 1)


@pytest.fixture(autouse=True)
def _fixed_configs(monkeypatch):
    monkeypatch.setenv("TSALLIS_TRITON_AUTOTUNE", "0")


def _assert_ok(results):
    bad = [r for r in results if not r["ok"]]
    assert not bad, bad


@pytest.mark.parametrize("lead,V,dt", ROWS, ids=lambda p: str(p))
def test_token_logprobs_awkward_shapes(lead, V, dt):
    """-inf logit, ids 0 and V-1, temperature 0.9, entropy: values against float64, the
    gradient of logp and entropy judged element by element as the benchmark judges it."""
    dtype = getattr(torch, dt)
    g = torch.Generator(device="cpu").manual_seed(V)
    x = (torch.randn(*lead, V, generator=g) * 3).to(dtype).to(DEV)
    x.view(-1, V)[0, 1] = float("-inf")
    ids = torch.randint(0, V, lead, generator=g).to(DEV)
    ids.view(-1)[0] = V - 1
    ids.view(-1)[-1] = 0
    tau = 0.9
    w = torch.linspace(-1, 1, ids.numel(), device=DEV).view(lead)

    def ours():
        xr = x.clone().requires_grad_(True)
        lp, h = token_logprobs(xr, ids, temperature=tau, return_entropy=True, impl="triton")
        (gx,) = torch.autograd.grad((lp * w).sum() + 0.3 * h.sum(), xr)
        return lp, h, gx

    def reference(dt_ref):
        xr = x.detach().to(dt_ref).requires_grad_(True)
        if dt_ref == torch.float64:
            lp, h = naive_logp_entropy(xr, ids, tau)
        else:  # plain torch in the logits' dtype: the yardstick
            lsm = (xr / tau).log_softmax(-1)
            lp = lsm.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
            pr = lsm.exp()
            h = -(pr * torch.where(pr > 0, lsm, torch.zeros((), dtype=dt_ref, device=DEV))).sum(-1)
        (gx,) = torch.autograd.grad((lp.double() * w).sum() + 0.3 * h.double().sum(), xr)
        return lp, h, gx

    lp, h, gx = ours()
    rlp, rh, rg = reference(torch.float64)
    res = [checks.value_check("logp", lp, rlp, 2e-5 * (1 + math.log(V))),
           checks.value_check("entropy", h, rh, 1e-4 * (1 + math.log(V)))]  # fmt: skip
    if dtype == torch.float32:
        gs = checks.GradStats(dt, 64.0, rel_to_max=checks.FP32_REL_TO_MAX)
        gs.add(gx, rg, None)
        res.append(gs.result("grad", vs_lowp=False))
    else:
        gs = checks.GradStats(dt, CRIT.slack, CRIT.mean_factor)
        gs.add(gx, rg, reference(dtype)[2])
        res.append(gs.result("grad"))
    lp2, h2, gx2 = ours()
    res.append(checks.bitwise("repeatable", [(lp, lp2), (h, h2), (gx, gx2)]))
    _assert_ok(res)


def test_non_contiguous_view():
    B, T, V = NONCONTIG
    g = torch.Generator(device="cpu").manual_seed(7)
    base = torch.randn(B, T, 2 * V, generator=g).to(DEV)
    ids = torch.randint(0, V, (T, B), generator=g).to(DEV)
    leaf = base.clone().requires_grad_(True)
    lp = token_logprobs(leaf.transpose(0, 1)[:, :, ::2], ids, impl="triton")
    (gx,) = torch.autograd.grad(lp.sum(), leaf)
    xd = base.transpose(0, 1)[:, :, ::2].double().requires_grad_(True)
    rlp, _ = naive_logp_entropy(xd, ids)
    (rg,) = torch.autograd.grad(rlp.sum(), xd)
    gs = checks.GradStats("float32", 64.0, rel_to_max=checks.FP32_REL_TO_MAX)
    gs.add(gx.transpose(0, 1)[:, :, ::2], rg, None)
    _assert_ok([checks.value_check("logp", lp, rlp, 2e-5 * (1 + math.log(V))),
                gs.result("grad", vs_lowp=False)])  # fmt: skip
    assert bool((gx.transpose(0, 1)[:, :, 1::2] == 0).all()), "gradient off the view"


def test_one_long_sequence():
    T, V = LONG
    g = torch.Generator(device="cpu").manual_seed(3)
    x = (torch.randn(1, T, V, generator=g) * 2).to(torch.bfloat16).to(DEV)
    ids = torch.randint(0, V, (1, T), generator=g).to(DEV)
    n_ans = min(50, T // 2)
    rat = torch.ones(1, T, dtype=torch.bool, device=DEV)
    rat[0, -n_ans:] = False
    ans = ~rat
    lay = TokenLayout.from_masks(rat, ans)
    o = sequence_logprobs(x, ids, lay, impl="triton")
    rlp, _ = naive_logp_entropy(x, ids)
    rz, ry = (rlp * rat).sum(1), (rlp * ans).sum(1)
    # an fp32 sum of ~70k log-probs (|sum| ~ 6e5, one fp32 ulp = 0.06) is off by ~0.2: 3e-6
    # relative is ~10x that, and still catches one dropped token (~9)
    tol = 3e-6 * float(rz.abs().max()) + 1e-3
    one = torch.ones(1, device=DEV)
    xr = x.clone().requires_grad_(True)
    res = fused_sequence_loss(xr, ids, lay, (one, one), impl="triton")
    (gx,) = torch.autograd.grad(res.loss, xr)
    xd = x.double().requires_grad_(True)
    lpd, _ = naive_logp_entropy(xd, ids)
    (rg,) = torch.autograd.grad(-((lpd * rat).sum() + (lpd * ans).sum()), xd)
    gs = checks.GradStats("bfloat16", CRIT.slack + 0.5)
    gs.add(gx, rg, None)
    _assert_ok([checks.value_check("sequence_logprobs logp_z", o.logp_z, rz, tol),
                checks.value_check("sequence_logprobs logp_y", o.logp_y, ry, 1e-3),
                checks.value_check("fused logp_z", res.logp_z, rz, tol),
                gs.result("fused grad (bf16 rounding)", vs_lowp=False)])  # fmt: skip


def test_same_bits_forced_timeouts_and_fallback():
    """split and multi with every wait forced to time out (``max_spin=0``: each program
    recomputes its row's partials), split_2pass, and split at a chunk width that makes it fall
    back to split_2pass: bitwise the normal runs' logp and gradient, at a temperature != 1
    (where FMA contraction would differ between the code paths)."""
    d = bench.workloads.make_data(SAME_BITS, DEV)
    x3, ids, span, g_tok = bench.handlers.kernel_args(d)
    inv = 1.0 / SAME_BITS.temperature

    def go(variant, **kw):
        out3 = torch.empty_like(x3)
        logp, _, err = kt.fused_rows(x3, ids, span, g_tok, inv, False, out3, variant=variant,
                                     **kw)  # fmt: skip
        return logp, out3, int(err.sum())

    res = []
    for variant, ref_variant in (("split", "split_2pass"), ("multi", "multi")):
        ref = go(ref_variant)
        for label, kw in (("", {}), (" max_spin=0", {"max_spin": 0})):
            if variant == ref_variant and not kw:
                continue  # multi against itself: only the forced timeouts
            got = go(variant, **kw)
            res.append(checks.bitwise(f"{variant}{label} == {ref_variant}",
                                      [(got[0], ref[0]), (got[1], ref[1])]))  # fmt: skip
            if kw:
                res.append({"check": f"{variant}{label}: waits timed out", "ok": got[2] > 0})
    assert bench.handlers.ran_as("split", d.w.V, x3.device) == "split"
    if FALLBACK_BLOCK_V is not None:
        assert bench.handlers.ran_as("split", d.w.V, x3.device, FALLBACK_BLOCK_V) == "split_2pass"
        bv = FALLBACK_BLOCK_V
        got, ref = go("split", block_v=bv), go("split_2pass", block_v=bv)
        res.append(checks.bitwise("split fallback == split_2pass",
                                  [(got[0], ref[0]), (got[1], ref[1])]))  # fmt: skip
    _assert_ok(res)


@pytest.mark.parametrize("dt", ["bfloat16", "float32"])
@pytest.mark.parametrize("mode", ["verifier", "likelihood"])
def test_hidden_state_loss(dt, mode):
    """``fused_linear_sequence_loss`` (Triton path): d hidden, d weight, the sums and the
    token log-probs against the float64 oracle, normwise against the chunked yardstick in the
    inputs' dtype (the benchmark's criterion), and bitwise repeatable."""
    import kernels

    if not hasattr(kernels, "fused_linear_sequence_loss"):  # pragma: no cover
        pytest.skip("kernels.fused_linear_sequence_loss is not available")
    B, T, V, H, tail, n_ans = LINEAR
    w = bench.registry.LinearWorkload(B, T, V, H, dtype=dt, masked_tail=tail, answer_len=n_ans)
    ld = bench.workloads.make_linear_data(w, DEV)
    rule = bench.workloads.make_rule(ld.c, n_ans)
    coefs = rule if mode == "likelihood" else (ld.c, ld.c)

    def call():
        res = kernels.fused_linear_sequence_loss(ld.hidden, ld.weight, ld.ids, ld.layout, coefs,
                                                 normalizer=ld.norm, impl="triton")
        return (*torch.autograd.grad(res.loss, (ld.hidden, ld.weight)), res)

    gh, gw, res = call()
    out = checks.check_linear(ld, mode, gh, gw, res.logp_z, res.logp_y, res.token_logp,
                              rows=256)  # fmt: skip
    gh2, gw2, _ = call()
    out.append(checks.bitwise("repeatable", [(gh, gh2), (gw, gw2)]))
    _assert_ok(out)


def _sync_debug_calls(d, tau) -> list:
    """``(name, fn)``: every public entry point on workload ``d``, forward and backward, with
    the layout and coefficients on the logits' device, then on the CPU. Each ``fn`` builds
    fresh leaves."""
    dev = d.logits.device
    cpu_layout = TokenLayout(cu_seqlens=d.layout.cu_seqlens.cpu(), span=d.layout.span.cpu())
    on_dev = TokenLayout(cu_seqlens=d.layout.cu_seqlens.to(dev), span=d.layout.span.to(dev))
    c_dev, c_cpu = d.c.to(dev), d.c.cpu()
    base = d.logits.detach()

    def leaf():
        return base.clone().requires_grad_(True)

    def tok():
        token_logprobs(leaf(), d.ids, temperature=tau, impl="triton").sum().backward()

    def seq(lay, c):
        def fn():
            o = sequence_logprobs(leaf(), d.ids, lay, temperature=tau, impl="triton")
            (-(c.to(dev) * (o.logp_z + o.logp_y)).sum()).backward()

        return fn

    def fused(lay, c, variant, inplace=False):
        def fn():
            fused_sequence_loss(leaf(), d.ids, lay, (c, c), normalizer=d.norm, temperature=tau,
                                impl="triton", variant=variant,
                                inplace_grad=inplace).loss.backward()  # fmt: skip

        return fn

    calls = [("token_logprobs", tok), ("sequence_logprobs", seq(on_dev, c_dev)),
             ("sequence_logprobs, CPU layout", seq(cpu_layout, c_dev))]  # fmt: skip
    calls += [(f"fused_sequence_loss variant={v}", fused(on_dev, c_dev, v))
              for v in (None, *FUSED_VARIANTS)]  # fmt: skip
    calls.append(("fused_sequence_loss in place", fused(on_dev, c_dev, None, True)))
    calls.append(("fused_sequence_loss, CPU layout and coefficients",
                  fused(cpu_layout, c_cpu, None)))  # fmt: skip
    return calls


def test_no_host_sync():
    """Every public entry point once, forward and backward, under
    ``torch.cuda.set_sync_debug_mode("error")``: any host synchronisation raises. Without CUDA
    the calls that no other test of this file makes run unguarded (nothing to observe)."""
    d = bench.workloads.make_data(SAME_BITS, DEV)
    calls = _sync_debug_calls(d, SAME_BITS.temperature)
    if not CUDA:
        calls = [c for c in calls if "CPU" in c[0] or c[0] == "token_logprobs"]
        for _, fn in calls:
            fn()
        return
    for _, fn in calls:  # warm-up: compiles, first-call allocations
        fn()
    torch.cuda.synchronize()
    failed = []
    prev = torch.cuda.get_sync_debug_mode()
    for name, fn in calls:
        torch.cuda.set_sync_debug_mode("error")
        try:
            fn()
        except RuntimeError as e:
            failed.append(f"{name}: {str(e)[:200]}")
        finally:
            torch.cuda.set_sync_debug_mode(prev)
    torch.cuda.synchronize()
    assert not failed, failed
