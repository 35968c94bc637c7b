"""Correctness on the GPU is the kernel test files run by pytest on that GPU: the runner runs
them first (compiled kernels: ``TRITON_INTERPRET`` removed from the environment), each file in
its own process, and records the outcome in the result JSON (``tests``) next to the timings.

The default target is ``tests/test_kernels_gpu.py``: the kernels' behaviour off the timed
shapes at GPU sizes (awkward shapes and dtypes, V = 151936 rows, one sequence of 70000
tokens, non-contiguous views, forced cooperative-wait timeouts, no host synchronisation). The
other ``tests/test_kernels_*.py`` files run the kernels under the Triton interpreter (CI's
job; about a minute or two in all); they can be added with ``--kernel-tests``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: what the GPU run tests by default
DEFAULT_TARGETS = ("tests/test_kernels_gpu.py",)


def parse_junit(path: str) -> dict:
    """Counts and failing test ids of a pytest ``--junitxml`` report."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed, skipped = [], []
    for s in suites:
        for k in counts:
            counts[k] += int(s.get(k, 0))
        for tc in s.iter("testcase"):
            name = f"{tc.get('classname', '')}::{tc.get('name', '')}"
            for bad in ("failure", "error"):
                el = tc.find(bad)
                if el is not None:
                    failed.append({"test": name, bad: (el.get("message") or "")[:400]})
            el = tc.find("skipped")
            if el is not None:
                skipped.append({"test": name, "why": (el.get("message") or "")[:200]})
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {"counts": counts, "failed": failed, "skipped": skipped}


def _run_one(target, xml, timeout_s, extra_args) -> tuple[dict, str]:
    """pytest on one target in a fresh process: (record, output)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
           *extra_args, target]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    rec = {"target": target, "command": "python3 -m pytest " + " ".join(cmd[3:])}
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT,
                              env=env)  # fmt: skip
        rec["returncode"] = proc.returncode
        output = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rec["returncode"] = None
        rec["timed_out_after_s"] = round(timeout_s, 1)
        out = e.stdout or ""
        output = out.decode(errors="replace") if isinstance(out, bytes) else out
    rec["wall_s"] = round(time.time() - t0, 1)
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    rec["summary"] = lines[-1].strip("= ") if lines else "no output"
    if rec["returncode"] is None:
        rec["summary"] = f"timed out after {timeout_s:.0f} s ({rec['summary']})"
    return rec, output


def run_kernel_tests(targets, out_dir: str, timeout_s: float, extra_args=()) -> dict:
    """Run pytest on each of ``targets`` in its own fresh process (compiled Triton: no
    ``TRITON_INTERPRET``; a file that switches the interpreter on at import cannot spoil
    another's kernels), within ``timeout_s`` in all; their output in
    ``out_dir/kernel-tests.log``. The record of the runs, never raises."""
    t0 = time.time()
    runs, logs = [], []
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "passed": 0}
    failed, skipped = [], []
    for i, target in enumerate(targets):
        xml = os.path.join(out_dir, f"kernel-tests-{i}.xml")
        left = max(timeout_s - (time.time() - t0), 1.0)
        rec, output = _run_one(target, xml, left, extra_args)
        logs.append(f"===== {rec['command']}\n{output}")
        if os.path.exists(xml):
            try:
                j = parse_junit(xml)
                for k in counts:
                    counts[k] += j["counts"][k]
                failed += j["failed"]
                skipped += j["skipped"]
            except ET.ParseError as e:
                rec["junit_error"] = str(e)
        runs.append(rec)
    log = os.path.join(out_dir, "kernel-tests.log")
    with open(log, "w") as f:
        f.write("\n".join(logs))
    codes = [r["returncode"] for r in runs]
    return {"targets": list(targets), "runs": runs, "log": os.path.basename(log),
            "counts": counts, "failed": failed, "skipped": skipped,
            "returncode": None if None in codes else max(codes, default=0),
            "summary": "; ".join(r["summary"] for r in runs),
            "wall_s": round(time.time() - t0, 1),
            "ok": all(c == 0 for c in codes)}  # fmt: skip
