"""The runner of the GPU benchmark: command line, the kernel tests, the case loop, the files.

One run (``python3 benchmarks/gpu_bench.py --out DIR``):

1. runs the kernel tests on the GPU with pytest (:mod:`.correctness`) and records the outcome;
2. runs every case of :func:`.registry.build_cases` in order (:func:`run_case`): skipped when
   its estimated cost would pass ``--deadline-s``, else its handler (:mod:`.handlers`) checks
   and returns what to time, :mod:`.timing` times it, and the JSON is saved after each case;
3. fills the ratios and goals (:mod:`.report`), writes the candidate dispatch table when the
   run measured every variant, prints the summary.

Files written to ``DIR``: ``<gpu>-<UTC date>-<time>-<commit>.json`` (the results),
``dispatch_table.json`` (the candidate table, when complete), ``kernel-tests.log`` and
``kernel-tests.xml``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback

from . import report
from .correctness import DEFAULT_TARGETS, run_kernel_tests
from .handlers import HANDLERS, Bench
from .peers import load_peers
from .registry import PROFILES, Case, LinearWorkload, budget_lines, build_cases
from .timing import measure

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: the clock of the deadline starts when this module is imported (before torch)
START = time.time()
#: environment switch of the kernels' autotuner ("0": fixed default configs)
AUTOTUNE_ENV = "TSALLIS_TRITON_AUTOTUNE"
#: default deadline of a GPU run (s from the start, the kernel tests included): the run ends
#: within 9 minutes with the last case, the summary and the files
DEFAULT_DEADLINE_S = 450.0
#: the kernel tests' share of it at most (s)
DEFAULT_TESTS_TIMEOUT_S = 150.0


def log(msg):
    print(f"[{time.time() - START:7.1f}s] {msg}", flush=True)


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


def case_row(case: Case) -> dict:
    row = {"name": case.name, "kind": case.kind, "peer": case.peer, "variant": case.variant,
           "mode": case.mode, "inplace": case.inplace, "upstream": case.upstream,
           "est_s": case.est_s}  # fmt: skip
    if case.checked_by:
        row["checked_by"] = case.checked_by
    if case.work is not None:
        w = case.work
        row.update(V=w.V, B=w.B, T=w.T, dtype=w.dtype)
        if isinstance(w, LinearWorkload):
            row["H"] = w.H
    return row


def run_case(bench: Bench, case: Case, deadline_s=None, elapsed=None) -> dict:
    """Run one case: its handler, its timing, its status; never raises (an exception is the
    case's ``error``). ``deadline_s``: skip the case when ``elapsed + est_s`` would pass it."""
    row = case_row(case)
    elapsed = time.time() - START if elapsed is None else elapsed
    if deadline_s is not None and elapsed + case.est_s > deadline_s:
        row.update(status="skipped", why=f"deadline: {elapsed:.0f} s + est {case.est_s:.0f} s "
                   f"> {deadline_s:.0f} s")  # fmt: skip
        return row
    t_start = time.time()
    tuned_before = tuned_configs()
    saved_env = os.environ.get(AUTOTUNE_ENV)
    if case.params.get("autotune") is False:
        os.environ[AUTOTUNE_ENV] = "0"
        row["autotune"] = False
    try:
        spec = HANDLERS[case.kind](bench, case, row)
        new = {k: v for k, v in tuned_configs().items() if tuned_before.get(k) != v}
        if new:
            row["tuned_configs"] = new
        if spec is not None and case.time:
            row["timing"] = measure(spec, bench.cuda)
        checks = row.get("checks", [])
        row["status"] = "ok" if all(c["ok"] for c in checks) else "fail"
        if spec is None and "skipped" in row:
            row["status"] = "skipped"
            row["why"] = row.pop("skipped")
    except Exception as e:
        row.update(status="error", error=f"{type(e).__name__}: {e}"[:600],
                   traceback=traceback.format_exc(limit=6)[-2000:])  # fmt: skip
    finally:
        if saved_env is None:
            os.environ.pop(AUTOTUNE_ENV, None)
        else:
            os.environ[AUTOTUNE_ENV] = saved_env
    row["wall_s"] = round(time.time() - t_start, 2)
    bench.free()
    return row


def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the tree (``+dirty`` with uncommitted changes), or None."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True,
                               timeout=10).stdout.strip()  # fmt: skip
    except Exception:
        return None
    return sha + ("+dirty" if dirty else "") if sha else None


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
    from kernels import dispatch

    m["dispatch_at_run"] = {"rows": [list(r) for r in dispatch.TABLE],
                            "measured": dispatch.MEASURED, "provenance": dispatch.PROVENANCE}
    return m


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="gpu_bench.py",
        description="The fused log-prob kernels and the hidden-state loss against Liger-Kernel, "
        "TRL, cut-cross-entropy, naive torch and torch.compile, in one run on one GPU: the "
        "kernel tests first, then every case checked at its timed shape and timed "
        "(docs/gpu-benchmark.md). --smoke: the same at tiny shapes on CPU.",
    )
    ap.add_argument("--out", help="folder for the result JSON and the candidate dispatch table")
    ap.add_argument("--commit", default=os.environ.get("GIT_COMMIT"),
                    help="commit being measured (default: env GIT_COMMIT, else git rev-parse "
                    "HEAD; a run without one is refused)")  # fmt: skip
    ap.add_argument("--smoke", action="store_true",
                    help="tiny shapes on CPU under TRITON_INTERPRET=1 (CI)")
    ap.add_argument("--deadline-s", type=float, default=None,
                    help=f"skip every case that would end after this many seconds from the "
                    f"start (GPU default {DEFAULT_DEADLINE_S:.0f}; none in smoke)")  # fmt: skip
    ap.add_argument("--only", default=None, help="regex: run only the cases whose name matches")
    ap.add_argument("--list", action="store_true", help="print the case table and budget, exit")
    ap.add_argument("--kernel-tests", default=None,
                    help="space-separated pytest targets run first on the device (GPU default "
                    f"{' '.join(DEFAULT_TARGETS)}; smoke default none); 'none' skips them")
    ap.add_argument("--kernel-tests-timeout", type=float, default=DEFAULT_TESTS_TIMEOUT_S)
    ap.add_argument("--wheels", default=None,
                    help="folder of pure-Python wheels (liger_kernel, trl, cut_cross_entropy) "
                    "unpacked onto sys.path for peers that are not installed")  # fmt: skip
    ap.add_argument("--no-peers", action="store_true",
                    help="load no peer library (their cases are recorded as skipped)")
    ap.add_argument("--dispatch-candidate", metavar="RESULT_JSON", default=None,
                    help="write the candidate dispatch table of an existing result file into "
                    "--out, exit")  # fmt: skip
    ap.add_argument("--force", action="store_true",
                    help="--dispatch-candidate even if some variant was not measured at every V")
    return ap.parse_args(argv)


