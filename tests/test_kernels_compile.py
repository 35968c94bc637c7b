"""The Triton kernels compile for an H100 (sm_90) on this GPU-less machine.

The interpreter tests check the kernels' arithmetic; this checks that the compiler accepts
them (it is stricter: types across branches, backend ops), for every variant's flag set. Runs
in a subprocess without TRITON_INTERPRET. Skipped when the Triton wheel has no NVIDIA
backend/ptxas.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def compile_kernels_for_sm90() -> list[str]:
    """Compile every kernel variant for sm_90 (frontend, LLVM, ptxas); one "OK ..." line each,
    plus one "FMA <kernel> <flags> <count> <options>" line per fused-split compilation giving the
    number of ``fma.rn.f32`` in its PTX (see :func:`test_kernels_compile_for_sm90`).

    Must run in a process where TRITON_INTERPRET is unset.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from kernels.triton import backward, forward, fused_row, fused_split, segsum
    from kernels.triton._common import INTERPRET

    assert not INTERPRET, "unset TRITON_INTERPRET to compile"
    target = GPUTarget("cuda", 90, 32)
    common = {"X": "*bf16", "sxb": "i64", "sxt": "i64", "T": "i32", "V": "i32",
              "IDS": "*i64", "SPAN": "*i8", "inv_temp": "fp32"}  # fmt: skip
    out_t = {"DX": "*bf16", "sdb": "i64", "sdt": "i64"}
    lines = []

    def comp(fn, types, cons, warps, options=None):
        cons = dict(cons)
        for stride in ("sxv", "sdv"):  # unit strides are specialised at launch, as here
            if stride in fn.arg_names:
                cons[stride] = 1
        sig = {n: types.get(n, "*fp32" if n.isupper() else "i32") for n in fn.arg_names}
        for k in cons:
            sig[k] = "constexpr"
        src = ASTSource(
            fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in cons.items()}
        )
        k = triton.compile(src, target=target, options={"num_warps": warps, **(options or {})})
        assert k.asm.get("cubin"), "no cubin produced"
        if not (options or {}).get("enable_fp_fusion"):  # not the control compilation
            lines.append(f"OK {fn.__name__} {cons}")
        if fn is fused_split._fused_split_kernel:
            n_fma = k.asm["ptx"].count("fma.rn.f32")
            lines.append(f"FMA {fn.__name__} {cons} {n_fma} {options}")

    for we, sel in ((False, forward.SELECT_ACTIVE), (True, forward.SELECT_ANSWER)):
        comp(forward._fwd_kernel, common, {"SELECT": sel, "WITH_ENT": we, "BLOCK_V": 4096}, 4)
    for we in (False, True):
        comp(backward._bwd_kernel, dict(common, **out_t), {"WITH_ENT": we, "BLOCK_V": 4096}, 4)
    comp(backward._scale_kernel, {"DX": "*bf16", "sdb": "i64", "sdt": "i64", "T": "i32",
                                  "V": "i32", "SCALE": "*fp32"}, {"BLOCK_V": 4096}, 4)  # fmt: skip
    for lse_in, we, rev in ((False, False, False), (True, True, False), (False, True, True)):
        comp(fused_row._fused_row_kernel, dict(common, **out_t),
             {"HAS_LSE_IN": lse_in, "WITH_ENT": we, "REVERSE": rev, "BLOCK_V": 16384},
             16)  # fmt: skip
    split_t = dict(common, **out_t, PART="*fp32", PSTRIDE="i32", NPROG_ARG="i32", CNT="*i32",
                   TICKET="*i32", ERR="*i32", MAX_SPIN="i32")  # fmt: skip
    # (PHASE, HOLD, INPLACE, HAS_LSE_IN, WITH_ENT, BLOCK_V, NPROG_P2, warps)
    for ph, hold, inpl, lse_in, we, bv, p2, w in (
        (0, True, False, False, False, 4096, 64, 8),  # split
        (0, True, True, True, True, 4096, 64, 8),  # split in place, likelihood, entropy
        (1, True, False, True, True, 4096, 64, 8),  # split_2pass, publish
        (2, True, False, True, True, 4096, 64, 8),  # split_2pass, finish
        (0, False, False, False, False, 8192, 8, 8),  # multi
        (0, False, True, True, True, 8192, 8, 8),  # multi in place, likelihood, entropy
        (1, False, False, False, True, 8192, 8, 8),  # multi two launches (interpreter in place)
        (2, False, False, False, True, 8192, 8, 8),
    ):
        cons = {"PHASE": ph, "HOLD": hold, "INPLACE": inpl, "HAS_LSE_IN": lse_in,
                "WITH_ENT": we, "BLOCK_V": bv, "NPROG_P2": p2}  # fmt: skip
        comp(fused_split._fused_split_kernel, split_t, cons, w, fused_split.LAUNCH_OPTIONS)
        if ph == 1 and hold:  # the control: the same kernel with LLVM's default contraction
            comp(fused_split._fused_split_kernel, split_t, cons, w, {"enable_fp_fusion": True})
    comp(segsum._segsum_kernel, {"SPAN": "*i8", "CU": "*i64"}, {"BLOCK_T": segsum.SUM_BLOCK_T}, 4)
    return lines


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_kernels_compile_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])
    env["PYTHONWARNINGS"] = "ignore"
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    code = "import test_kernels_compile as c; print('\\n'.join(c.compile_kernels_for_sm90()))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300, cwd=ROOT)  # fmt: skip
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 and ("ptxas" in out or "No module named 'triton.backends.nvidia'"
                                 in out):  # fmt: skip
        pytest.skip("no NVIDIA backend / ptxas in this Triton install: " + out[-300:])
    assert proc.returncode == 0, out[-5000:]
    assert out.count("OK ") == 17, out[-2000:]
    # every path of the split kernels (cooperative main path, timeout recomputation, PHASE 1
    # publish, PHASE 2 finish) must round the partials alike: compiled with the launcher's
    # options the PTX holds no contracted multiply-add at all, so u * inv_temp - m is always a
    # separately rounded mul.f32 then sub.f32. The control line shows the check can fail: with
    # LLVM's default contraction the publish path fuses into fma.rn.f32 while split's main path
    # (the chunk scaled before the branch) cannot, which gave split and split_2pass different
    # bits at temperature != 1.
    fma = re.findall(r"^FMA _fused_split_kernel \{.*\} (\d+) \{'enable_fp_fusion': (\w+)\}$",
                     out, flags=re.M)  # fmt: skip
    launched = [int(n) for n, fusion in fma if fusion == "False"]
    control = [int(n) for n, fusion in fma if fusion == "True"]
    assert len(launched) == 8 and len(control) == 1, out[-2000:]
    assert launched == [0] * 8, fma
    assert control[0] > 0, fma
