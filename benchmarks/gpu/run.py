"""The runner of the GPU benchmark: one handler per case kind, checks, timings, JSON, goals.

For every case of :func:`.cases.build_cases` the runner (``run_cases``):

1. skips it when ``--deadline-s`` would be passed (estimated cost, see :mod:`.cases`);
2. builds (and caches) the workload's tensors;
3. calls the implementation once to let the autotuner pick its config (GPU), then once more
   for the outputs that are checked: those come from exactly the config that is timed;
4. checks them against the float64 oracle (:func:`kernels.reference.naive_logp_entropy` and
   autograd in float64), sequence by sequence. Gradients are judged against low-precision
   torch's own error, element by element: ``|ours - ref| <= |torch_lowp - ref| + slack`` with
   ``slack`` a fraction of one unit in the last place of ``ref`` in the output dtype (1/8 on
   the GPU, which rounds to nearest; one unit under the interpreter, which truncates), and on
   average ``mean |ours - ref| <= mean |torch_lowp - ref|``; summary statistics are recorded;
5. repeats the call and requires the same bits; for ``batch_invariance`` cases runs the first
   and the last sequence alone and requires the same bits as inside the batch;
6. times it (median of ``triton.testing.do_bench``, which flushes L2 between calls) and
   measures the peak memory beyond the inputs and one gradient buffer;
7. saves the JSON (atomically) and prints a progress line.

Then it prints the goals table (met / missed / not measured) and the dispatch table that the
measured timings support.
"""

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import sys
import time
import traceback
from dataclasses import dataclass

from .cases import KINDS, PROFILES, Case, Workload, budget_lines, build_cases

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: the clock of the deadline starts when this module is imported (before torch)
START = time.time()

#: goals, as ratios against Liger measured in the same run
GOAL_FWD = 1.05
GOAL_FUSED = {32000: 0.70, 151936: 0.80}
GOAL_EXTRA_MEM = 0.01  # of the logits' bytes
#: slack of the elementwise gradient criterion, in units in the last place of the reference
SLACK_ULP_GPU = 0.125
SLACK_ULP_INTERPRETER = 1.0
#: allowed ratio of our mean gradient error to low-precision torch's (interpreter: truncation)
MEAN_FACTOR_INTERPRETER = 2.0
#: fp32 gradients (no low-precision yardstick): 64 ulp, plus this fraction of max |ref|
FP32_REL_TO_MAX = 4e-6
#: environment switch of the kernels' autotuner ("0": fixed default configs)
AUTOTUNE_ENV = "TSALLIS_TRITON_AUTOTUNE"
#: default deadline of a GPU run (s): the whole run stays under 5 minutes
DEFAULT_DEADLINE_S = 270.0

_MANTISSA_BITS = {"bfloat16": 7, "float16": 10, "float32": 23, "float64": 52}
_MIN_EXP = {"bfloat16": -126, "float16": -14, "float32": -126, "float64": -1022}


# ------------------------------------------------------------------------------- utilities
def _dt_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def ulp(ref, dtype_name: str):
    """Spacing of the ``dtype_name`` numbers at ``|ref|`` (elementwise, float64 tensor):
    ``2^(floor(log2 |ref|) - mantissa_bits)``, never below the dtype's subnormal spacing."""
    import torch

    a = ref.abs()
    _, e = torch.frexp(a)  # a = m 2^e, m in [0.5, 1); frexp(0) gives e = 0
    e = torch.where(a > 0, e.to(torch.float64) - 1, float(_MIN_EXP[dtype_name]))
    e = torch.clamp(e, min=_MIN_EXP[dtype_name])
    return torch.exp2(e - _MANTISSA_BITS[dtype_name])


class GradStats:
    """Accumulates the elementwise gradient criterion over chunks of sequences."""

    def __init__(self, dtype_name: str, slack_ulp: float, mean_factor=1.0, rel_to_max=0.0):
        self.dtype_name, self.slack_ulp = dtype_name, slack_ulp
        self.mean_factor, self.rel_to_max = mean_factor, rel_to_max
        self.n = self.n_bad = 0
        self.sum_k = self.sum_t = 0.0
        self.max_k = self.max_t = self.max_k_ulp = 0.0
        self.first_bad = None
        self.nan = False

    def add(self, got, ref, lowp, offset=0):
        """``got``: ours, ``ref``: float64 oracle, ``lowp``: torch in the logits' dtype (or None:
        then the bound is ``slack`` alone)."""
        import torch

        g = got.detach().double()
        r = ref.detach().double()
        ek = (g - r).abs()
        if not bool(torch.isfinite(g).all()):
            self.nan = True
        et = (lowp.detach().double() - r).abs() if lowp is not None else torch.zeros_like(ek)
        u = ulp(r, self.dtype_name)
        floor = self.rel_to_max * float(r.abs().max()) if r.numel() else 0.0
        bad = ek > et + self.slack_ulp * u + floor + 1e-30
        nb = int(bad.sum())
        if nb and self.first_bad is None:
            i = int(torch.nonzero(bad.reshape(-1))[0, 0])
            self.first_bad = {
                "flat_index": offset + i,
                "ours": float(g.reshape(-1)[i]),
                "ref": float(r.reshape(-1)[i]),
                "torch_lowp": None if lowp is None else float(lowp.reshape(-1)[i]),
            }
        self.n += ek.numel()
        self.n_bad += nb
        self.sum_k += float(ek.sum())
        self.sum_t += float(et.sum())
        self.max_k = max(self.max_k, float(ek.max()) if ek.numel() else 0.0)
        self.max_t = max(self.max_t, float(et.max()) if et.numel() else 0.0)
        nz = u > 0
        if bool(nz.any()):
            self.max_k_ulp = max(self.max_k_ulp, float((ek[nz] / u[nz]).max()))

    def result(self, name: str, vs_lowp: bool = True) -> dict:
        mean_k = self.sum_k / max(self.n, 1)
        mean_t = self.sum_t / max(self.n, 1)
        ok = self.n_bad == 0 and not self.nan and (
            not vs_lowp or mean_k <= mean_t * self.mean_factor
        )
        return {
            "check": name,
            "ok": ok,
            "criterion": (
                f"|ours-ref| <= |torch_{self.dtype_name}-ref| + {self.slack_ulp} ulp elementwise, "
                f"mean |ours-ref| <= {self.mean_factor} mean |torch_{self.dtype_name}-ref|"
                if vs_lowp
                else f"|ours-ref| <= {self.slack_ulp} ulp + {self.rel_to_max} max|ref| elementwise"
            ),
            "elements": self.n,
            "elements_failing": self.n_bad,
            "max_err": self.max_k,
            "max_err_torch_lowp": self.max_t if vs_lowp else None,
            "mean_err": mean_k,
            "mean_err_torch_lowp": mean_t if vs_lowp else None,
            "max_err_in_ulp": self.max_k_ulp,
            "nonfinite": self.nan,
            "first_failure": self.first_bad,
        }


def value_check(name, got, ref, tol) -> dict:
    """Absolute-error check of fp32 values against the float64 oracle (``tol`` scalar)."""
    import torch

    g = got.detach().double().reshape(-1)
    r = ref.detach().double().reshape(-1).to(g.device)
    finite = torch.isfinite(g).all()
    err = float((g - r).abs().max()) if g.numel() else 0.0
    ok = bool(finite) and err <= tol
    return {"check": name, "ok": ok, "max_err": err, "tol": tol}


def bitwise(name, pairs) -> dict:
    """``pairs``: [(a, b), ...] that must be the same bits."""
    import torch

    same = all(a.shape == b.shape and torch.equal(a, b) for a, b in pairs)
    return {"check": name, "ok": bool(same)}


def sum_tol(ref_tokens, active):
    """Tolerance of an fp32 per-sequence sum of log-probs: 3e-6 of sum |logp| (accumulated fp32
    rounding of the per-token values and of the sum) plus 1e-3."""
    return 3e-6 * float((ref_tokens.abs() * active).sum(-1).max()) + 1e-3


# ------------------------------------------------------------------------------- Liger
def find_liger(whl_dir):
    """Liger-Kernel's two entry points ``(fused_selective_log_softmax, triton_grpo_loss,
    version or reason)``; never raises.

    Imported as installed, else from the newest ``liger_kernel-*.whl`` in ``whl_dir``: a wheel is
    a zip, unpacked into a temporary folder put first on ``sys.path`` (no pip needed).
    """
    try:
        return _liger_import(None)
    except Exception as first:
        wheels = []
        if whl_dir and os.path.isdir(whl_dir):
            wheels = sorted(f for f in os.listdir(whl_dir)
                            if f.startswith("liger_kernel") and f.endswith(".whl"))  # fmt: skip
        if not wheels:
            return None, None, f"not importable ({type(first).__name__}: {first}); no wheel"
        path = os.path.join(whl_dir, wheels[-1])
        try:
            return _liger_import(path)
        except Exception as e:
            return None, None, f"not importable from {path}: {type(e).__name__}: {e}"


