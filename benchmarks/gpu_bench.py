#!/usr/bin/env python
"""One-call GPU benchmark of the fused log-prob kernels (kernel.md): correctness, then timings.

Usage on the GPU machine (one call; carry ``.whl/`` with the Liger-Kernel wheel, which the
script unpacks onto ``sys.path`` itself when liger-kernel is not installed):

    python benchmarks/gpu_bench.py

Time budget (one device call, < 570 s): everything but ``torch.compile`` runs first for both
vocabularies; the ``torch.compile`` rows come last and are skipped once ``--budget-s`` has
passed, and every timing row is skipped once ``--deadline-s`` has passed. Results are saved
after every row, so a run cut short keeps what it measured.

and on a CPU-only machine, a tiny end-to-end run of the same code paths under the Triton
interpreter (used by CI so this script cannot rot):

    python benchmarks/gpu_bench.py --smoke --out /tmp/bench

Stages (each item's failure is recorded in the JSON, never fatal):

1. correctness on the GPU against the float64 torch reference: values and gradients on small
   awkward shapes (bf16 / fp16 / fp32, V prime, N = 1, non-contiguous, -inf logits), every
   fused variant (row, split cooperative, split two-launch, in-place), batch invariance;
   one shape with N*V > 2^31 (the timing shape, V = 151936) checked on a subset of rows; one
   sequence longer than 65536 tokens.
2. timings with ``triton.testing.do_bench`` (median) at B = 16, T = 1024 (N = 16384 rows),
   V in {32000, 151936}, bf16, the last 100 tokens of each sequence masked: forward-only and
   forward+backward of ours, naive torch, ``torch.compile`` of naive torch, Liger-Kernel's
   ``fused_selective_log_softmax`` and ``triton_grpo_loss`` (beta 0, on-policy) when
   importable, plus a device-to-device copy for the bandwidth ceiling. Each row reports ms,
   GB/s against the byte floor (forward: read the scored rows once; forward+backward: that
   plus writing the gradient once) and peak extra memory beyond the logits and one gradient
   buffer.

Writes ``benchmarks/results/<gpu>-<date>.json`` (GPU name, torch/triton/liger versions,
commit) and prints a table last.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback

SMOKE = "--smoke" in sys.argv
if SMOKE:  # must precede the first import of triton
    os.environ["TRITON_INTERPRET"] = "1"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

import kernels  # noqa: E402
from kernels import (  # noqa: E402
    TokenLayout,
    fused_sequence_loss,
    sequence_logprobs,
    token_logprobs,
)

RESULTS: dict = {"meta": {}, "correctness": [], "timings": [], "errors": [], "goals": {}}
SAVE_PATH: list = [None]
#: set when the cooperative split kernel timed out on many programs in correctness_large (the
#: GPU did not dispatch a row's programs together): its timing rows are then skipped
SPLIT_SLOW: list = [False]
T0 = time.time()


def log(msg: str) -> None:
    print(f"[{time.time() - T0:7.1f}s] {msg}", flush=True)


def record_error(where: str, err: BaseException) -> None:
    tb = traceback.format_exception_only(type(err), err)[-1].strip()
    RESULTS["errors"].append({"where": where, "error": tb})
    log(f"ERROR in {where}: {tb}")


# ------------------------------------------------------------------------------ environment
def meta(device: str) -> dict:
    m = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "smoke": SMOKE,
    }
    try:
        import triton

        m["triton"] = triton.__version__
    except Exception as e:  # pragma: no cover
        m["triton"] = f"unavailable: {e}"
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        m.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_memory_gib=round(p.total_memory / 2**30, 1),
            sm_count=p.multi_processor_count,
            cuda=torch.version.cuda,
        )
    else:
        m["gpu"] = "cpu-interpreter"
    commit = os.environ.get("GIT_COMMIT")
    if not commit:
        try:
            commit = (
                subprocess.run(
                    ["git", "-C", ROOT, "rev-parse", "HEAD"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout.strip()
                or None
            )
        except Exception:
            commit = None
    m["commit"] = commit or "unknown (pass GIT_COMMIT=...)"
    try:
        dirty = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "kernels"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        m["kernels_dirty"] = bool(dirty)
    except Exception:
        pass
    return m


def _liger_entry_points():
    from liger_kernel.ops.grpo_loss import fused_selective_log_softmax
    from liger_kernel.transformers.grpo_loss import triton_grpo_loss

    return fused_selective_log_softmax, triton_grpo_loss


def import_liger():
    """Liger-Kernel's two entry points, or ``(None, None, why)``; never raises.

    When the package is not installed, the carried pure-Python wheel (``.whl/``) is unpacked
    into a temporary folder put on ``sys.path`` (no pip: the GPU machine is offline and its
    system Python may refuse installs).
    """
    try:
        try:
            sel, grpo = _liger_entry_points()
        except Exception as first:
            wdir = os.path.join(ROOT, ".whl")
            wheels = (
                sorted(
                    os.path.join(wdir, f)
                    for f in os.listdir(wdir)
                    if f.startswith("liger_kernel") and f.endswith(".whl")
                )
                if os.path.isdir(wdir)
                else []
            )
            if SMOKE or not wheels:
                return None, None, f"not importable ({type(first).__name__}: {first})"
            import tempfile
            import zipfile

            dest = tempfile.mkdtemp(prefix="liger_whl_")
            with zipfile.ZipFile(wheels[-1]) as z:
                z.extractall(dest)
            sys.path.insert(0, dest)
            for mod in [m for m in sys.modules if m.startswith("liger_kernel")]:
                del sys.modules[mod]
            try:
                sel, grpo = _liger_entry_points()
            except Exception as e:
                return None, None, f"not importable from {wheels[-1]}: {type(e).__name__}: {e}"
        try:
            import importlib.metadata as md

            version = md.version("liger-kernel")
        except Exception:
            version = "unknown"
        return sel, grpo, version
    except Exception as e:  # pragma: no cover - never let the baseline kill the run
        return None, None, f"import failed: {type(e).__name__}: {e}"


# ------------------------------------------------------------------------------ correctness
def _ref_rows(x, ids, temperature=1.0):
    u = x.double() / temperature
    lsm = u.log_softmax(-1)
    lp = lsm.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    p = lsm.exp()
    zero = torch.zeros((), dtype=torch.float64, device=x.device)
    ent = -(p * torch.where(p > 0, lsm, zero)).sum(-1)  # no 0 * -inf, also in the gradient
    return lp, ent


def _check(name, got, want, atol, extra=None):
    got = got.detach().double()
    want = want.detach().double().to(got.device)
    finite = torch.isfinite(want)
    err = float((got - want)[finite].abs().max()) if bool(finite.any()) else 0.0
    nan_ok = bool(torch.equal(torch.isnan(got), torch.isnan(want)))
    ok = (err <= atol) and nan_ok
    row = {"check": name, "max_abs_err": err, "atol": atol, "ok": ok}
    if extra:
        row.update(extra)
    RESULTS["correctness"].append(row)
    log(f"{'ok  ' if ok else 'FAIL'} {name}: max abs err {err:.3g} (atol {atol:g})")
    return ok


def _bf16_ok(name, got, want, torch_lowp, what):
    """Low-precision tolerance by comparison: kernel error <= torch-in-that-dtype error.

    Under the interpreter (--smoke) fp32 -> bf16 stores truncate instead of rounding to
    nearest, so one unit in the last place is allowed there; on the GPU, none.
    """
    e_k = float((got.double() - want).abs().max())
    e_t = float((torch_lowp.double() - want).abs().max())
    slack = 0.0
    if SMOKE and got.dtype == torch.bfloat16:
        slack = 2**-7 * float(want.abs().max())
    ok = e_k <= e_t + slack + 1e-12
    RESULTS["correctness"].append(
        {"check": name, "kernel_err": e_k, "torch_lowp_err": e_t, "ok": ok, "what": what}
    )
    log(f"{'ok  ' if ok else 'FAIL'} {name}: kernel {e_k:.3g} <= torch {e_t:.3g}")


def correctness_small(dev):
    g = torch.Generator(device="cpu").manual_seed(0)
    shapes = (
        [((1,), 37), ((3, 2), 45)]
        if SMOKE
        else [((1,), 37), ((7,), 1009), ((3, 5), 257), ((4, 300), 4099), ((2, 3), 151936)]
    )
    for shape, V in shapes:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            tag = f"token_logprobs {tuple(shape)}xV{V} {str(dtype)[6:]}"
            try:
                x = (torch.randn(*shape, V, generator=g) * 3).to(dtype).to(dev)
                x.view(-1, V)[0, 1] = float("-inf")
                ids = torch.randint(0, V, shape, generator=g).to(dev)
                ids.view(-1)[0] = V - 1
                ids.view(-1)[-1] = 0
                xr = x.clone().requires_grad_(True)
                lp, h = token_logprobs(xr, ids, temperature=0.9, return_entropy=True, impl="triton")
                w = torch.linspace(-1, 1, lp.numel(), device=dev).view(lp.shape)
                (gx,) = torch.autograd.grad((lp * w).sum() + 0.3 * h.sum(), xr)
                xd = x.double().requires_grad_(True)
                rlp, rh = _ref_rows(xd, ids, 0.9)
                (rg,) = torch.autograd.grad((rlp * w.double()).sum() + 0.3 * rh.sum(), xd)
                _check(tag + " logp", lp, rlp, 1e-5)
                _check(tag + " entropy", h, rh, 1e-4)
                if dtype == torch.float32:
                    _check(tag + " grad", gx, rg, 1e-5)
                else:
                    xt = x.detach().clone().requires_grad_(True)
                    tl_ = (xt / 0.9).log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
                    (tg,) = torch.autograd.grad((tl_ * w.to(dtype)).sum(), xt)
                    (gx2,) = torch.autograd.grad(
                        (token_logprobs(xr, ids, temperature=0.9, impl="triton") * w).sum(), xr
                    )
                    _bf16_ok(
                        tag + " grad vs torch-lowp",
                        gx2,
                        torch.autograd.grad((_ref_rows(xd, ids, 0.9)[0] * w.double()).sum(), xd)[0],
                        tg,
                        "grad",
                    )
                    _bf16_ok(tag + " logp vs torch-lowp", lp, rlp, tl_, "logp")
            except Exception as e:
                record_error(tag, e)

    # non-contiguous [B, T, V] view (batch stride != T * row stride, column stride 2)
    try:
        base = torch.randn(6, 4, 2 * 301, generator=g).to(dev)
        x = base.transpose(0, 1)[:, :, ::2]
        ids = torch.randint(0, 301, (4, 6), generator=g).to(dev)
        leaf = base.clone().requires_grad_(True)
        lp = token_logprobs(leaf.transpose(0, 1)[:, :, ::2], ids, impl="triton")
        (gx,) = torch.autograd.grad(lp.sum(), leaf)
        xd = x.double().requires_grad_(True)
        (rg,) = torch.autograd.grad(_ref_rows(xd, ids)[0].sum(), xd)
        _check("non-contiguous logp", lp, _ref_rows(x, ids)[0], 1e-5)
        _check("non-contiguous grad", gx.transpose(0, 1)[:, :, ::2], rg, 1e-5)
    except Exception as e:
        record_error("non-contiguous", e)

    # every fused variant, both modes, in-place, against the float64 torch path
    B, T, V = (4, 6, 67) if SMOKE else (4, 9, 40009)
    x = (torch.randn(B, T, V, generator=g) * 2).to(torch.bfloat16).to(dev)
    ids = torch.randint(0, V, (B, T), generator=g).to(dev)
    rat = torch.zeros(B, T, dtype=torch.bool)
    ans = torch.zeros(B, T, dtype=torch.bool)
    rat[:, :5] = True
    ans[:, 5:7] = True
    rat[2] = ans[2] = False  # all-masked sequence
    lay = TokenLayout.from_masks(rat.to(dev), ans.to(dev))
    cz = torch.tensor([0.7, -0.3, 0.5, 1.5], device=dev)
    cy = torch.tensor([0.2, 1.0, 0.5, 0.4], device=dev)
    rule = lambda y: (cz * y.exp() - 0.05, cy * y.exp())  # noqa: E731
    from kernels import triton_impl as ti

    for mode, coefs in (("verifier", (cz, cy)), ("likelihood", rule)):
        xd = x.double().requires_grad_(True)
        ref = fused_sequence_loss(
            xd, ids, lay, coefs, normalizer=2.0, temperature=0.7, return_entropy=True, impl="torch"
        )
        (rg,) = torch.autograd.grad(ref.loss, xd)
        for variant, coop, inplace in (
            ("row", None, False),
            ("split", True, False),
            ("split", False, False),
            ("split", True, True),
            ("row", None, True),
        ):
            tag = f"fused {mode} {variant}{'-coop' if coop else ''}{' inplace' if inplace else ''}"
            try:
                orig = ti.fused_rows

                def forced(*a, _coop=coop, _orig=orig, **k):
                    if _coop is not None:
                        k["coop"] = _coop
                    return _orig(*a, **k)

                ti.fused_rows = forced
                leaf = x.clone().float().requires_grad_(True)
                inp = leaf.to(torch.bfloat16)
                res = fused_sequence_loss(
                    inp,
                    ids,
                    lay,
                    coefs,
                    normalizer=2.0,
                    temperature=0.7,
                    return_entropy=True,
                    impl="triton",
                    variant=variant,
                    inplace_grad=inplace,
                )
                (gx,) = torch.autograd.grad(res.loss, leaf)
                ti.fused_rows = orig
                _check(tag + " loss", res.loss, ref.loss, 1e-3)
                _check(tag + " logp_z", res.logp_z, ref.logp_z, 2e-3)
                _check(tag + " entropy", res.entropy, ref.entropy, 1e-3)
                # bf16 output: one unit in the last place at the gradient's magnitude
                _check(tag + " grad", gx, rg, 2**-7 * max(1.0, float(rg.abs().max())))
                RESULTS["correctness"].append(
                    {
                        "check": tag + " wait timeouts",
                        "timeouts": int(res.timeouts),
                        "ok": int(res.timeouts) == 0 or SMOKE,
                    }
                )
            except Exception as e:
                ti.fused_rows = orig
                record_error(tag, e)

    # batch invariance: a sequence alone vs inside the batch, bitwise
    try:
        a = x.clone().requires_grad_(True)
        full = fused_sequence_loss(a, ids, lay, (cz, cy), impl="triton")
        (ga,) = torch.autograd.grad(full.loss, a)
        same = True
        for b in (0, 3):
            sub = TokenLayout.from_masks(rat[b : b + 1].to(dev), ans[b : b + 1].to(dev))
            xb = x[b : b + 1].clone().requires_grad_(True)
            one = fused_sequence_loss(
                xb, ids[b : b + 1], sub, (cz[b : b + 1], cy[b : b + 1]), impl="triton"
            )
            (gb,) = torch.autograd.grad(one.loss, xb)
            same &= bool(torch.equal(one.logp_z[0], full.logp_z[b]))
            same &= bool(torch.equal(gb[0], ga[b]))
        RESULTS["correctness"].append({"check": "batch invariance (bitwise)", "ok": same})
        log(f"{'ok  ' if same else 'FAIL'} batch invariance (bitwise)")
    except Exception as e:
        record_error("batch invariance", e)


def correctness_large(dev):
    """N*V > 2^31 (int64 offsets) and a sequence longer than 65536 tokens (no grid limit)."""
    if SMOKE:
        B, T, V, long_T, long_V = 2, 9, 67, 70, 33
    else:
        B, T, V, long_T, long_V = 16, 1025, 151936, 70000, 1024
    g = torch.Generator(device="cpu").manual_seed(1)
    try:
        x = torch.empty(B, T, V, dtype=torch.bfloat16, device=dev)
        x.normal_(0, 2, generator=None)
        RESULTS["meta"]["large_NV"] = B * T * V
        ids = torch.randint(0, V, (B, T), generator=g).to(dev)
        rat = torch.zeros(B, T, dtype=torch.bool, device=dev)
        rat[:, : T - 1] = True
        lay = TokenLayout.from_masks(rat)
        coef = torch.linspace(0.5, 1.5, B, device=dev)
        rows = torch.tensor([0, 1, T - 2, (B - 1) * T, B * T - 2], device=dev)  # incl. last rows
        for variant in ("split", "row"):
            x.requires_grad_(True)
            if dev == "cuda":
                torch.cuda.synchronize()
            t_call = time.time()
            res = fused_sequence_loss(x, ids, lay, (coef, coef), impl="triton", variant=variant)
            (gx,) = torch.autograd.grad(res.loss, x)
            if dev == "cuda":
                torch.cuda.synchronize()
            RESULTS["meta"][f"large_{variant}_first_call_s"] = round(time.time() - t_call, 2)
            x.requires_grad_(False)
            if variant == "split":
                # out-of-place cooperative split relies on in-order block dispatch (bounded
                # wait + correct fallback otherwise); many timeouts would make it slow
                n_prog = B * T * -(-V // 4096)
                n_out = int(res.timeouts)
                RESULTS["meta"]["large_split_timeouts"] = n_out
                if n_out > n_prog // 100 and not SMOKE:
                    SPLIT_SLOW[0] = True
            xs = x.view(-1, V)[rows].double().requires_grad_(True)
            idr = ids.view(-1)[rows]
            rlp, _ = _ref_rows(xs, idr)
            cr = coef[rows // T].double()
            (rg,) = torch.autograd.grad(-(cr * rlp).sum(), xs)
            lp_all = token_logprobs(x, ids, impl="triton")
            _check(f"N*V={B * T * V} > 2^31 token_logprobs", lp_all.view(-1)[rows], rlp, 2e-5)
            _check(
                f"N*V={B * T * V} fused {variant} grad rows",
                gx.view(-1, V)[rows],
                rg,
                2**-7 * max(1.0, float(rg.abs().max())),
            )  # one bf16 ulp
            RESULTS["correctness"].append(
                {
                    "check": f"large fused {variant} wait timeouts",
                    "timeouts": int(res.timeouts),
                    "ok": int(res.timeouts) == 0 or SMOKE,
                }
            )
            del gx, res, lp_all
            gc.collect()
        del x
        if dev == "cuda":
            torch.cuda.empty_cache()
    except Exception as e:
        record_error("large N*V", e)
    try:
        x = (torch.randn(1, long_T, long_V, generator=g) * 2).to(torch.bfloat16).to(dev)
        ids = torch.randint(0, long_V, (1, long_T), generator=g).to(dev)
        rat = torch.ones(1, long_T, dtype=torch.bool, device=dev)
        ans = torch.zeros_like(rat)
        ans[0, -50:] = True
        rat[0, -50:] = False
        lay = TokenLayout.from_masks(rat, ans)
        o = sequence_logprobs(x, ids, lay, impl="triton")
        r = sequence_logprobs(x.double(), ids, lay, impl="torch")
        # an fp32 sum of ~70k log-probs (|sum| ~ 6e5, one fp32 ulp = 0.06) accumulated over
        # 256-token blocks is off by ~0.2 (measured on CPU with exact per-token values: up to
        # 0.24); 3e-6 relative is ~10x that, and still catches one dropped token (~9)
        tol_z = 3e-6 * float(r.logp_z.abs().max()) + 1e-3
        _check(f"one sequence of {long_T} tokens: logp_z", o.logp_z, r.logp_z, tol_z)
        _check(f"one sequence of {long_T} tokens: logp_y", o.logp_y, r.logp_y, 1e-3)
        xr = x.clone().requires_grad_(True)
        res = fused_sequence_loss(xr, ids, lay, (torch.ones(1, device=dev),) * 2, impl="triton")
        (gx,) = torch.autograd.grad(res.loss, xr)
        _check(
            f"one sequence of {long_T} tokens: fused logp_z",
            res.logp_z,
            r.logp_z,
            tol_z,
        )
        RESULTS["correctness"].append(
            {"check": "long sequence grad finite", "ok": bool(torch.isfinite(gx).all())}
        )
    except Exception as e:
        record_error("long sequence", e)


# ------------------------------------------------------------------------------ timing
def bench_ms(fn, dev):
    if dev == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    fn()
    ts = []
    for _ in range(3):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


def peak_extra(fn, dev):
    """(bytes allocated above the inputs at peak, while fn runs and holds its outputs)."""
    if dev != "cuda":
        return None
    gc.collect()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return int(peak)


def timings(dev, budget_s, liger, deadline_s=None):
    """Time every implementation; ``torch.compile`` rows last (their compiles are the slow,
    unpredictable part), skipped after ``budget_s``; every row skipped after ``deadline_s``."""
    sel, grpo, liger_version = liger
    if SMOKE:
        B, T, Vs, n_mask, ans_len = 2, 12, [67], 3, 2
    else:
        B, T, Vs, n_mask, ans_len = 16, 1024, [32000, 151936], 100, 32
    N = B * T
    RESULTS["meta"]["timing_shape"] = {
        "B": B,
        "T": T,
        "N": N,
        "V": Vs,
        "masked_tail": n_mask,
        "answer_tokens": ans_len,
        "dtype": "bfloat16",
    }
    compile_ok = not SMOKE
    from kernels.ops import ROW_VARIANT_MAX_V

    def run_v(V, phase):
        g = torch.Generator(device="cpu").manual_seed(2)
        logits = torch.empty(B, T + 1, V, dtype=torch.bfloat16, device=dev)
        logits.normal_(0, 2)
        ids = torch.randint(0, V, (B, T), generator=g).to(dev)
        mask = torch.ones(B, T, dtype=torch.bool, device=dev)
        mask[:, T - n_mask :] = False
        ans = torch.zeros_like(mask)
        ans[:, T - n_mask - ans_len : T - n_mask] = True
        rat = mask & ~ans
        # ours reads the full [B, T+1, V] logits with shifted labels: the extra last position is
        # ignored, so the gradient goes straight into a full-size buffer (no slice-backward copy)
        ids_full = torch.zeros(B, T + 1, dtype=torch.long, device=dev)
        ids_full[:, :T] = ids
        pad = torch.zeros(B, 1, dtype=torch.bool, device=dev)
        lay = TokenLayout.from_masks(torch.cat([rat, pad], 1), torch.cat([ans, pad], 1))
        adv = torch.linspace(-1, 1, B, device=dev)
        coef_tok = (adv[:, None] * mask).float()
        esize = logits.element_size()
        rows_scored = int(mask.sum())
        floor_fwd = rows_scored * V * esize
        floor_fb = rows_scored * V * esize + B * (T + 1) * V * esize
        grad_bytes = logits.numel() * esize
        default_variant = "row" if V <= ROW_VARIANT_MAX_V else "split"

        def add(kind, name, fn, floor, grad_alloc, note=""):
            is_compile = name.startswith("torch.compile")
            if is_compile != (phase == "compile"):
                return
            late = time.time() - T0
            why = None
            if deadline_s is not None and late > deadline_s:
                why = f"deadline ({late:.0f} s > {deadline_s:.0f} s)"
            elif is_compile and late > budget_s:
                why = f"time budget ({late:.0f} s > {budget_s:.0f} s)"
            elif SPLIT_SLOW[0] and "split" in name and "IN-PLACE" not in name:
                why = "cooperative split timed out on >1% of programs in correctness_large"
            if why:
                RESULTS["timings"].append({"V": V, "kind": kind, "impl": name, "skipped": why})
                log(f"V={V} {kind} {name}: skipped, {why}")
                return
            try:
                t_start = time.time()
                ms = bench_ms(fn, dev)
                pk = peak_extra(fn, dev)
                row = {
                    "V": V,
                    "kind": kind,
                    "impl": name,
                    "ms": ms,
                    "GBps_vs_floor": floor / ms / 1e6,
                    "floor_bytes": floor,
                    "peak_alloc_bytes": pk,
                    "peak_extra_bytes": None if pk is None else max(0, pk - grad_alloc),
                    "note": note,
                    "wall_s_incl_compile": round(time.time() - t_start, 1),
                }
                RESULTS["timings"].append(row)
                log(
                    f"V={V} {kind:8s} {name:46s} {ms:9.3f} ms  {row['GBps_vs_floor']:8.1f} GB/s"
                    + (
                        ""
                        if pk is None
                        else f"  peak extra {row['peak_extra_bytes'] / 2**30:.3f} GiB"
                    )
                    + f"  ({row['wall_s_incl_compile']} s)"
                )
            except Exception as e:
                record_error(f"V={V} {kind} {name}", e)
                RESULTS["timings"].append(
                    {"V": V, "kind": kind, "impl": name, "error": str(e)[:300]}
                )
            if SAVE_PATH[0]:
                save(SAVE_PATH[0])

        # bandwidth ceiling
        if dev == "cuda":
            buf = torch.empty_like(logits)
            add(
                "copy",
                "device-to-device copy (read+write)",
                lambda: buf.copy_(logits),
                2 * grad_bytes,
                0,
            )
            del buf

        # ---------------- forward only
        def naive_fwd(z, i, m):
            return z[:, :-1].float().log_softmax(-1).gather(-1, i.unsqueeze(-1)).squeeze(-1) * m

        with torch.no_grad():
            add(
                "fwd",
                "ours sequence_logprobs (triton)",
                lambda: sequence_logprobs(logits, ids_full, lay, impl="triton"),
                floor_fwd,
                0,
            )
            add(
                "fwd",
                "ours token_logprobs all rows (triton)",
                lambda: token_logprobs(logits[:, :T], ids, impl="triton"),
                B * T * V * esize,
                0,
                "scores masked rows too",
            )
            add("fwd", "naive torch", lambda: naive_fwd(logits, ids, mask), floor_fwd, 0)
            if compile_ok and phase == "compile":
                try:
                    cf = torch.compile(naive_fwd, dynamic=False)
                    add("fwd", "torch.compile(naive)", lambda: cf(logits, ids, mask), floor_fwd, 0)
                except Exception as e:
                    record_error(f"V={V} torch.compile fwd", e)
            if sel is not None:
                add(
                    "fwd",
                    "liger fused_selective_log_softmax",
                    lambda: sel(logits, ids, 1.0, mask),
                    floor_fwd,
                    0,
                )

        # ---------------- forward + backward
        x = logits.requires_grad_(True)
        G = B  # one prompt per sequence here: normaliser of the mean

        def refill():
            """In-place rows leave the gradient in the logits: restore logits-like values."""
            with torch.no_grad():
                x.normal_(0, 2)

        for variant in ("split", "row"):
            add(
                "fwd+bwd",
                f"ours fused {variant}",
                lambda v=variant: torch.autograd.grad(
                    fused_sequence_loss(
                        x, ids_full, lay, (adv, adv), normalizer=G, impl="triton", variant=v
                    ).loss,
                    x,
                )[0],
                floor_fb,
                grad_bytes,
            )
        add(
            "fwd+bwd",
            f"ours fused {default_variant}, likelihood mode (rule)",
            lambda: torch.autograd.grad(
                fused_sequence_loss(
                    x,
                    ids_full,
                    lay,
                    lambda y: (adv + 0 * y, adv + 0 * y),
                    normalizer=G,
                    impl="triton",
                ).loss,
                x,
            )[0],
            floor_fb,
            grad_bytes,
            "answer rows scored first, then one fused pass",
        )
        add(
            "fwd+bwd",
            "ours two-pass (sequence_logprobs + autograd)",
            lambda: torch.autograd.grad(
                -(adv * sequence_logprobs(x, ids_full, lay, impl="triton").logp_z).sum() / G, x
            )[0],
            floor_fb + rows_scored * V * esize,
            grad_bytes,
            "6 bytes/element",
        )
        for variant in ("split", "row"):
            add(
                "fwd+bwd",
                f"ours fused {variant} IN-PLACE",
                lambda v=variant: torch.autograd.grad(
                    fused_sequence_loss(
                        x, ids_full, lay, (adv, adv), normalizer=G, impl="triton",
                        inplace_grad=True, variant=v,
                    ).loss,
                    x,
                )[0],
                floor_fb,
                0,
                "gradient written into the logits (destroys them; untuned default config)",
            )  # fmt: skip
            refill()

        def naive_loss(z, i, c):
            lp = z[:, :-1].float().log_softmax(-1).gather(-1, i.unsqueeze(-1)).squeeze(-1)
            return -(lp * c).sum() / G

        add(
            "fwd+bwd",
            "naive torch",
            lambda: torch.autograd.grad(naive_loss(x, ids, coef_tok), x)[0],
            floor_fb,
            grad_bytes,
        )
        if compile_ok and phase == "compile":
            try:
                cl = torch.compile(naive_loss, dynamic=False)
                add(
                    "fwd+bwd",
                    "torch.compile(naive)",
                    lambda: torch.autograd.grad(cl(x, ids, coef_tok), x)[0],
                    floor_fb,
                    grad_bytes,
                )
            except Exception as e:
                record_error(f"V={V} torch.compile fwd+bwd", e)
        if grpo is not None:
            for inplace in (False, True):  # in-place last: it destroys the logits
                add(
                    "fwd+bwd",
                    f"liger triton_grpo_loss inplace={inplace}",
                    lambda ip=inplace: torch.autograd.grad(
                        grpo(
                            x,
                            None,
                            None,
                            ids,
                            adv,
                            completion_mask=mask.int(),
                            temperature=1.0,
                            beta=0.0,
                            inplace=ip,
                            loss_type="grpo",
                            reduce=True,
                        )[0],
                        x,
                    )[0],
                    floor_fb,
                    0 if inplace else grad_bytes,
                )
        x.requires_grad_(False)

    for phase in ("main", "compile"):
        if phase == "compile" and not compile_ok:
            break
        for V in Vs:
            try:
                run_v(V, phase)
            except Exception as e:  # e.g. out of memory allocating the logits
                record_error(f"timings V={V} {phase}", e)
            if SAVE_PATH[0]:
                save(SAVE_PATH[0])
            gc.collect()
            if dev == "cuda":
                torch.cuda.empty_cache()
    if sel is None:
        RESULTS["meta"]["liger"] = f"skipped: {liger_version}"


def goals():
    def t(V, kind, impl):
        for r in RESULTS["timings"]:
            if r.get("V") == V and r.get("kind") == kind and r.get("impl") == impl and "ms" in r:
                return r["ms"]
        return None

    out = {}
    for V, target in ((32000, 0.70), (151936, 0.80)):
        fwd = t(V, "fwd", "ours sequence_logprobs (triton)")
        lfwd = t(V, "fwd", "liger fused_selective_log_softmax")
        if fwd and lfwd:
            out[f"V={V} fwd ours/liger (goal <= 1.05)"] = round(fwd / lfwd, 3)
        best = [t(V, "fwd+bwd", f"ours fused {v}") for v in ("split", "row")]
        best = min([b for b in best if b], default=None)
        for ip in (True, False):
            lg = t(V, "fwd+bwd", f"liger triton_grpo_loss inplace={ip}")
            if best and lg:
                out[f"V={V} fwd+bwd best ours fused / liger inplace={ip} (goal <= {target})"] = (
                    round(best / lg, 3)
                )
        ipl = [t(V, "fwd+bwd", f"ours fused {v} IN-PLACE") for v in ("split", "row")]
        ipl = min([b for b in ipl if b], default=None)
        lgi = t(V, "fwd+bwd", "liger triton_grpo_loss inplace=True")
        if ipl and lgi:
            out[f"V={V} fwd+bwd best ours in-place / liger inplace=True"] = round(ipl / lgi, 3)
    RESULTS["goals"] = out


def print_table():
    print("\n=== correctness ===")
    bad = [r for r in RESULTS["correctness"] if not r.get("ok", False)]
    print(f"{len(RESULTS['correctness']) - len(bad)} ok, {len(bad)} failed")
    for r in bad:
        print("  FAIL", r)
    print(
        "\n=== timings (median ms; GB/s against the byte floor; peak extra beyond logits "
        "and one gradient buffer) ==="
    )
    print(f"{'V':>7} {'kind':8} {'impl':46} {'ms':>9} {'GB/s':>8} {'extra GiB':>10}")
    for r in RESULTS["timings"]:
        if "ms" not in r:
            print(f"{r['V']:>7} {r['kind']:8} {r['impl']:46} {r.get('skipped') or 'ERROR'}")
            continue
        ex = r["peak_extra_bytes"]
        print(
            f"{r['V']:>7} {r['kind']:8} {r['impl']:46} {r['ms']:9.3f} "
            f"{r['GBps_vs_floor']:8.1f} {'-' if ex is None else f'{ex / 2**30:10.3f}'}"
        )
    print("\n=== goals (ratios in this run) ===")
    for k, v in RESULTS["goals"].items():
        print(f"  {k}: {v}")
    if RESULTS["errors"]:
        print(f"\n{len(RESULTS['errors'])} errors recorded (see JSON)")


def _out_path(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", str(RESULTS["meta"].get("gpu", "cpu"))).strip("-").lower()
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return os.path.join(out_dir, f"{gpu}-{stamp}.json")


def _clean(o):
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_clean(v) for v in o]
    return o


def save(path):
    """Write the results so far (atomically: a run killed mid-write leaves the last version)."""
    RESULTS["meta"]["wall_s"] = round(time.time() - T0, 1)
    with open(path + ".tmp", "w") as f:
        json.dump(_clean(RESULTS), f, indent=1)
    os.replace(path + ".tmp", path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, CPU, Triton interpreter")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    ap.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="skip remaining torch.compile timings after this many seconds",
    )
    ap.add_argument(
        "--deadline-s",
        type=float,
        default=520.0,
        help="skip every remaining timing row after this many seconds (device calls end at 600)",
    )
    ap.add_argument("--skip-large", action="store_true", help="skip the N*V > 2^31 checks")
    args = ap.parse_args(argv)
    dev = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if dev == "cpu" and not args.smoke:
        print("no CUDA device: run with --smoke for the CPU interpreter version", file=sys.stderr)
        return 2
    RESULTS["meta"] = meta(dev)
    if not kernels.triton_available():
        record_error("setup", RuntimeError("triton is not importable"))
    liger = import_liger()
    RESULTS["meta"]["liger"] = liger[2]
    log(
        f"device {RESULTS['meta'].get('gpu')}; torch {torch.__version__}; "
        f"triton {RESULTS['meta'].get('triton')}; liger {liger[2]}"
    )
    torch.manual_seed(0)
    out_path = _out_path(args.out)
    SAVE_PATH[0] = out_path
    # correctness with the fixed default configs (no autotuning: fewer cold compiles)
    os.environ["TSALLIS_TRITON_AUTOTUNE"] = "0"
    for stage, fn in (
        ("correctness_small", lambda: correctness_small(dev)),
        ("correctness_large", lambda: None if args.skip_large else correctness_large(dev)),
        ("timings", lambda: timings(dev, args.budget_s, liger, args.deadline_s)),
    ):
        if stage == "timings":
            os.environ["TSALLIS_TRITON_AUTOTUNE"] = "1"
        try:
            log(f"--- {stage}")
            fn()
        except Exception as e:
            record_error(stage, e)
        save(out_path)  # after every stage: a run cut short still leaves its results
    goals()
    save(out_path)
    print_table()
    print(f"\nwrote {out_path}")
    failed = [r for r in RESULTS["correctness"] if not r.get("ok", False)]
    return 1 if (failed or RESULTS["errors"]) else 0


if __name__ == "__main__":
    sys.exit(main())