def _dispatch_candidate(args) -> int:
    with open(args.dispatch_candidate) as f:
        results = json.load(f)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "dispatch_table.json")
    try:
        rec = report.write_candidate(results, os.path.basename(args.dispatch_candidate), path,
                                     force=args.force)  # fmt: skip
    except report.DispatchNotReady as e:
        print(f"gpu_bench.py --dispatch-candidate: refused: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}: rows {rec['rows']}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.list and not args.out:
        print("gpu_bench.py: --out FOLDER is required", file=sys.stderr)
        return 2
    if args.dispatch_candidate:
        return _dispatch_candidate(args)
    if not args.list and not args.commit:
        args.commit = git_commit()
        if not args.commit:
            print("gpu_bench.py: no commit to record: run inside the git checkout, or pass "
                  "--commit SHA (or env GIT_COMMIT=SHA)", file=sys.stderr)  # fmt: skip
            return 2
    import kernels

    variants = tuple(kernels.FUSED_VARIANTS)
    profile = PROFILES["smoke" if args.smoke else "gpu"]
    cases = build_cases(profile, variants, kernels.choose_variant)
    if args.only:
        cases = [c for c in cases if re.search(args.only, c.name)]
    if args.list:
        if not args.smoke:
            print(f"kernel tests first: up to {args.kernel_tests_timeout:.0f} s; cases skipped "
                  f"past {args.deadline_s or DEFAULT_DEADLINE_S:.0f} s from the start")
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
    os.makedirs(args.out, exist_ok=True)
    peers = load_peers(args.wheels, disabled=("liger", "trl", "cce") if args.no_peers else ())
    results = {"meta": environment(dev, args, variants), "tests": None, "cases": [],
               "goals": [], "dispatch": {}, "errors": []}  # fmt: skip
    m = results["meta"]
    m["peers"] = {k: p.describe() for k, p in peers.items()}
    m["workloads"] = [vars(w) for w in profile.timing] + [vars(w) for w in profile.linear]
    m["budget_est_s"] = sum(c.est_s for c in cases)
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", str(m.get("gpu"))).strip("-").lower()
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    commit = re.sub(r"[^A-Za-z0-9]+", "", str(args.commit))[:10] or "unknown"
    out_path = os.path.join(args.out, f"{gpu}-{stamp}-{commit}.json")

    def save():
        m["wall_s"] = round(time.time() - START, 1)
        report.save_json(out_path, results)

    log(f"{m.get('gpu')} | torch {m['torch']} | triton {m.get('triton')} | commit {args.commit}"
        f" | {len(cases)} cases, est {m['budget_est_s']:.0f} s, deadline {args.deadline_s} s")
    for k, p in peers.items():
        log(f"peer {k}: {p.describe()}")
    save()
    targets = args.kernel_tests
    if targets is None:
        targets = "" if args.smoke else " ".join(DEFAULT_TARGETS)
    targets = [] if targets.strip().lower() in ("", "none") else targets.split()
    if targets:
        left = (args.deadline_s or 1e9) - (time.time() - START)
        log(f"kernel tests: pytest {' '.join(targets)}")
        results["tests"] = run_kernel_tests(targets, args.out,
                                            min(args.kernel_tests_timeout, max(left, 1.0)))
        log(f"kernel tests: {results['tests']['summary']} ({results['tests']['wall_s']} s)")
        save()
    torch.manual_seed(0)
    bench = Bench(dev, args.smoke, peers)
    for i, case in enumerate(cases, 1):
        row = run_case(bench, case, args.deadline_s)
        results["cases"].append(row)
        if row["status"] == "error":
            results["errors"].append({"case": case.name, "error": row["error"]})
        if bench.cuda:  # free the workloads no later case needs
            bench.drop_except({c.work.key for c in cases[i:] if c.work is not None})
        save()
        log(f"({i}/{len(cases)}) {report.progress_line(row)}")
    m["tuned_configs_final"] = tuned_configs()
    report.fill_ratios(results)
    gpu_prof = PROFILES["gpu"]
    results["goals"] = report.goals(results, [w.V for w in gpu_prof.timing],
                                    [(w.V, w.H) for w in gpu_prof.linear])  # fmt: skip
    if not args.smoke:
        problems = report.dispatch_problems(results)
        if problems:
            results["dispatch"] = {"problems": problems}
        else:
            results["dispatch"] = report.write_candidate(
                results, os.path.basename(out_path), os.path.join(args.out, "dispatch_table.json"))
    save()
    report.print_summary(results, results["goals"])
    print(f"\nwrote {out_path}")
    ours_bad = [c for c in results["cases"] if not c["peer"] and c["status"] in ("fail", "error")]
    tests_bad = results["tests"] is not None and not results["tests"]["ok"]
    return 1 if ours_bad or tests_bad else 0


__all__ = ["main", "run_case"]