def _liger_import(wheel):
    if wheel is not None:
        import tempfile
        import zipfile

        dest = tempfile.mkdtemp(prefix="liger_whl_")
        with zipfile.ZipFile(wheel) as z:
            z.extractall(dest)
        sys.path.insert(0, dest)
        for mod in [m for m in sys.modules if m.startswith("liger_kernel")]:
            del sys.modules[mod]
    from liger_kernel.ops.grpo_loss import fused_selective_log_softmax

    note = ""
    try:
        from liger_kernel.transformers.grpo_loss import triton_grpo_loss
    except Exception as e:  # the transformers side of Liger failed to import: same kernel
        from liger_kernel.ops.grpo_loss import GrpoLossFunction

        note = f" [triton_grpo_loss not importable ({type(e).__name__}: {e}); " \
            "calling GrpoLossFunction.apply as triton_grpo_loss does]"  # fmt: skip

        def triton_grpo_loss(logits, old_logp, ref_logp, completion_ids, advantages,
                             completion_mask=None, temperature=0.9, beta=0.04, eps_low=0.2,
                             eps_high=0.4, inplace=True, loss_type="dapo",
                             reduce=False):  # fmt: skip
            out = GrpoLossFunction.apply(logits, old_logp, ref_logp, completion_ids, advantages,
                                         completion_mask, temperature, beta, eps_low, eps_high,
                                         inplace, loss_type, None, reduce)  # fmt: skip
            return (out[0], list(out[1:])) if reduce else out

    version = "unknown"
    if wheel is not None:
        m = re.match(r"liger_kernel-([^-]+)-", os.path.basename(wheel))
        version = (m.group(1) if m else "unknown") + f" (from {os.path.basename(wheel)})"
    else:
        try:
            import importlib.metadata as md

            version = md.version("liger-kernel")
        except Exception:
            pass
    return fused_selective_log_softmax, triton_grpo_loss, version + note


# ------------------------------------------------------------------------------- workloads
@dataclass
class Data:
    """Tensors of one workload (built once, shared by every case of that workload)."""

    w: Workload
    logits: object  # [B, T+1, V] leaf, requires grad
    ids: object  # [B, T+1] int64 (the last position and the masked tail hold random ids)
    rat: object  # [B, T+1] bool
    ans: object  # [B, T+1] bool
    active: object  # [B, T+1] bool
    layout: object
    c: object  # [B] fp32 per-sequence coefficient (GRPO: advantage / scored tokens)
    adv: object  # [B] fp32 advantages (Liger)
    norm: float  # normaliser (B: the mean over sequences)
    scratch: object = None  # [B, T+1, V] leaf for in-place cases

    @property
    def logits_bytes(self) -> int:
        return self.logits.numel() * self.logits.element_size()


def make_data(w: Workload, dev) -> Data:
    import torch

    from kernels import TokenLayout

    dtype = getattr(torch, w.dtype)
    g = torch.Generator(device=dev).manual_seed(1000 + w.V)
    logits = torch.empty(w.B, w.T + 1, w.V, dtype=dtype, device=dev)
    logits.normal_(0.0, 2.0, generator=g)
    ids = torch.randint(0, w.V, (w.B, w.T + 1), generator=g, device=dev)
    t = torch.arange(w.T + 1, device=dev)
    end = w.T - w.masked_tail
    active = (t < end).expand(w.B, -1).contiguous()
    ans = ((t >= end - w.answer_len) & (t < end)).expand(w.B, -1).contiguous()
    rat = active & ~ans
    layout = TokenLayout.from_masks(rat, ans)
    adv = torch.linspace(-1.0, 1.0, w.B, device=dev) + 0.05
    c = adv / active.sum(1).float()
    return Data(w, logits.requires_grad_(True), ids, rat, ans, active, layout, c, adv, float(w.B))


def make_rule(c, answer_len: int):
    """Likelihood-mode coefficient rule of the answer log-probs y: smooth, O(1) in y,
    ``(c (1 + tanh(y / s) / 4), c (1 - tanh(y / s) / 4))`` with ``s = 16 * answer_len``."""
    import torch

    s = 16.0 * max(answer_len, 1)

    def rule(y):
        t = torch.tanh(y.float() / s)
        return c * (1 + 0.25 * t), c * (1 - 0.25 * t)

    return rule


def sub_layout(d: Data, b0: int, b1: int):
    from kernels import TokenLayout

    return TokenLayout.from_masks(d.rat[b0:b1], d.ans[b0:b1])


def oracle_fused(d: Data, b0, b1, mode):
    """float64 oracle of sequences b0:b1: (token logp [b, T+1], z, y, grad [b, T+1, V])."""
    import torch

    from kernels.reference import naive_logp_entropy

    x = d.logits[b0:b1].detach().to(torch.float64).requires_grad_(True)
    lp, _ = naive_logp_entropy(x, d.ids[b0:b1], d.w.temperature)
    z = (lp * d.rat[b0:b1]).sum(1)
    y = (lp * d.ans[b0:b1]).sum(1)
    c = d.c[b0:b1].double()
    if mode == "likelihood":
        cz, cy = make_rule(c, d.w.answer_len)(y.detach())
        cz, cy = cz.double(), cy.double()
    else:
        cz = cy = c
    loss = -(cz * z + cy * y).sum() / d.norm
    (gx,) = torch.autograd.grad(loss, x)
    return lp.detach(), z.detach(), y.detach(), gx


def lowp_fused(d: Data, b0, b1, mode):
    """The same loss in plain torch in the logits' dtype (no upcast): its gradient is the
    yardstick of the elementwise criterion."""
    import torch

    x = d.logits[b0:b1].detach().clone().requires_grad_(True)
    u = x if d.w.temperature == 1.0 else x / d.w.temperature
    lp = u.log_softmax(-1).gather(-1, d.ids[b0:b1].unsqueeze(-1)).squeeze(-1).float()
    z = (lp * d.rat[b0:b1]).sum(1)
    y = (lp * d.ans[b0:b1]).sum(1)
    c = d.c[b0:b1]
    if mode == "likelihood":
        cz, cy = make_rule(c, d.w.answer_len)(y.detach())
    else:
        cz = cy = c
    loss = -(cz * z + cy * y).sum() / d.norm
    (gx,) = torch.autograd.grad(loss, x)
    return gx


