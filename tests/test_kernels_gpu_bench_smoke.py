"""benchmarks/gpu_bench.py must keep working: run its --smoke mode (CPU, Triton interpreter)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_gpu_bench_smoke(tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "gpu_bench.py"), "--smoke", "--out",
         str(tmp_path)],
        capture_output=True, text=True, timeout=240, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    res = json.loads(files[0].read_text())
    assert res["meta"]["smoke"] is True and res["meta"]["torch"]
    assert res["errors"] == []
    checks = res["correctness"]
    assert len(checks) > 40 and all(c["ok"] for c in checks)
    names = " ".join(c["check"] for c in checks)
    for needed in ("fused likelihood split-coop", "batch invariance", "one sequence of"):
        assert needed in names
    kinds = {(t["kind"], t["impl"]) for t in res["timings"] if "ms" in t}
    assert ("fwd+bwd", "ours fused split") in kinds and ("fwd", "naive torch") in kinds
    assert "=== timings" in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1].startswith("wrote")
