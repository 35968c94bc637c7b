"""CPU benchmark: the J_Q loss from hidden states against its peers, side by side in one run.

Run with ``pytest benchmarks/test_linear_bench.py -s`` (``pytest`` alone does not collect
``benchmarks/``); ``LINEAR_BENCH_JSON=path.json`` also writes the report there, and
``LINEAR_BENCH_SHAPE=N,H,V`` overrides the shape (for a quick look; the committed numbers use
the default).

Shape: N = 2048 scored tokens (B = 4 sequences x T = 512), H = 896, V = 151936, fp32 (a
Qwen2.5-0.5B-sized head). Every implementation computes the same thing: per-token log-probs of
``hidden @ weight.T``, the loss ``-sum_b c_b * sum_t logp_bt`` (per-sequence coefficients,
verifier mode) and its gradient with respect to ``hidden`` and ``weight``:

- ``ours``: :func:`kernels.fused_linear_sequence_loss` (``impl="torch"``, default chunking);
- ``logits_path``: materialised logits ``hidden @ weight.T`` (autograd) fed to
  :func:`tsallis.tsallis_logits_loss`'s kernel, :func:`kernels.fused_sequence_loss` (fused
  torch path); separately, that fused loss on fixed logits is timed with an upstream gradient
  of 1 and of 0.5 (``loss * 0.5`` costs one more pass over the ``[N, V]`` gradient);
- ``naive``: ``(hidden @ weight.T).log_softmax(-1).gather(...)`` with autograd;
- ``trl_chunked``: TRL's ``ChunkedLogProbFunction`` (torch tiles of 4096 tokens x 32768
  vocabulary on CPU), the head of TRL's ``GRPOTrainer``;
- ``liger``: Liger-Kernel's ``LigerFusedLinearGRPOLoss`` (beta 0, on-policy, ``loss_type
  ="grpo"``, not compiled), when importable (``LIGER_PATH`` may point at an unpacked wheel).

Time: one call per implementation (no compilation or autotuning on CPU to warm up), the same
call whose memory is profiled and whose gradient is checked against ours (``LINEAR_BENCH_REPS
=k`` times the median of k more calls instead), one intra-op thread (reproducible on a shared
machine). Peak extra memory: the largest CPU allocation total seen by the PyTorch profiler
while one step runs, minus the bytes of the returned gradients (d hidden + d weight, which
every implementation must return) - i.e. the working memory of the head.
Goals (issue 14): ours <= 1/8 of the logits path's and <= TRL's peak extra memory; ours time
<= 1.0x TRL's.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import pytest
import torch

from kernels import TokenLayout, fused_linear_sequence_loss, fused_sequence_loss

SHAPE = tuple(int(v) for v in os.environ.get("LINEAR_BENCH_SHAPE", "2048,896,151936").split(","))
N, H, V = SHAPE
B = 4
T = N // B
REPS = int(os.environ.get("LINEAR_BENCH_REPS", "0"))


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    # leaves made once, outside every measured step (torch.autograd.grad never accumulates)
    hidden = (torch.randn(N, H, generator=g) * 0.5).requires_grad_(True)
    weight = (torch.randn(V, H, generator=g) * (1.0 / H**0.5)).requires_grad_(True)
    ids = torch.randint(0, V, (N,), generator=g)
    coef = torch.linspace(-1.0, 1.0, B)
    lay = TokenLayout.from_masks(torch.ones(B, T, dtype=torch.bool))
    return hidden, weight, ids, coef, lay


def _leaves(hidden, weight):
    return hidden, weight


def _grads(loss, h, w):
    return torch.autograd.grad(loss, (h, w))


def step_ours(hidden, weight, ids, coef, lay):
    h, w = _leaves(hidden, weight)
    out = fused_linear_sequence_loss(h, w, ids, lay, (coef, coef), impl="torch")
    return _grads(out.loss, h, w)


def step_logits(hidden, weight, ids, coef, lay):
    h, w = _leaves(hidden, weight)
    logits = h @ w.T
    out = fused_sequence_loss(logits, ids, lay, (coef, coef), impl="torch")
    return _grads(out.loss, h, w)


def _per_token(coef, hidden):
    return coef.repeat_interleave(hidden.shape[0] // B)


def step_naive(hidden, weight, ids, coef, lay):
    h, w = _leaves(hidden, weight)
    lp = (h @ w.T).log_softmax(-1).gather(-1, ids[:, None]).squeeze(-1)
    return _grads(-(_per_token(coef, h) * lp).sum(), h, w)


def step_trl(hidden, weight, ids, coef, lay):
    from trl.kernels import ChunkedLogProbFunction

    h, w = _leaves(hidden, weight)
    lp = ChunkedLogProbFunction.apply(h, w, None, ids, 1.0, 32768, None, 1.0, ())[0]
    return _grads(-(_per_token(coef, h) * lp).sum(), h, w)


def _liger():
    path = os.environ.get("LIGER_PATH")
    if path and path not in sys.path:
        sys.path.insert(0, path)
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss
    except Exception as e:  # noqa: BLE001 - report whatever stops it
        return None, f"{type(e).__name__}: {e}"
    return LigerFusedLinearGRPOLoss(beta=0.0, compiled=False, use_ref_model=False,
                                    loss_type="grpo"), None  # fmt: skip


def step_liger(hidden, weight, ids, coef, lay, loss_fn):
    h, w = _leaves(hidden, weight)
    t = h.shape[0] // B
    # its "grpo" loss averages tokens per sequence and sequences per batch: advantages of
    # coef * B * T give the same loss and gradient as the others
    out = loss_fn(h.view(B, t, h.shape[1]), w, ids.view(B, t), torch.ones(B, t), coef * (B * t))
    loss = out[0] if isinstance(out, tuple) else out
    return _grads(loss, h, w)


def peak_bytes(fn) -> tuple[int, float]:
    """Peak bytes allocated (CPU) while ``fn`` runs, from the profiler's allocator events, and
    the wall time of that call (a few hundred large ops: the profiler's cost is negligible)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
        del out
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    return max(totals, default=0), seconds


def median_s(fn, reps=REPS) -> float:
    """Median wall time of ``reps`` calls (the caller has warmed ``fn`` up)."""
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _meta():
    def run(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:  # noqa: BLE001
            return None

    import trl

    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": run("git", "rev-parse", "HEAD"),
        "dirty": bool(run("git", "status", "--porcelain", "--untracked-files=no")),
        "machine": platform.machine(),
        "cpu": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                     if ln.startswith("model name")), None),  # fmt: skip
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "trl": trl.__version__,
        "load_avg_before": os.getloadavg(),
    }


