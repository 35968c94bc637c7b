"""Correctness on the GPU is the kernel test files run by pytest on that GPU: the runner runs
them first (compiled kernels: ``TRITON_INTERPRET`` removed from the environment), in their own
process, and records the outcome in the result JSON (``tests``) next to the timings.

The default target is ``tests/test_kernels_gpu.py``: the kernels' behaviour off the timed
shapes at GPU sizes (awkward shapes and dtypes, V = 151936 rows, one sequence of 70000
tokens, non-contiguous views, forced cooperative-wait timeouts, no host synchronisation). The
other ``tests/test_kernels_*.py`` files run the kernels under the Triton interpreter (CI's
job); they can be added with ``--kernel-tests``.
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


def run_kernel_tests(targets, out_dir: str, timeout_s: float, extra_args=()) -> dict:
    """Run pytest on ``targets`` in a fresh process (compiled Triton: no ``TRITON_INTERPRET``),
    its output in ``out_dir/kernel-tests.log``; the record of the run, never raises."""
    xml = os.path.join(out_dir, "kernel-tests.xml")
    log = os.path.join(out_dir, "kernel-tests.log")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
           *extra_args, *targets]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    rec = {"command": "python3 -m pytest " + " ".join(cmd[3:]), "targets": list(targets),
           "log": os.path.basename(log)}  # fmt: skip
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT,
                              env=env)  # fmt: skip
        rec["returncode"] = proc.returncode
        output = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rec["returncode"] = None
        rec["timed_out_after_s"] = timeout_s
        output = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) \
            else (e.stdout or "")  # fmt: skip
    rec["wall_s"] = round(time.time() - t0, 1)
    with open(log, "w") as f:
        f.write(output)
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    rec["summary"] = lines[-1].strip("= ") if lines else "no output"
    if os.path.exists(xml):
        try:
            rec.update(parse_junit(xml))
        except ET.ParseError as e:
            rec["junit_error"] = str(e)
    rec["ok"] = rec["returncode"] == 0
    return rec
