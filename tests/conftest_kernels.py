"""Helpers shared by the kernel tests (not a pytest conftest: imported explicitly)."""

from __future__ import annotations

import os
import sys

import torch


def enable_triton_interpreter():
    """Set TRITON_INTERPRET=1 and return ``kernels.triton_impl`` built in interpreter mode.

    Whether ``@triton.jit`` builds an interpreted kernel is decided when the module is imported,
    so a module imported earlier in compiled mode is reloaded.
    """
    import importlib

    os.environ["TRITON_INTERPRET"] = "1"
    mod = sys.modules.get("kernels.triton_impl")
    if mod is not None and not mod.INTERPRET:
        return importlib.reload(mod)
    return importlib.import_module("kernels.triton_impl")


def naive_logp_entropy(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0):
    """float64 textbook formulas: log_softmax + gather, entropy -sum p log p."""
    u = logits.to(torch.float64) / temperature
    lsm = u.log_softmax(-1)
    logp = lsm.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    p = lsm.exp()
    ent = -(p * torch.where(p > 0, lsm, torch.zeros((), dtype=torch.float64))).sum(-1)
    return logp, ent


def assert_close(actual, expected, *, atol, rtol=0.0, what=""):
    """Allclose with a readable report: count of mismatches, first few indices and values."""
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    assert torch.equal(nan_a, nan_e), f"{what}: NaN mismatch at {torch.nonzero(nan_a ^ nan_e)[:5]}"
    both_inf = torch.isinf(a) & torch.isinf(e) & (a == e)
    ok = both_inf | nan_a | ((a - e).abs() <= atol + rtol * e.abs())
    if not bool(ok.all()):
        bad = torch.nonzero(~ok)
        lines = [
            f"  {tuple(i.tolist())}: got {a[tuple(i)].item():.8g}, want {e[tuple(i)].item():.8g}"
            for i in bad[:5]
        ]
        raise AssertionError(
            f"{what}: {bad.shape[0]} of {a.numel()} elements differ (atol={atol}, rtol={rtol}); "
            f"max abs err {(a - e).abs()[~ok].max().item():.3g}\n" + "\n".join(lines)
        )


def compile_kernels_for_sm90(full: bool = False) -> list[str]:
    """Compile the Triton kernels for an H100 (sm_90) without a GPU: frontend, LLVM, ptxas.

    The interpreter accepts programs that the compiler rejects (types across branches, ops
    missing in a backend), so CI also compiles. Must run in a process where TRITON_INTERPRET
    is unset. Returns one line per kernel variant ("OK ..." or raises).
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from kernels import triton_impl as ti

    assert not ti.INTERPRET, "unset TRITON_INTERPRET to compile"
    target = GPUTarget("cuda", 90, 32)
    common = {"X": "*bf16", "sxb": "i64", "sxt": "i64", "T": "i32", "V": "i32",
              "IDS": "*i64", "SPAN": "*i8", "inv_temp": "fp32"}  # fmt: skip
    out_t = {"DX": "*bf16", "sdb": "i64", "sdt": "i64"}
    vec = "*fp32"
    lines = []

    def comp(fn, types, cons, warps):
        cons = dict(cons)
        for stride in ("sxv", "sdv"):  # unit strides are specialised at launch, as here
            if stride in fn.arg_names:
                cons[stride] = 1
        sig = {n: types.get(n, vec if n.isupper() else "i32") for n in fn.arg_names}
        for k in cons:
            sig[k] = "constexpr"
        src = ASTSource(
            fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in cons.items()}
        )
        k = triton.compile(src, target=target, options={"num_warps": warps})
        assert k.asm.get("cubin"), "no cubin produced"
        lines.append(f"OK {fn.__name__} {cons}")

    flags = (
        [(False, False), (True, True)]
        if not full
        else [(a, b) for a in (False, True) for b in (False, True)]
    )
    for we, sel in ((False, 1), (True, 2)):
        comp(ti._fwd_kernel, common, {"SELECT": sel, "WITH_ENT": we, "BLOCK_V": 4096}, 4)
    for we in (False, True):
        comp(ti._bwd_kernel, dict(common, **out_t), {"WITH_ENT": we, "BLOCK_V": 4096}, 4)
    for lse_in, we in flags:
        comp(ti._fused_row_kernel, dict(common, **out_t),
             {"HAS_LSE_IN": lse_in, "WITH_ENT": we, "BLOCK_V": 16384}, 16)  # fmt: skip
        split_t = dict(common, **out_t, PART=vec, PSTRIDE="i32", CNT="*i32", TICKET="*i32",
                       ERR="*i32", MAX_SPIN="i32")  # fmt: skip
        for phase, dyn, inpl in ((0, True, True), (0, False, False), (1, False, False),
                                 (2, False, True)):  # fmt: skip
            comp(ti._fused_split_kernel, split_t,
                 {"PHASE": phase, "DYNAMIC_ID": dyn, "INPLACE": inpl, "HAS_LSE_IN": lse_in,
                  "WITH_ENT": we, "BLOCK_V": 4096, "NSPLIT_P2": 64}, 8)  # fmt: skip
    comp(ti._segsum_kernel, {"SPAN": "*i8", "CU": "*i64"}, {"BLOCK_T": ti.SUM_BLOCK_T}, 4)
    return lines