def _upstream_grad_cost(hidden, weight, ids, coef, lay):
    """The logits path's extra cost of an upstream gradient != 1: the fused loss on fixed
    logits, backward with 1 and with 0.5 (the head's GEMMs left out: they are the same)."""
    with torch.no_grad():
        logits = hidden @ weight.T
    logits.requires_grad_(True)
    out = {}
    for factor in (1.0, 0.5):

        def step(factor=factor):
            res = fused_sequence_loss(logits, ids, lay, (coef, coef), impl="torch")
            loss = res.loss * factor if factor != 1.0 else res.loss
            return torch.autograd.grad(loss, logits)[0]

        step()
        out[factor] = statistics.median(_times(step, 3))
    return {"fused_logits_loss_s_upstream_1": round(out[1.0], 3),
            "fused_logits_loss_s_upstream_0.5": round(out[0.5], 3),
            "extra_s": round(out[0.5] - out[1.0], 3)}  # fmt: skip


def _times(fn, k):
    ts = []
    for _ in range(k):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return ts


def _check(g, g_ours):
    err_h = float((g[0] - g_ours[0]).abs().max())
    err_w = float((g[1] - g_ours[1]).abs().max())
    ok = err_h <= 1e-3 * float(g_ours[0].abs().max()) and err_w <= 1e-3 * float(
        g_ours[1].abs().max())  # fmt: skip
    return {"max_abs_diff_d_hidden": err_h, "max_abs_diff_d_weight": err_w, "ok": ok}