# ------------------------------------------------------------------------------- runner
class Runner:
    def __init__(self, args, dev):
        self.args, self.dev = args, dev
        self.smoke = bool(args.smoke)
        self.t0 = START
        self.results = {
            "meta": {},
            "cases": [],
            "goals": [],
            "dispatch": {},
            "errors": [],
        }
        self.out_path = None
        self.data: dict = {}
        self.liger = (None, None, "not loaded")
        self.slack = SLACK_ULP_INTERPRETER if self.smoke else SLACK_ULP_GPU
        # truncating stores (interpreter) double the mean rounding error
        self.mean_factor = MEAN_FACTOR_INTERPRETER if self.smoke else 1.0
        self.chunk = None  # sequences per oracle chunk (None: all)

    # --------------------------------------------------------------------------- plumbing
    def log(self, msg):
        print(f"[{time.time() - self.t0:7.1f}s] {msg}", flush=True)

    def save(self):
        """Write the results so far atomically (a run killed mid-write keeps the last file)."""
        if self.out_path is None:
            return
        self.results["meta"]["wall_s"] = round(time.time() - self.t0, 1)
        tmp = self.out_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(_clean(self.results), f, indent=1)
        os.replace(tmp, self.out_path)

    def sync(self):
        import torch

        if self.dev == "cuda":
            torch.cuda.synchronize()

    def get_data(self, w: Workload) -> Data:
        if w.key not in self.data:
            self.data[w.key] = make_data(w, self.dev)
        return self.data[w.key]

    def free(self):
        import torch

        gc.collect()
        if self.dev == "cuda":
            torch.cuda.empty_cache()

    def bi_sequences(self, B):
        """Sequences run alone for the batch-invariance check: first and last (smoke: last)."""
        return [B - 1] if self.smoke else sorted({0, B - 1})

    def chunks(self, B):
        step = B if self.chunk is None else self.chunk
        return [(b, min(B, b + step)) for b in range(0, B, step)]

    # --------------------------------------------------------------------------- timing
    def time_ms(self, fn):
        """Median ms of ``fn`` (GPU: triton.testing.do_bench; smoke: one wall-clock call)."""
        if self.dev == "cuda":
            import triton.testing

            return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3

    def peak_extra(self, fn, held_bytes):
        """Bytes allocated beyond the inputs at peak while ``fn`` runs and its outputs are held,
        minus ``held_bytes`` (one gradient buffer where the implementation returns one)."""
        import torch

        if self.dev != "cuda":
            return None
        gc.collect()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del out
        return int(peak) - int(held_bytes)

    # --------------------------------------------------------------------------- one case
    def run_case(self, i, n, case: Case):
        row = {
            "name": case.name,
            "kind": case.kind,
            "peer": case.peer,
            "variant": case.variant,
            "mode": case.mode,
            "inplace": case.inplace,
            "est_s": case.est_s,
        }
        if case.work is not None:
            row.update(V=case.work.V, B=case.work.B, T=case.work.T, dtype=case.work.dtype)
        elapsed = time.time() - self.t0
        dl = self.args.deadline_s
        if dl is not None and elapsed + (0 if self.smoke else case.est_s) > dl:
            row.update(status="skipped", why=f"deadline: {elapsed:.0f} s + est {case.est_s:.0f} s "
                       f"> {dl:.0f} s")  # fmt: skip
            self.results["cases"].append(row)
            self.log(f"({i}/{n}) {case.name}: skipped ({row['why']})")
            self.save()
            return row
        handler = getattr(self, "h_" + case.kind)
        t_start = time.time()
        tuned_before = tuned_configs()
        saved_env = os.environ.get(AUTOTUNE_ENV)
        if case.params.get("autotune") is False:  # untimed logic checks: the fixed configs
            os.environ[AUTOTUNE_ENV] = "0"
            row["autotune"] = False
        try:
            spec = handler(case, row)
            tuned_after = tuned_configs()
            new = {k: v for k, v in tuned_after.items() if tuned_before.get(k) != v}
            if new:
                row["tuned_configs"] = new
            if spec is not None and case.time:
                self.timing(case, row, spec)
            checks = row.get("checks", [])
            row["status"] = "ok" if all(c["ok"] for c in checks) else "fail"
            if spec is None and "skipped" in row:
                row["status"] = "skipped"
                row["why"] = row.pop("skipped")
        except Exception as e:
            tb = traceback.format_exc(limit=6)
            row.update(status="error", error=f"{type(e).__name__}: {e}"[:600], traceback=tb[-2000:])
            self.results["errors"].append({"case": case.name, "error": row["error"]})
        finally:
            if saved_env is None:
                os.environ.pop(AUTOTUNE_ENV, None)
            else:
                os.environ[AUTOTUNE_ENV] = saved_env
        row["wall_s"] = round(time.time() - t_start, 2)
        self.results["cases"].append(row)
        self.free()
        self.save()
        self.log(f"({i}/{n}) {progress_line(row)}")
        return row

    def timing(self, case, row, spec):
        fn = spec["fn"]
        if spec.get("restore"):
            spec["restore"]()
        ms = self.time_ms(fn)
        t = {"ms": ms, "floor_bytes": spec["floor"], "GBps_vs_floor": spec["floor"] / ms / 1e6,
             "logits_bytes": spec["logits_bytes"]}
        t["floor_bytes_per_element"] = spec.get("floor_per_elem")
        if spec.get("read"):  # forward+backward: also against the two-pass floor (6 B/element)
            t["GBps_vs_two_pass_floor"] = (spec["floor"] + spec["read"]) / ms / 1e6
        if spec.get("restore"):
            spec["restore"]()
        pk = self.peak_extra(fn, spec.get("held", 0))
        if pk is not None:
            t["peak_extra_bytes"] = pk
            t["peak_extra_frac_of_logits"] = pk / spec["logits_bytes"]
        if self.smoke:
            t["note"] = "smoke: one wall-clock call under the interpreter, not a measurement"
        row["timing"] = t

    # --------------------------------------------------------------------------- checks
    def fused_checks(self, row, d: Data, mode, grad, z, y, name="", lowp=True):
        """Gradient (elementwise vs torch in the logits' dtype) and sums vs the float64 oracle."""
        dtn = _dt_name(d.logits.dtype)
        gs = GradStats(dtn, self.slack, self.mean_factor)
        refz, refy, lps = [], [], []
        for b0, b1 in self.chunks(d.w.B):
            lp, rz, ry, rg = oracle_fused(d, b0, b1, mode)
            lg = lowp_fused(d, b0, b1, mode) if lowp else None
            gs.add(grad[b0:b1], rg, lg, offset=b0 * rg[0].numel())
            refz.append(rz)
            refy.append(ry)
            lps.append(lp)
            del rg, lg
        checks = row.setdefault("checks", [])
        checks.append(gs.result(f"{name}grad vs float64", vs_lowp=lowp))
        if z is not None:
            import torch

            lp = torch.cat(lps)
            tol = sum_tol(lp, d.active)
            checks.append(value_check(f"{name}logp_z vs float64", z, torch.cat(refz), tol))
            checks.append(value_check(f"{name}logp_y vs float64", y, torch.cat(refy), tol))

    def token_checks(self, row, d: Data, logp_tokens, name=""):
        """Per-token log-probs [B, T+1] (0 at ignored rows) vs the float64 oracle."""

        from kernels.reference import naive_logp_entropy

        errs = []
        for b0, b1 in self.chunks(d.w.B):
            ref, _ = naive_logp_entropy(d.logits[b0:b1].detach(), d.ids[b0:b1], d.w.temperature)
            act = d.active[b0:b1]
            got = logp_tokens[b0:b1].double()
            errs.append(float(((got - ref).abs() * act).max()))
            bad_ignored = bool((got * ~act).abs().max() > 0) if got.numel() else False
            if bad_ignored:
                errs.append(float("inf"))
        err = max(errs)
        tol = 2e-5 * (1 + math.log(max(d.w.V, 2)))
        row.setdefault("checks", []).append(
            {"check": f"{name}token logp vs float64 (0 at ignored rows)", "ok": err <= tol,
             "max_err": err, "tol": tol}  # fmt: skip
        )

    # --------------------------------------------------------------------------- handlers
    def _floors(self, d: Data):
        w = d.w
        es = d.logits.element_size()
        read = w.scored_rows * w.V * es
        return {"fwd": read, "fused": read + w.rows * w.V * es}

    def _spec(self, d: Data, fn, kind, held=0, restore=None):
        """What the runner times: ``fn`` against the byte floor of ``kind`` ("fwd": the scored
        rows read once; "fused": that plus the whole gradient written once)."""
        f = self._floors(d)
        spec = {"fn": fn, "restore": restore, "floor": f[kind], "logits_bytes": d.logits_bytes,
                "held": held, "floor_per_elem": 2 if kind == "fwd" else 4}  # fmt: skip
        if kind == "fused":
            spec["read"] = f["fwd"]
        return spec

    def h_copy(self, case, row):
        import torch

        d = self.get_data(case.work)
        buf = torch.empty_like(d.logits, requires_grad=False)
        src = d.logits.detach()
        return {"fn": lambda: buf.copy_(src), "floor": 2 * d.logits_bytes,
                "logits_bytes": d.logits_bytes, "held": 0}  # fmt: skip

    def _call_fused(self, d, x, b0, b1, variant, mode, inplace):
        """``fused_sequence_loss`` on sequences b0:b1 of ``x`` (the whole leaf when the range
        is the full batch): returns (FusedLoss, grad)."""
        import torch

        from kernels import fused_sequence_loss

        full = (b0, b1) == (0, d.w.B)
        xs = x if full else x[b0:b1].detach().clone().requires_grad_(True)
        lay = d.layout if full else sub_layout(d, b0, b1)
        c = d.c[b0:b1]
        coefs = make_rule(c, d.w.answer_len) if mode == "likelihood" else (c, c)
        res = fused_sequence_loss(
            xs, d.ids[b0:b1], lay, coefs, normalizer=d.norm, temperature=d.w.temperature,
            inplace_grad=inplace, impl="triton", variant=variant,
        )  # fmt: skip
        (gx,) = torch.autograd.grad(res.loss, xs)
        return res, gx

    def _leaf(self, d: Data, inplace):
        """The logits leaf a case works on: the shared one, or (in place) a scratch copy and a
        function that restores it."""
        import torch

        if not inplace:
            return d.logits, None
        if d.scratch is None:
            d.scratch = d.logits.detach().clone().requires_grad_(True)

        def restore():
            with torch.no_grad():
                d.scratch.copy_(d.logits.detach())

        restore()
        return d.scratch, restore

    def h_fused(self, case, row):

        d = self.get_data(case.work)
        x, restore = self._leaf(d, case.inplace)
        B = d.w.B
        call = lambda: self._call_fused(d, x, 0, B, case.variant, case.mode, case.inplace)  # noqa: E731
        if case.variant is None:
            from kernels import choose_variant

            row["variant_dispatched"] = choose_variant(d.w.V)
        spec = self._spec(d, lambda: call()[1], "fused",
                          held=0 if case.inplace else d.logits_bytes, restore=restore)  # fmt: skip
        if not (case.check or case.batch_invariance):
            return spec  # timed only (its config was tuned and checked by another case)
        if not self.smoke:  # first call: the autotuner picks the config (GPU)
            call()
            if restore:
                restore()
        res, gx = call()
        gx = gx.clone() if case.inplace else gx
        row["timeouts"] = int(res.timeouts) if res.timeouts is not None else None
        row["ran_as"] = ran_as(case.variant or row.get("variant_dispatched"), d.w.V,
                               d.logits.device)  # fmt: skip
        checks = row.setdefault("checks", [])
        if case.check:
            self.fused_checks(row, d, case.mode, gx, res.logp_z, res.logp_y)
            if restore:
                restore()
            res2, gx2 = call()
            checks.append(bitwise("repeatable (bitwise: loss, logp_z, logp_y, grad)",
                                  [(res.loss.detach(), res2.loss.detach()),
                                   (res.logp_z, res2.logp_z), (res.logp_y, res2.logp_y),
                                   (gx, gx2)]))  # fmt: skip
            del res2, gx2
            if not self.smoke:
                checks.append({"check": "no cooperative wait timed out",
                               "ok": not row["timeouts"], "timeouts": row["timeouts"]})  # fmt: skip
        if case.batch_invariance:
            pairs = []
            for b in self.bi_sequences(B):
                one, g1 = self._call_fused(d, d.logits, b, b + 1, case.variant, case.mode, False)
                pairs += [(one.logp_z[0], res.logp_z[b]), (one.logp_y[0], res.logp_y[b])]
                if not case.inplace:
                    pairs.append((g1[0], gx[b]))
            checks.append(bitwise("batch invariant (bitwise: sequence alone vs in the batch)",
                                  pairs))  # fmt: skip
        del res, gx
        return spec

    def _call_fwd(self, d, b0, b1):
        import torch

        from kernels import sequence_logprobs

        full = (b0, b1) == (0, d.w.B)
        lay = d.layout if full else sub_layout(d, b0, b1)
        with torch.no_grad():
            return sequence_logprobs(d.logits[b0:b1].detach(), d.ids[b0:b1], lay,
                                     temperature=d.w.temperature, impl="triton")  # fmt: skip

    def h_fwd(self, case, row):
        d = self.get_data(case.work)
        B = d.w.B
        if not self.smoke:
            self._call_fwd(d, 0, B)
        out = self._call_fwd(d, 0, B)
        tok = out.token_logp.view(B, -1)
        checks = row.setdefault("checks", [])
        if case.check:
            self.token_checks(row, d, tok)
            self._sum_checks(row, d, out.logp_z, out.logp_y)
            out2 = self._call_fwd(d, 0, B)
            checks.append(bitwise("repeatable (bitwise: logp_z, logp_y, token logp)",
                                  [(out.logp_z, out2.logp_z), (out.logp_y, out2.logp_y),
                                   (out.token_logp, out2.token_logp)]))  # fmt: skip
        if case.batch_invariance:
            pairs = []
            for b in self.bi_sequences(B):
                one = self._call_fwd(d, b, b + 1)
                pairs += [(one.logp_z[0], out.logp_z[b]), (one.token_logp, tok[b])]
            checks.append(bitwise("batch invariant (bitwise: sequence alone vs in the batch)",
                                  pairs))  # fmt: skip
        return self._spec(d, lambda: self._call_fwd(d, 0, B), "fwd")

    def _sum_checks(self, row, d, z, y):
        import torch

        from kernels.reference import naive_logp_entropy

        lp = torch.cat([naive_logp_entropy(d.logits[b0:b1].detach(), d.ids[b0:b1],
                                           d.w.temperature)[0]
                        for b0, b1 in self.chunks(d.w.B)])  # fmt: skip
        tol = sum_tol(lp, d.active)
        row["checks"].append(value_check("logp_z vs float64", z, (lp * d.rat).sum(1), tol))
        row["checks"].append(value_check("logp_y vs float64", y, (lp * d.ans).sum(1), tol))

    def _kernel_args(self, d):
        """Prepared launcher arguments: [B, T+1, V] rows, clean ids, span codes, dL/dlogp."""
        import torch

        from kernels.reference import as_rows

        x3 = as_rows(d.logits.detach())
        span = d.layout.span.to(d.logits.device)
        ids = torch.where(d.active.reshape(-1), d.ids.reshape(-1), 0).contiguous()
        seq = torch.arange(d.w.B, device=d.logits.device).repeat_interleave(d.w.T + 1)
        g_tok = torch.where(span != 0, -d.c[seq] / d.norm, 0.0).float().contiguous()
        return x3, ids, span, g_tok

    def h_kernel_fwd(self, case, row):
        from kernels import triton as kt

        d = self.get_data(case.work)
        x3, ids, span, _ = self._kernel_args(d)
        inv = 1.0 / d.w.temperature

        def call():
            return kt.forward_rows(x3, ids, inv, False, span=span, select=kt.SELECT_ACTIVE)[0]

        if not self.smoke:
            call()
        lp = call()
        if case.check:
            self.token_checks(row, d, lp.view(d.w.B, -1))
            row["checks"].append(bitwise("repeatable (bitwise)", [(lp, call())]))
        return self._spec(d, call, "fwd")

    def h_kernel_fused(self, case, row):
        import torch

        from kernels import triton as kt

        d = self.get_data(case.work)
        x3, ids, span, g_tok = self._kernel_args(d)
        out3 = torch.empty_like(x3)
        inv = 1.0 / d.w.temperature

        def call():
            return kt.fused_rows(x3, ids, span, g_tok, inv, False, out3, variant=case.variant)

        if not self.smoke:
            call()
        logp, _, err = call()
        row["timeouts"] = int(err.sum())
        row["ran_as"] = ran_as(case.variant, d.w.V, x3.device)
        if not self.smoke:  # the interpreter runs programs one by one: its waits time out
            row["checks"] = [{"check": "no cooperative wait timed out", "ok": not row["timeouts"],
                              "timeouts": row["timeouts"]}]  # fmt: skip
        if case.check:
            gx = out3.clone()
            self.fused_checks(row, d, "verifier", gx, None, None)
            self.token_checks(row, d, logp.view(d.w.B, -1))
            call()
            row["checks"].append(bitwise("repeatable (bitwise: grad)", [(gx, out3)]))
            del gx
        return self._spec(d, call, "fused")

    def h_same_bits(self, case, row):
        """split and multi with every wait forced to time out (``max_spin=0``: each program
        recomputes its row's partials), split_2pass, and split at a chunk width that makes it
        fall back to split_2pass: bitwise the normal runs' logp and gradient, at a temperature
        != 1 (where FMA contraction would differ between the code paths)."""
        import torch

        from kernels import triton as kt

        d = self.get_data(case.work)
        x3, ids, span, g_tok = self._kernel_args(d)
        inv = 1.0 / case.work.temperature

        def go(variant, **kw):
            out3 = torch.empty_like(x3)
            logp, _, err = kt.fused_rows(x3, ids, span, g_tok, inv, False, out3, variant=variant,
                                         **kw)  # fmt: skip
            return logp, out3, int(err.sum())

        checks = row.setdefault("checks", [])
        timeouts = row.setdefault("timeouts_by_run", {})
        for variant, ref_variant in (("split", "split_2pass"), ("multi", "multi")):
            ref = go(ref_variant)
            for label, kw in (("", {}), (" max_spin=0", {"max_spin": 0})):
                if variant == ref_variant and not kw:
                    continue  # multi against itself: only the forced timeouts
                got = go(variant, **kw)
                name = f"{variant}{label}"
                timeouts[name] = got[2]
                checks.append(bitwise(f"{name} == {ref_variant} (bitwise: logp, grad)",
                                      [(got[0], ref[0]), (got[1], ref[1])]))  # fmt: skip
                if kw:
                    checks.append({"check": f"{name}: waits timed out (the recompute ran)",
                                   "ok": got[2] > 0, "timeouts": got[2]})  # fmt: skip
                del got
            del ref
        bv = case.params.get("fallback_block_v")
        row["ran_as"] = {"split": ran_as("split", d.w.V, x3.device)}
        if bv is not None:
            key = f"split block_v={bv}"
            row["ran_as"][key] = ran_as("split", d.w.V, x3.device, bv)
            got, ref = go("split", block_v=bv), go("split_2pass", block_v=bv)
            checks.append(bitwise(f"{key} ({row['ran_as'][key]}) == split_2pass (bitwise)",
                                  [(got[0], ref[0]), (got[1], ref[1])]))  # fmt: skip
        return None

    def h_sync_debug(self, case, row):
        """Each public entry point once, forward and backward, with the layout and the
        coefficients on the logits' device and (second round) on the CPU, under
        ``torch.cuda.set_sync_debug_mode("error")``: any host synchronisation raises. Warmed
        up first (compiles). On CPU the calls run without the guard (nothing to observe)."""
        import torch

        d = self.get_data(case.work)
        tau = case.work.temperature
        calls = sync_debug_calls(d, tau)
        if self.smoke:  # CI: the paths no other smoke case takes (interpreter calls are slow)
            calls = [c for c in calls if "CPU" in c[0] or c[0] == "token_logprobs"]
        else:
            for _, fn in calls:  # warm-up: compiles, first-call allocations
                fn()
        checks = row.setdefault("checks", [])
        if self.dev != "cuda":
            row["note"] = "CPU: the calls ran; host syncs are only observable on CUDA"
        for name, fn in calls:
            try:
                with sync_guard(self.dev == "cuda"):
                    fn()
                checks.append({"check": f"no host sync: {name}", "ok": True})
            except RuntimeError as e:
                checks.append({"check": f"no host sync: {name}", "ok": False,
                               "error": str(e)[:400]})  # fmt: skip
        if self.dev == "cuda":
            torch.cuda.synchronize()
        return None

    def h_two_pass(self, case, row):
        import torch

        from kernels import sequence_logprobs

        d = self.get_data(case.work)
        x = d.logits

        def call():
            o = sequence_logprobs(x, d.ids, d.layout, temperature=d.w.temperature, impl="triton")
            loss = -(d.c * (o.logp_z + o.logp_y)).sum() / d.norm
            return torch.autograd.grad(loss, x)[0]

        if not self.smoke:
            call()
        gx = call()
        if case.check:
            self.fused_checks(row, d, "verifier", gx, None, None)
            row["checks"].append(bitwise("repeatable (bitwise: grad)", [(gx, call())]))
        del gx
        return self._spec(d, call, "fused", held=d.logits_bytes)

    # --------------------------------------------------------------------------- peers
    def _liger_inputs(self, d):
        T = d.w.T
        return d.ids[:, :T].contiguous(), d.active[:, :T].int().contiguous()

    def h_liger_fwd(self, case, row):
        import torch

        sel = self.liger[0]
        if sel is None:
            row["skipped"] = f"Liger-Kernel: {self.liger[2]}"
            return None
        d = self.get_data(case.work)
        ids, mask = self._liger_inputs(d)
        src = d.logits.detach()

        def call():
            return sel(src, ids, d.w.temperature, mask)

        lp = call()
        if case.check:
            tok = torch.zeros(d.w.B, d.w.T + 1, dtype=lp.dtype, device=lp.device)
            tok[:, : d.w.T] = lp
            self.token_checks(row, d, tok)
        return self._spec(d, call, "fwd")

    def h_liger_grpo(self, case, row):
        import torch

        grpo = self.liger[1]
        if grpo is None:
            row["skipped"] = f"Liger-Kernel: {self.liger[2]}"
            return None
        d = self.get_data(case.work)
        ids, mask = self._liger_inputs(d)
        x, restore = self._leaf(d, case.inplace)

        def call():
            loss = grpo(x, None, None, ids, d.adv, completion_mask=mask,
                        temperature=d.w.temperature, beta=0.0, inplace=case.inplace,
                        loss_type="grpo", reduce=True)[0]  # fmt: skip
            return torch.autograd.grad(loss, x)[0]

        gx = call()
        if case.check:
            # the same gradient as ours: dL/dlogp_t = -adv_b / (n_b B) = -c_b / norm
            self.fused_checks(row, d, "verifier", gx.clone() if case.inplace else gx, None, None)
        del gx
        held = 0 if case.inplace else d.logits_bytes
        return self._spec(d, call, "fused", held=held, restore=restore)

    def _naive(self, d):
        import torch

        T = d.w.T
        ids = d.ids[:, :T].contiguous()
        act = d.active[:, :T]
        coef = (d.c[:, None] * act).float()
        tau = d.w.temperature

        def fwd(z):
            u = z[:, :-1].float() / tau
            return u.log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1) * act

        def loss(z):
            u = z[:, :-1].float() / tau
            lp = u.log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
            return -(lp * coef).sum() / d.norm

        return fwd, loss, torch

    def _peer_fwd(self, case, row, fwd):
        import torch

        d = self.get_data(case.work)
        src = d.logits.detach()

        def call():
            with torch.no_grad():
                return fwd(src)

        lp = call()
        if case.check:
            tok = torch.zeros(d.w.B, d.w.T + 1, dtype=lp.dtype, device=lp.device)
            tok[:, : d.w.T] = lp
            self.token_checks(row, d, tok)
        return self._spec(d, call, "fwd")

    def _peer_fused(self, case, row, loss):
        import torch

        d = self.get_data(case.work)
        x = d.logits

        def call():
            return torch.autograd.grad(loss(x), x)[0]

        gx = call()
        if case.check:
            self.fused_checks(row, d, "verifier", gx, None, None)
        del gx
        return self._spec(d, call, "fused", held=d.logits_bytes)

    def h_naive_fwd(self, case, row):
        fwd, _, _ = self._naive(self.get_data(case.work))
        return self._peer_fwd(case, row, fwd)

    def h_naive_fused(self, case, row):
        _, loss, _ = self._naive(self.get_data(case.work))
        return self._peer_fused(case, row, loss)

    def h_compile_fwd(self, case, row):
        import torch

        fwd, _, _ = self._naive(self.get_data(case.work))
        return self._peer_fwd(case, row, torch.compile(fwd, dynamic=False))

    def h_compile_fused(self, case, row):
        import torch

        _, loss, _ = self._naive(self.get_data(case.work))
        return self._peer_fused(case, row, torch.compile(loss, dynamic=False))

    # --------------------------------------------------------------------------- small shapes
    def h_rows(self, case, row):
        """token_logprobs on a small awkward shape: -inf logit, ids 0 and V-1, temperature 0.9,
        entropy; values vs float64, gradient (logp and entropy weighted) judged as above."""
        import torch

        from kernels import token_logprobs
        from kernels.reference import naive_logp_entropy

        p = case.params
        lead, V, dt = tuple(p["lead"]), p["V"], getattr(torch, p["dtype"])
        g = torch.Generator(device="cpu").manual_seed(V)
        x = (torch.randn(*lead, V, generator=g) * 3).to(dt).to(self.dev)
        x.view(-1, V)[0, 1] = float("-inf")
        ids = torch.randint(0, V, lead, generator=g).to(self.dev)
        ids.view(-1)[0] = V - 1
        ids.view(-1)[-1] = 0
        tau = 0.9
        w = torch.linspace(-1, 1, ids.numel(), device=self.dev).view(lead)

        def ours():
            xr = x.clone().requires_grad_(True)
            lp, h = token_logprobs(xr, ids, temperature=tau, return_entropy=True, impl="triton")
            (gx,) = torch.autograd.grad((lp * w).sum() + 0.3 * h.sum(), xr)
            return lp, h, gx

        def reference(dtype):
            xr = x.detach().to(dtype).requires_grad_(True)
            if dtype == torch.float64:
                lp, h = naive_logp_entropy(xr, ids, tau)
            else:  # plain torch in the logits' dtype
                lsm = (xr / tau).log_softmax(-1)
                lp = lsm.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
                pr = lsm.exp()
                zero = torch.zeros((), dtype=dtype, device=self.dev)
                h = -(pr * torch.where(pr > 0, lsm, zero)).sum(-1)
            (gx,) = torch.autograd.grad((lp.double() * w).sum() + 0.3 * h.double().sum(), xr)
            return lp, h, gx

        lp, h, gx = ours()
        rlp, rh, rg = reference(torch.float64)
        checks = row.setdefault("checks", [])
        tol = 2e-5 * (1 + math.log(V))
        checks.append(value_check("logp vs float64", lp, rlp, tol))
        checks.append(value_check("entropy vs float64", h, rh, 1e-4 * (1 + math.log(V))))
        dtn = _dt_name(dt)
        gs = GradStats(dtn, self.slack, self.mean_factor)
        if dt == torch.float32:
            gs = GradStats(dtn, 64.0, rel_to_max=FP32_REL_TO_MAX)
        if dt == torch.float32:
            gs.add(gx, rg, None)
            checks.append(gs.result("grad vs float64", vs_lowp=False))
        else:
            gs.add(gx, rg, reference(dt)[2])
            checks.append(gs.result("grad vs float64"))
        lp2, h2, gx2 = ours()
        checks.append(bitwise("repeatable (bitwise)", [(lp, lp2), (h, h2), (gx, gx2)]))
        return None

    def h_noncontig(self, case, row):
        import torch

        from kernels import token_logprobs
        from kernels.reference import naive_logp_entropy

        B, T, V = case.params["shape"]
        g = torch.Generator(device="cpu").manual_seed(7)
        base = torch.randn(B, T, 2 * V, generator=g).to(self.dev)
        ids = torch.randint(0, V, (T, B), generator=g).to(self.dev)
        leaf = base.clone().requires_grad_(True)
        lp = token_logprobs(leaf.transpose(0, 1)[:, :, ::2], ids, impl="triton")
        (gx,) = torch.autograd.grad(lp.sum(), leaf)
        xd = base.transpose(0, 1)[:, :, ::2].double().requires_grad_(True)
        rlp, _ = naive_logp_entropy(xd, ids)
        (rg,) = torch.autograd.grad(rlp.sum(), xd)
        checks = row.setdefault("checks", [])
        checks.append(value_check("logp vs float64", lp, rlp, 2e-5 * (1 + math.log(V))))
        gs = GradStats("float32", 64.0, rel_to_max=FP32_REL_TO_MAX)
        gs.add(gx.transpose(0, 1)[:, :, ::2], rg, None)
        checks.append(gs.result("grad vs float64", vs_lowp=False))
        odd = gx.transpose(0, 1)[:, :, 1::2]
        checks.append({"check": "grad zero off the view", "ok": bool((odd == 0).all())})
        return None

    def h_long(self, case, row):
        import torch

        from kernels import TokenLayout, fused_sequence_loss, sequence_logprobs
        from kernels.reference import naive_logp_entropy

        T, V = case.params["T"], case.params["V"]
        g = torch.Generator(device="cpu").manual_seed(3)
        x = (torch.randn(1, T, V, generator=g) * 2).to(torch.bfloat16).to(self.dev)
        ids = torch.randint(0, V, (1, T), generator=g).to(self.dev)
        n_ans = min(50, T // 2)
        rat = torch.ones(1, T, dtype=torch.bool, device=self.dev)
        rat[0, -n_ans:] = False
        ans = ~rat
        lay = TokenLayout.from_masks(rat, ans)
        o = sequence_logprobs(x, ids, lay, impl="triton")
        rlp, _ = naive_logp_entropy(x, ids)
        rz, ry = (rlp * rat).sum(1), (rlp * ans).sum(1)
        # an fp32 sum of ~70k log-probs (|sum| ~ 6e5, one fp32 ulp = 0.06) is off by ~0.2:
        # 3e-6 relative is ~10x that, and still catches one dropped token (~9)
        tol = 3e-6 * float(rz.abs().max()) + 1e-3
        checks = row.setdefault("checks", [])
        checks.append(value_check("sequence_logprobs logp_z", o.logp_z, rz, tol))
        checks.append(value_check("sequence_logprobs logp_y", o.logp_y, ry, 1e-3))
        one = torch.ones(1, device=self.dev)
        xr = x.clone().requires_grad_(True)
        res = fused_sequence_loss(xr, ids, lay, (one, one), impl="triton")
        (gx,) = torch.autograd.grad(res.loss, xr)
        checks.append(value_check("fused logp_z", res.logp_z, rz, tol))
        xd = x.double().requires_grad_(True)
        lpd, _ = naive_logp_entropy(xd, ids)
        (rg,) = torch.autograd.grad(-((lpd * rat).sum() + (lpd * ans).sum()), xd)
        gs = GradStats("bfloat16", self.slack + 0.5)
        gs.add(gx, rg, None)
        checks.append(gs.result("fused grad vs float64 (bf16 rounding)", vs_lowp=False))
        return None

    # --------------------------------------------------------------------------- summary
    def ratios(self):
        """Fill each timed row's ratio to Liger (same V, same pass, same in-place-ness) and its
        fraction of the copy bandwidth measured in this run."""
        if self.smoke:
            return
        by = {}
        for r in self.results["cases"]:
            if "timing" in r and (r.get("peer") or r.get("status") == "ok"):
                by.setdefault((r["kind"], r.get("V"), bool(r.get("inplace"))), r["timing"])
        for r in self.results["cases"]:
            t = r.get("timing")
            if not t:
                continue
            V = r.get("V")
            if r["kind"] in ("fwd", "kernel_fwd", "liger_fwd", "naive_fwd", "compile_fwd"):
                lig = by.get(("liger_fwd", V, False))
            else:
                lig = by.get(("liger_grpo", V, bool(r.get("inplace"))))
            if lig and r["kind"] != "copy":
                t["ratio_to_liger"] = t["ms"] / lig["ms"]
            cp = by.get(("copy", V, False))
            if cp and r["kind"] != "copy":
                t["frac_of_copy_bandwidth"] = t["GBps_vs_floor"] / cp["GBps_vs_floor"]

    def goals(self):
        goals = []
        cases = self.results["cases"]

        def ms(kind, V, inplace=False, variant="any", ok_only=True):
            out = []
            for r in cases:
                if r["kind"] != kind or r.get("V") != V or bool(r.get("inplace")) != inplace:
                    continue
                if kind == "fused" and r.get("mode") != "verifier":
                    continue
                if variant != "any" and r.get("variant") != variant:
                    continue
                if "timing" not in r or (ok_only and r.get("status") != "ok"):
                    continue
                out.append((r["timing"]["ms"], r))
            return out

        measured = not self.smoke
        for w in PROFILES["gpu"].timing:
            V = w.V
            ours = ms("fwd", V)
            lig = ms("liger_fwd", V, ok_only=False)
            goals.append(_goal(f"V={V} forward: ours sequence_logprobs / Liger "
                               "fused_selective_log_softmax", GOAL_FWD,
                               ours[0][0] / lig[0][0] if ours and lig and measured else None,
                               ""))  # fmt: skip
            best = sorted([m for m in ms("fused", V) if m[1].get("variant") is not None],
                          key=lambda m: m[0])  # fmt: skip
            ligs = ms("liger_grpo", V, ok_only=False) + ms("liger_grpo", V, True, ok_only=False)
            lig_best = min(ligs, key=lambda m: m[0]) if ligs else None
            target = GOAL_FUSED[V]
            detail = ""
            val = None
            if best and lig_best and measured:
                val = best[0][0] / lig_best[0]
                dflt = ms("fused", V, variant=None)
                detail = (f"best variant {best[0][1]['variant']} {best[0][0]:.3f} ms vs Liger "
                          f"(inplace={lig_best[1]['inplace']}) {lig_best[0]:.3f} ms")  # fmt: skip
                if dflt and dflt[0][1].get("variant_dispatched"):
                    detail += (f"; default ({dflt[0][1]['variant_dispatched']}) "
                               f"{dflt[0][0] / lig_best[0]:.3f}x")
            goals.append(_goal(f"V={V} forward+backward: best ours fused (out of place) / "
                               "Liger triton_grpo_loss (its faster mode)", target, val, detail))
            ip = sorted(ms("fused", V, True), key=lambda m: m[0])
            lip = ms("liger_grpo", V, True, ok_only=False)
            if ip and lip and measured:
                goals.append(_goal(f"V={V} forward+backward in place: best ours / Liger "
                                   "inplace=True", target, ip[0][0] / lip[0][0],
                                   f"variant {ip[0][1]['variant']}"))  # fmt: skip
            extras = [(r["timing"].get("peak_extra_frac_of_logits"), r["variant"])
                      for _, r in ms("fused", V) if r.get("variant") is not None]  # fmt: skip
            extras = [e for e in extras if e[0] is not None]
            worst = max(extras, key=lambda e: e[0]) if extras else None
            goals.append(_goal(f"V={V} peak extra memory of every ours fused variant "
                               "(fraction of the logits)", GOAL_EXTRA_MEM,
                               worst[0] if worst and measured else None,
                               f"worst: {worst[1]}" if worst else ""))  # fmt: skip
        self.results["goals"] = goals
        return goals


def _goal(name, target, value, detail):
    if value is None:
        status = "not measured"
    else:
        status = "met" if value <= target else "missed"
    return {"goal": name, "target": f"<= {target}", "value": value, "status": status,
            "detail": detail}  # fmt: skip


def progress_line(r) -> str:
    s = f"{r['name']}: {r['status'].upper()}"
    if r["status"] == "error":
        return s + f" {r['error']}"
    if r["status"] == "skipped":
        return s + f" ({r.get('why')})"
    bad = [c["check"] for c in r.get("checks", []) if not c["ok"]]
    if r.get("checks"):
        s += f" [{len(r['checks']) - len(bad)}/{len(r['checks'])} checks]"
    if bad:
        s += " FAILED: " + "; ".join(bad)
    t = r.get("timing")
    if t:
        s += f"  {t['ms']:.3f} ms  {t['GBps_vs_floor']:.0f} GB/s vs floor"
        if t.get("peak_extra_bytes") is not None:
            s += f"  extra {t['peak_extra_frac_of_logits']:.4f} of logits"
    return s + f"  ({r.get('wall_s', 0):.1f} s)"


def tuned_configs() -> dict:
    """``{"kernel key": "config"}`` of every Triton autotuner under ``kernels.triton`` (the
    configs chosen so far)."""
    out = {}
    try:
        from triton.runtime.autotuner import Autotuner
    except Exception:  # pragma: no cover
        return out
    for name, mod in list(sys.modules.items()):
        if not (name == "kernels.triton" or name.startswith("kernels.triton.")) or mod is None:
            continue
        for attr in list(vars(mod).values()):
            cands = []
            if isinstance(attr, Autotuner):
                cands = [attr]
            elif isinstance(attr, (list, tuple)):
                cands = [a for a in attr if isinstance(a, Autotuner)]
            elif isinstance(attr, dict):
                cands = [a for a in attr.values() if isinstance(a, Autotuner)]
            for a in cands:
                fn = getattr(getattr(a, "fn", None), "__name__", "kernel")
                for key, cfg in dict(getattr(a, "cache", {}) or {}).items():
                    out[f"{name}.{fn} {key}"] = str(cfg)
    return out


def _clean(o):
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


# ------------------------------------------------------------------------------- helpers
def ran_as(variant, V, device, block_v=None):
    """The variant the launcher actually runs: ``split`` runs as ``split_2pass`` when a row
    may have more chunks than the GPU has SMs (``kernels.triton.split_falls_back``)."""
    if variant != "split":
        return variant
    import torch

    from kernels import triton as kt

    dev = torch.device(device)
    n_sm = None
    if dev.type == "cuda":
        n_sm = torch.cuda.get_device_properties(dev).multi_processor_count
    return "split_2pass" if kt.split_falls_back(V, n_sm, block_v) else "split"


class sync_guard:  # noqa: N801 (a context manager used as a function)
    """``torch.cuda.set_sync_debug_mode("error")`` inside, the previous mode restored after;
    a no-op when ``on`` is False (CPU)."""

    def __init__(self, on: bool):
        self.on, self.prev = on, None

    def __enter__(self):
        if self.on:
            import torch

            self.prev = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("error")
        return self

    def __exit__(self, *exc):
        if self.on:
            import torch

            torch.cuda.set_sync_debug_mode(self.prev)
        return False


def sync_debug_calls(d, tau) -> list:
    """``(name, fn)``: every public entry point of ``kernels`` on workload ``d`` at temperature
    ``tau``, forward and backward, with the layout and coefficients on the logits' device, then
    on the CPU (moved without a sync: ``non_blocking``). Each ``fn`` builds fresh leaves."""
    from kernels import (
        FUSED_VARIANTS,
        TokenLayout,
        fused_sequence_loss,
        sequence_logprobs,
        token_logprobs,
    )

    dev = d.logits.device
    cpu_layout = TokenLayout(cu_seqlens=d.layout.cu_seqlens.cpu(), span=d.layout.span.cpu())
    on_dev = TokenLayout(cu_seqlens=d.layout.cu_seqlens.to(dev), span=d.layout.span.to(dev))
    c_dev, c_cpu = d.c.to(dev), d.c.cpu()
    base = d.logits.detach()

    def leaf():
        return base.clone().requires_grad_(True)

    def tok():
        x = leaf()
        lp = token_logprobs(x, d.ids, temperature=tau, impl="triton")
        lp.sum().backward()

    def seq(lay, c):
        def fn():
            x = leaf()
            o = sequence_logprobs(x, d.ids, lay, temperature=tau, impl="triton")
            (-(c.to(dev) * (o.logp_z + o.logp_y)).sum()).backward()
        return fn

    def fused(lay, c, variant, inplace=False):
        def fn():
            x = leaf()
            res = fused_sequence_loss(x, d.ids, lay, (c, c), normalizer=d.norm, temperature=tau,
                                      impl="triton", variant=variant, inplace_grad=inplace)
            res.loss.backward()
        return fn

    calls = [("token_logprobs", tok), ("sequence_logprobs", seq(on_dev, c_dev)),
             ("sequence_logprobs, CPU layout", seq(cpu_layout, c_dev))]  # fmt: skip
    for v in (None, *FUSED_VARIANTS):
        calls.append((f"fused_sequence_loss variant={v}", fused(on_dev, c_dev, v)))
    calls.append(("fused_sequence_loss in place", fused(on_dev, c_dev, None, True)))
    calls.append(("fused_sequence_loss, CPU layout and coefficients",
                  fused(cpu_layout, c_cpu, None)))  # fmt: skip
    return calls


# ------------------------------------------------------------------------------- dispatch
#: a measured variant replaces the dispatch table's current choice at a vocabulary only when it
#: is faster by more than this fraction (run-to-run noise of a timed case is a few per cent)
NOISE_MARGIN = 0.03


class DispatchNotReady(ValueError):
    """The result file cannot set the dispatch table (``--force`` overrides)."""


def _dispatch_rows(results: dict):
    """The rows that compete for the dispatch table: fused cases with a named variant, verifier
    mode, out of place, public API (whatever their status)."""
    for r in results.get("cases", []):
        if (r.get("kind") == "fused" and r.get("variant") is not None and not r.get("inplace")
                and r.get("mode") == "verifier" and r.get("V") is not None):
            yield r  # fmt: skip


def _timed_ok(r) -> bool:
    return r.get("status") == "ok" and "timing" in r and r["timing"].get("ms") is not None


def dispatch_problems(results: dict, variants=None) -> list:
    """Why ``results`` cannot set the dispatch table: one line per vocabulary and variant of
    ``variants`` (default every ``kernels.dispatch.FUSED_VARIANTS``) without a passing, timed
    case (skipped by the deadline, failed, errored, absent). Empty when the run is complete."""
    if variants is None:
        from kernels.dispatch import FUSED_VARIANTS as variants
    rows = list(_dispatch_rows(results))
    Vs = sorted({int(r["V"]) for r in rows})
    if not Vs:
        return ["no fused verifier-mode out-of-place case in the result file"]
    problems = []
    for V in Vs:
        for v in variants:
            mine = [r for r in rows if int(r["V"]) == V and r["variant"] == v]
            if not any(_timed_ok(r) for r in mine):
                why = ", ".join(sorted({str(r.get("status")) for r in mine})) or "absent"
                problems.append(f"V={V} {v}: {why}")
    return problems


def best_variants(results: dict, prefer=None, margin: float = 0.0) -> dict:
    """``{V: (variant, ms, runner_up)}``: per vocabulary, the fastest fused variant (verifier
    mode, out of place, public API) among those whose every check passed and that were timed,
    from a result JSON's cases; ``runner_up`` is ``(variant, ms / best ms)`` of the second
    fastest, or None.

    ``prefer(V)``: the variant currently chosen at V (the table being replaced). It is kept
    unless the fastest is faster by more than ``margin`` (its time ``> best * (1 + margin)``),
    so that run-to-run noise does not flip the table.
    """
    timed: dict = {}
    for r in _dispatch_rows(results):
        if not _timed_ok(r):
            continue
        V, ms = int(r["V"]), float(r["timing"]["ms"])
        cur = timed.setdefault(V, {})
        cur[r["variant"]] = min(ms, cur.get(r["variant"], math.inf))
    best: dict = {}
    for V, by in timed.items():
        order = sorted(by.items(), key=lambda kv: (kv[1], kv[0]))
        win, ms = order[0]
        if prefer is not None:
            p = prefer(V)
            if p in by and p != win and by[p] <= ms * (1 + margin):
                win, ms = p, by[p]
        rest = [(v, t) for v, t in order if v != win]
        best[V] = (win, ms, (rest[0][0], rest[0][1] / ms) if rest else None)
    return best


def dispatch_table(best: dict) -> tuple:
    """The ``kernels.dispatch.TABLE`` literal encoding ``best``: between two measured
    vocabularies whose best variants differ, the boundary is their geometric mean (rounded
    down), i.e. the nearer measurement in log V decides; above the last, its variant."""
    Vs = sorted(best)
    if not Vs:
        raise ValueError("no measured fused variant passed its checks: nothing to dispatch on")
    rows = []
    for lo, hi in zip(Vs, Vs[1:], strict=False):
        if best[lo][0] != best[hi][0]:
            rows.append((int(math.sqrt(lo * hi)), best[lo][0]))
    rows.append((None, best[Vs[-1]][0]))
    merged = []
    for r in rows:  # drop rows whose successor names the same variant
        if merged and merged[-1][1] == r[1]:
            merged[-1] = r
        else:
            merged.append(r)
    return tuple(merged)


def _provenance(result_path, meta, best, forced) -> str:
    """``PROVENANCE``: the result file, GPU, commit, date, and per V the winner, its time and
    the runner-up's time ratio (how clear the choice was)."""
    per_v = []
    for V, (v, ms, ru) in sorted(best.items()):
        s = f"{V}: {v} {ms:.3f} ms"
        if ru is not None:
            noise = ", within noise" if ru[1] <= 1 + NOISE_MARGIN else ""
            s += f" (runner-up {ru[0]} x{ru[1]:.3f}{noise})"
        per_v.append(s)
    prov = (f"measured: {os.path.basename(result_path)} ({meta.get('gpu')}, commit "
            f"{meta.get('commit')}, {meta.get('date_utc')}); best per V (kept the previous "
            f"choice unless beaten by > {NOISE_MARGIN:.0%}): " + ", ".join(per_v))
    if forced:
        prov += "; FORCED over incomplete results: " + "; ".join(forced)
    return prov


def _chunks(text: str, width: int) -> list:
    """``text`` cut after spaces into pieces of at most ``width`` characters (a longer word is
    its own piece); joined they give ``text`` back."""
    out, cur = [], ""
    for w in text.split(" "):
        piece = w if not out and not cur else " " + w
        if cur and len(cur) + len(piece) > width:
            out.append(cur)
            cur = piece
        else:
            cur += piece
    return [*out, cur]


def _status_text(result_path, meta, forced) -> str:
    """The docstring paragraph that replaces ``Status: UNMEASURED ...`` (wrapped at 96)."""
    words = (f"Status: MEASURED on {meta.get('gpu')} ({meta.get('date_utc')}, commit "
             f"{meta.get('commit')}) by ``benchmarks/gpu_bench.py --write-dispatch "
             f"{os.path.basename(result_path)}``"
             + (" with --force over incomplete results" if forced else "")
             + ": the table below is that run's fastest checked variant per vocabulary; "
             "``PROVENANCE`` gives the times and runner-up ratios.").split()
    lines, cur = [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > 96:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}" if cur else w
    return "\n".join([*lines, cur]) + "\n"


def write_dispatch(result_path: str, dispatch_path: str, force: bool = False) -> str:
    """Rewrite ``TABLE``, ``MEASURED``, ``PROVENANCE`` and the docstring's ``Status:`` paragraph
    in ``dispatch_path`` from the measured result file ``result_path`` (only checked, timed,
    out-of-place verifier-mode variants count). Returns the new TABLE literal. The rest of the
    file is kept byte for byte.

    Raises :class:`DispatchNotReady` unless every fused variant passed its checks and was timed
    at every measured vocabulary (a deadline-cut or partial run would crown the best of whatever
    ran); ``force`` writes anyway and says so in ``PROVENANCE`` and the status text. A variant
    replaces the file's current choice at V only when faster by more than ``NOISE_MARGIN``.
    """
    with open(result_path) as f:
        results = json.load(f)
    if results.get("meta", {}).get("smoke"):
        raise ValueError(f"{result_path} is a --smoke run (CPU interpreter): not a measurement")
    problems = dispatch_problems(results)
    if problems and not force:
        raise DispatchNotReady(
            f"{result_path} does not measure every fused variant at every vocabulary "
            f"({len(problems)} missing: " + "; ".join(problems) + "); rerun the full bench "
            "(or pass --force to write the table from what ran)"
        )
    with open(dispatch_path) as f:
        src = f.read()
    current = _table_in(src, dispatch_path)
    from kernels.dispatch import choose_variant

    best = best_variants(results, prefer=lambda V: choose_variant(V, current),
                         margin=NOISE_MARGIN)  # fmt: skip
    table = dispatch_table(best)
    meta = results.get("meta", {})
    prov = _provenance(result_path, meta, best, problems if force else [])
    with open(dispatch_path) as f:
        src = f.read()
    tree = ast.parse(src)
    lines = src.splitlines(keepends=True)
    repl = {
        "TABLE": f"TABLE: tuple[tuple[int | None, str], ...] = {table!r}\n",
        "MEASURED": "MEASURED = True\n",
        "PROVENANCE": "PROVENANCE = (\n" + "".join(f"    {c!r}\n" for c in _chunks(prov, 88))
        + ")\n",
    }
    spans = []
    for node in tree.body:
        tgt = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            tgt = node.targets[0]
        elif isinstance(node, ast.AnnAssign):
            tgt = node.target
        if isinstance(tgt, ast.Name) and tgt.id in repl:
            spans.append((node.lineno - 1, node.end_lineno, tgt.id))
    missing = set(repl) - {s[2] for s in spans}
    if missing:
        raise ValueError(f"{dispatch_path} has no top-level assignment of {sorted(missing)}")
    doc = tree.body[0] if tree.body and isinstance(tree.body[0], ast.Expr) else None
    status = None
    if doc is not None and isinstance(getattr(doc, "value", None), ast.Constant):
        for i in range(doc.lineno - 1, doc.end_lineno):
            if lines[i].lstrip().startswith("Status:"):
                # the paragraph runs to the next blank line or the docstring's last line
                end = i + 1
                while end < doc.end_lineno - 1 and lines[end].strip():
                    end += 1
                status = (i, end)
                break
    if status is None:
        raise ValueError(f"{dispatch_path}: no 'Status:' paragraph in the module docstring")
    spans.append((*status, "STATUS"))
    repl["STATUS"] = _status_text(result_path, meta, problems if force else [])
    for a, b, name in sorted(spans, reverse=True):
        lines[a:b] = [repl[name]]
    with open(dispatch_path, "w") as f:
        f.write("".join(lines))
    return repr(table)


def _table_in(src: str, path: str):
    """The ``TABLE`` literal assigned at the top level of a dispatch module's source."""
    for node in ast.parse(src).body:
        tgt = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(tgt, ast.Name) and tgt.id == "TABLE" and node.value is not None:
            return ast.literal_eval(node.value)
    raise ValueError(f"{path} has no top-level TABLE")


# ------------------------------------------------------------------------------- main
def environment(dev, args, variants) -> dict:
    import torch

    m = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": args.commit,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "smoke": bool(args.smoke),
        "device": dev,
        "argv": sys.argv[1:],
        "deadline_s": args.deadline_s,
        "variants": list(variants),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("TSALLIS_", "TRITON_"))},
    }
    try:
        import triton

        m["triton"] = triton.__version__
    except Exception as e:  # pragma: no cover
        m["triton"] = f"unavailable: {e}"
    if dev == "cuda":
        p = torch.cuda.get_device_properties(0)
        m.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=round(p.total_memory / 2**30, 1),
                 sm_count=p.multi_processor_count, cuda=torch.version.cuda)  # fmt: skip
    else:
        m["gpu"] = "cpu-interpreter"
    try:
        from kernels import dispatch

        m["dispatch_at_run"] = {"TABLE": repr(dispatch.TABLE), "MEASURED": dispatch.MEASURED}
    except Exception as e:  # pragma: no cover
        m["dispatch_at_run"] = f"unavailable: {e}"
    return m


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="gpu_bench.py",
        description="Correctness and timings of the fused log-prob kernels against Liger-Kernel, "
        "naive torch and torch.compile, in one run (GPU), or --smoke (CPU, Triton interpreter).",
    )
    ap.add_argument("--out", help="folder for the result JSON (required unless --list or "
                    "--write-dispatch)")  # fmt: skip
    ap.add_argument("--commit", default=os.environ.get("GIT_COMMIT"),
                    help="commit being measured (default: env GIT_COMMIT; one is required)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny shapes on CPU under TRITON_INTERPRET=1 (CI)")
    ap.add_argument("--deadline-s", type=float, default=None,
                    help=f"skip every case that would end after this many seconds (GPU default "
                    f"{DEFAULT_DEADLINE_S:.0f}; none in smoke)")  # fmt: skip
    ap.add_argument("--only", default=None, help="regex: run only the cases whose name matches")
    ap.add_argument("--list", action="store_true", help="print the case table and budget, exit")
    ap.add_argument("--whl", default=os.path.join(ROOT, ".whl"),
                    help="folder holding the liger_kernel wheel (default .whl/)")
    ap.add_argument("--no-liger", action="store_true", help="do not load Liger-Kernel")
    ap.add_argument("--write-dispatch", metavar="RESULT_JSON", default=None,
                    help="rewrite kernels/dispatch.py's TABLE from a GPU result file, exit")
    ap.add_argument("--dispatch-file", default=os.path.join(ROOT, "kernels", "dispatch.py"))
    ap.add_argument("--force", action="store_true",
                    help="--write-dispatch even if some variant was not measured at every V")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.write_dispatch:
        try:
            table = write_dispatch(args.write_dispatch, args.dispatch_file, force=args.force)
        except DispatchNotReady as e:
            print(f"gpu_bench.py --write-dispatch: refused: {e}", file=sys.stderr)
            return 2
        print(f"wrote TABLE = {table} into {args.dispatch_file}")
        return 0
    if not args.list and not args.out:
        print("gpu_bench.py: --out FOLDER is required (on the GPU machine: --out $OUT)",
              file=sys.stderr)  # fmt: skip
        return 2
    if not args.list and not args.commit:
        print("gpu_bench.py: pass the commit being measured: --commit SHA or env GIT_COMMIT=SHA "
              "(the GPU machine's copy of the tree has no .git)", file=sys.stderr)  # fmt: skip
        return 2
    import kernels

    variants = tuple(kernels.FUSED_VARIANTS)
    profile = PROFILES["smoke" if args.smoke else "gpu"]
    cases = build_cases(profile, variants, kernels.choose_variant)
    if args.only:
        cases = [c for c in cases if re.search(args.only, c.name)]
    if args.list:
        print("\n".join(budget_lines(cases)))
        return 0
    import torch

    dev = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if dev == "cpu" and not args.smoke:
        print("gpu_bench.py: no CUDA device; use --smoke for the CPU interpreter run",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.smoke and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        print("gpu_bench.py: --smoke needs TRITON_INTERPRET=1 set before triton is imported",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.deadline_s is None and not args.smoke:
        args.deadline_s = DEFAULT_DEADLINE_S
    r = Runner(args, dev)
    r.chunk = 1  # the oracle runs sequence by sequence (float64 copies of one sequence only)
    r.results["meta"] = environment(dev, args, variants)
    r.liger = (None, None, "disabled (--no-liger)") if args.no_liger else find_liger(args.whl)
    r.results["meta"]["liger"] = r.liger[2]
    r.results["meta"]["timing_workloads"] = [vars(w) for w in profile.timing]
    r.results["meta"]["budget_est_s"] = sum(c.est_s for c in cases)
    m = r.results["meta"]
    os.makedirs(args.out, exist_ok=True)
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", str(m.get("gpu"))).strip("-").lower()
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    commit = re.sub(r"[^A-Za-z0-9]+", "", str(args.commit))[:10] or "unknown"
    r.out_path = os.path.join(args.out, f"{gpu}-{stamp}-{commit}.json")
    r.log(f"{m.get('gpu')} | torch {m['torch']} | triton {m.get('triton')} | liger "
          f"{m['liger']} | commit {args.commit} | variants {', '.join(variants)} | "
          f"{len(cases)} cases, est {m['budget_est_s']:.0f} s, deadline {args.deadline_s} s")
    r.save()
    torch.manual_seed(0)
    for i, case in enumerate(cases, 1):
        r.run_case(i, len(cases), case)
        if dev == "cuda" and case.work is not None:
            nxt = cases[i] if i < len(cases) else None
            keep = {c.work.key for c in cases[i:] if c.work is not None} if nxt else set()
            for k in [k for k in r.data if k not in keep]:
                del r.data[k]  # a workload no later case needs
    r.results["meta"]["tuned_configs_final"] = tuned_configs()
    r.ratios()
    goals = r.goals()
    best = best_variants(r.results) if not args.smoke else {}
    if best:
        r.results["dispatch"] = {"best": {str(V): v for V, v in best.items()},
                                 "TABLE": repr(dispatch_table(best))}  # fmt: skip
    r.save()
    print_summary(r.results, goals)
    print(f"\nwrote {r.out_path}")
    ours_bad = [c for c in r.results["cases"] if not c["peer"] and c["status"] in ("fail", "error")]
    return 1 if ours_bad else 0


def print_summary(results, goals):
    cases = results["cases"]
    print("\n=== cases ===")
    counts: dict = {}
    for c in cases:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    print(", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    for c in cases:
        if c["status"] in ("fail", "error"):
            print(f"  {c['status'].upper():5s} {'(peer) ' if c['peer'] else ''}{c['name']}: "
                  + (c.get("error") or "; ".join(x["check"] for x in c["checks"] if not x["ok"])))
    print("\n=== timings (median ms; GB/s against the byte floor; ratio to Liger in this run; "
          "peak extra memory / logits) ===")
    print(f"{'case':58s} {'ms':>9s} {'GB/s':>7s} {'xLiger':>7s} {'extra':>8s} status")
    for c in cases:
        t = c.get("timing")
        if not t:
            continue
        rl = t.get("ratio_to_liger")
        ex = t.get("peak_extra_frac_of_logits")
        print(f"{c['name'][:58]:58s} {t['ms']:9.3f} {t['GBps_vs_floor']:7.0f} "
              f"{'-' if rl is None else f'{rl:.3f}':>7s} {'-' if ex is None else f'{ex:.4f}':>8s}"
              f" {c['status']}")  # fmt: skip
    print("\n=== goals (ratios against Liger in this run) ===")
    for g in goals:
        v = "-" if g["value"] is None else f"{g['value']:.3f}"
        print(f"  {g['status'].upper():12s} {v:>7s} {g['target']:>7s}  {g['goal']}"
              + (f"  [{g['detail']}]" if g["detail"] else ""))
    d = results.get("dispatch") or {}
    if d.get("TABLE"):
        print("\n=== dispatch (fastest checked variant per V; paste into kernels/dispatch.py or "
              "run --write-dispatch RESULT_JSON) ===")
        print(f"  best: {d['best']}")
        print(f"  TABLE: tuple[tuple[int | None, str], ...] = {d['TABLE']}")
    if results["errors"]:
        print(f"\n{len(results['errors'])} errors (see the JSON)")


__all__ = ["KINDS", "NOISE_MARGIN", "DispatchNotReady", "GradStats", "best_variants",
           "dispatch_problems", "dispatch_table", "main", "ulp", "write_dispatch"]  # fmt: skip