def test_linear_loss_vs_peers(data, record_property):
    hidden, weight, ids, coef, lay = data
    args = (hidden, weight, ids, coef, lay)
    liger_fn, liger_err = _liger()
    steps = {
        "ours": lambda: step_ours(*args),
        "logits_path": lambda: step_logits(*args),
        "naive": lambda: step_naive(*args),
        "trl_chunked": lambda: step_trl(*args),
    }
    if liger_fn is not None:
        steps["liger"] = lambda: step_liger(*args, liger_fn)
    # imports and one-time set-up (TRL imports transformers) outside the timed calls: every
    # implementation runs once on a tiny problem first
    gt = torch.Generator().manual_seed(1)
    tiny = (torch.randn(B * 2, 8, generator=gt).requires_grad_(True),
            torch.randn(16, 8, generator=gt).requires_grad_(True),
            torch.randint(0, 16, (B * 2,), generator=gt), coef,
            TokenLayout.from_masks(torch.ones(B, 2, dtype=torch.bool)))  # fmt: skip
    for fn in (step_ours, step_logits, step_naive, step_trl):
        fn(*tiny)
    if liger_fn is not None:
        step_liger(*tiny, liger_fn)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    report = {"meta": _meta(), "shape": {"N": N, "H": H, "V": V, "B": B, "T": T,
                                         "dtype": "float32"}}  # fmt: skip
    report["meta"]["liger"] = (
        "LigerFusedLinearGRPOLoss(compiled=False) ran on CPU (torch chunks)"
        if liger_fn is not None else f"not importable: {liger_err}"
    )  # fmt: skip
    rows, checks = {}, {}
    try:
        g_ours = None
        for name, fn in steps.items():
            # one call per implementation, profiled for memory and timed; its gradient is the
            # one checked against ours (what is timed is what was checked)
            holder = {}

            def call(fn=fn, holder=holder):
                holder["g"] = fn()

            peak, t = peak_bytes(call)
            if REPS:
                t = median_s(fn)
            g = holder.pop("g")
            grad_bytes = sum(x.numel() * x.element_size() for x in g)
            if g_ours is None:
                g_ours = g
            else:
                checks[name] = _check(g, g_ours)
            del g
            rows[name] = {"time_s": round(t, 3),
                          "peak_extra_MiB": round((peak - grad_bytes) / 2**20, 1)}  # fmt: skip
            print(f"LINEAR_BENCH_ROW {name} {rows[name]}", flush=True)
        del g_ours
        report["upstream_grad_logits_path"] = _upstream_grad_cost(*args)
        report["checks"] = checks
        report["rows"] = rows
    finally:
        torch.set_num_threads(prev)
    ours = rows["ours"]
    ratios = {}
    for name, r in rows.items():
        if name != "ours":
            ratios[f"time_ours_over_{name}"] = round(ours["time_s"] / r["time_s"], 3)
            ratios[f"mem_ours_over_{name}"] = round(
                ours["peak_extra_MiB"] / max(r["peak_extra_MiB"], 1e-9), 4
            )
    report["ratios"] = ratios
    report["goals"] = {
        "mem <= 1/8 logits path": ratios["mem_ours_over_logits_path"] <= 0.125,
        "mem <= TRL chunked": ratios["mem_ours_over_trl_chunked"] <= 1.0,
        "time <= 1.0x TRL chunked": ratios["time_ours_over_trl_chunked"] <= 1.0,
    }
    report["meta"]["load_avg_after"] = os.getloadavg()
    text = json.dumps(report, indent=1)
    print("LINEAR_BENCH_REPORT " + text)
    out = os.environ.get("LINEAR_BENCH_JSON")
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
    for k, v in ratios.items():
        record_property(k, v)
    assert all(c["ok"] for c in checks.values()), checks
