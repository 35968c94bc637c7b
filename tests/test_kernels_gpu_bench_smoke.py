"""benchmarks/gpu_bench.py must keep working: its --smoke run (CPU, Triton interpreter) goes
through the same case table and runner as the GPU run; plus the pure pieces of the runner
(criteria, dispatch table writer, Liger wheel loader) on synthetic inputs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_entry_point():
    """benchmarks/gpu_bench.py by path (benchmarks/ is not a package and stays off sys.path)."""
    path = os.path.join(ROOT, "benchmarks", "gpu_bench.py")
    spec = importlib.util.spec_from_file_location("tsallis_gpu_bench_entry", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_load_entry_point().load_package()
from tsallis_gpu_bench import cases as bench_cases  # noqa: E402
from tsallis_gpu_bench import run as bench_run  # noqa: E402

needs_triton = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="triton not installed"
)


@needs_triton
def test_gpu_bench_smoke(tmp_path):
    import kernels

    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "gpu_bench.py"), "--smoke",
           "--no-liger", "--commit", "smoke-test", "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-4000:]
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and files[0].name.endswith("-smoketest.json")
    res = json.loads(files[0].read_text())
    meta = res["meta"]
    assert meta["smoke"] is True and meta["commit"] == "smoke-test" and meta["torch"]
    assert meta["variants"] == list(kernels.FUSED_VARIANTS)
    assert res["errors"] == []
    cases = res["cases"]
    assert all(c["status"] in ("ok", "skipped") for c in cases), [
        (c["name"], c["status"]) for c in cases if c["status"] not in ("ok", "skipped")
    ]
    skipped = {c["kind"] for c in cases if c["status"] == "skipped"}
    assert skipped <= {"liger_fwd", "liger_grpo"}  # --no-liger
    # every variant was checked against the oracle and repeated bitwise, through the public API
    for v in kernels.FUSED_VARIANTS:
        (c,) = [c for c in cases if c["kind"] == "fused" and c["variant"] == v
                and not c["inplace"] and c["mode"] == "verifier"]  # fmt: skip
        names = [k["check"] for k in c["checks"]]
        assert "grad vs float64" in names and any(n.startswith("repeatable") for n in names)
        assert c["timing"]["ms"] > 0
    kinds = {c["kind"] for c in cases if c["status"] == "ok"}
    assert {"fwd", "fused", "kernel_fwd", "kernel_fused", "two_pass", "rows", "noncontig", "long",
            "naive_fwd", "naive_fused", "copy"} <= kinds  # fmt: skip
    assert {"same_bits", "sync_debug"} <= kinds
    (sb,) = [c for c in cases if c["kind"] == "same_bits"]
    names = [k["check"] for k in sb["checks"]]
    assert "split max_spin=0 == split_2pass (bitwise: logp, grad)" in names
    assert "multi max_spin=0: waits timed out (the recompute ran)" in names
    assert sb["timeouts_by_run"]["split max_spin=0"] > 0 and sb["ran_as"] == {"split": "split"}
    (sd,) = [c for c in cases if c["kind"] == "sync_debug"]
    assert any("CPU layout and coefficients" in k["check"] for k in sd["checks"])
    for c in cases:
        if c["kind"] == "kernel_fused" or (c["kind"] == "fused" and c["status"] == "ok"
                                           and c["variant"] is not None):  # fmt: skip
            assert c["ran_as"] == c["variant"] and isinstance(c["timeouts"], int), c["name"]
    assert any(c["inplace"] for c in cases if c["status"] == "ok")
    assert any(c["mode"] == "likelihood" for c in cases if c["status"] == "ok")
    checks = [k["check"] for c in cases for k in c.get("checks", [])]
    assert any(k.startswith("batch invariant") for k in checks)
    assert {g["status"] for g in res["goals"]} == {"not measured"}
    out = proc.stdout
    assert "=== goals" in out and "=== timings" in out
    assert out.rstrip().splitlines()[-1].startswith("wrote")


def test_commit_and_out_are_required(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GIT_COMMIT"}
    script = os.path.join(ROOT, "benchmarks", "gpu_bench.py")
    p = subprocess.run([sys.executable, script, "--smoke", "--out", str(tmp_path)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)  # fmt: skip
    assert p.returncode == 2 and "GIT_COMMIT" in p.stderr
    p = subprocess.run([sys.executable, script, "--smoke", "--commit", "x"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)  # fmt: skip
    assert p.returncode == 2 and "--out" in p.stderr


def test_case_table_gpu_profile():
    variants = ("row", "split")
    cases = bench_cases.build_cases(bench_cases.PROFILES["gpu"], variants, lambda V: "row")
    names = [c.name for c in cases]
    assert len(names) == len(set(names))
    for V in (32000, 151936):
        for v in variants:
            for inplace in (False, True):
                assert any(c.kind == "fused" and c.variant == v and c.inplace == inplace
                           and c.work.V == V for c in cases)  # fmt: skip
            assert any(c.kind == "fused" and c.variant == v and c.mode == "likelihood"
                       and c.work.V == V for c in cases)  # fmt: skip
            assert any(c.kind == "kernel_fused" and c.variant == v and c.work.V == V
                       for c in cases)  # fmt: skip
        assert {"liger_fwd", "liger_grpo", "copy", "fwd"} <= {
            c.kind for c in cases if c.work is not None and c.work.V == V
        }
    w = cases[0].work
    assert (w.B, w.T, w.masked_tail) == (16, 1024, 100)
    # the goal rows come first: everything before the first small-shape case is at the
    # timing shapes and out of place
    head = names[: [c.kind for c in cases].index("rows")]
    assert all("in-place" not in n and "likelihood" not in n for n in head)
    with pytest.raises(ValueError, match="unknown case kind"):
        bench_cases.Case("x", "nope")


def test_ulp_and_grad_criterion():
    import torch

    ref = torch.tensor([1.0, 1.5, -3.0, 2.0**-130, 0.0], dtype=torch.float64)
    u = bench_run.ulp(ref, "bfloat16")
    assert u.tolist()[:3] == [2.0**-7, 2.0**-7, 2.0**-6]
    assert u[3] == 2.0**-133 and u[4] == 2.0**-133
    g = torch.tensor([1.0, 1.5, -3.0], dtype=torch.float64)
    r = g + torch.tensor([2.0**-9, 0.0, 0.0], dtype=torch.float64)
    st = bench_run.GradStats("bfloat16", 0.125)
    st.add(g, r, g)  # same error as the yardstick everywhere
    assert st.result("x")["ok"]
    st = bench_run.GradStats("bfloat16", 0.125)
    st.add(g, r, r)  # yardstick exact: our 1/4 ulp error exceeds the 1/8 ulp slack
    res = st.result("x")
    assert not res["ok"] and res["elements_failing"] == 1
    assert res["first_failure"]["flat_index"] == 0
    st = bench_run.GradStats("bfloat16", 0.125)
    st.add(torch.tensor([float("nan")]), torch.tensor([0.0]), torch.tensor([float("nan")]))
    assert not st.result("x")["ok"]


def _result(rows, smoke=False):
    return {"meta": {"smoke": smoke, "gpu": "NVIDIA H200", "commit": "abc",
                     "date_utc": "2026-01-01T00:00:00Z"},
            "cases": rows}  # fmt: skip


def _fused(V, variant, ms, status="ok", inplace=False, mode="verifier"):
    return {"kind": "fused", "V": V, "variant": variant, "inplace": inplace, "mode": mode,
            "status": status, "timing": {"ms": ms}}  # fmt: skip


def _load_dispatch(path):
    spec = importlib.util.spec_from_file_location("dispatch_copy", path)
    mod = importlib.util.module_from_spec(spec)
    exec(compile(path.read_text(), str(path), "exec"), mod.__dict__)
    return mod


def _complete(times):
    """A verifier-mode out-of-place row for every fused variant at every V of ``times``
    ({V: {variant: ms}}; variants not named get 10 ms)."""
    from kernels.dispatch import FUSED_VARIANTS

    return [_fused(V, v, by.get(v, 10.0)) for V, by in times.items() for v in FUSED_VARIANTS]


def test_dispatch_from_measurements(tmp_path):
    rows = [
        _fused(32000, "row", 1.0),
        _fused(32000, "multi", 0.9, status="fail"),  # failed a check: never chosen
        _fused(32000, "row_rev", 0.5, inplace=True),  # in place: not a dispatch candidate
        _fused(32000, "split", 0.4, mode="likelihood"),
        _fused(151936, "split", 4.0),
        _fused(151936, "row", 5.0),
        _fused(151936, None, 3.0),  # the default row itself
    ]
    best = bench_run.best_variants(_result(rows))
    assert best == {32000: ("row", 1.0, None), 151936: ("split", 4.0, ("row", 1.25))}
    table = bench_run.dispatch_table(best)
    assert table == ((69727, "row"), (None, "split"))  # floor(sqrt(32000 * 151936))
    assert bench_run.dispatch_table({32000: ("multi", 1), 151936: ("multi", 2)}) == (
        (None, "multi"),
    )
    with pytest.raises(ValueError, match="nothing to dispatch"):
        bench_run.dispatch_table({})
    # noise margin: the current choice stays unless beaten by more than the margin
    near = _result([_fused(32000, "row", 1.02), _fused(32000, "multi", 1.0)])
    assert bench_run.best_variants(near, prefer=lambda V: "row", margin=0.03)[32000][0] == "row"
    assert bench_run.best_variants(near, prefer=lambda V: "row", margin=0.01)[32000][0] == "multi"


def test_write_dispatch_refuses_incomplete_runs(tmp_path, capsys):
    src = os.path.join(ROOT, "kernels", "dispatch.py")
    dst = tmp_path / "dispatch.py"
    dst.write_text(open(src).read())
    before = dst.read_text()
    res = tmp_path / "r.json"
    times = {32000: {"row": 1.0, "multi": 1.5}, 151936: {"split": 4.0, "row": 5.0}}
    cut = _complete(times)
    cut[-1] = dict(cut[-1], status="skipped")  # the deadline cut the last variant at 151936
    del cut[-1]["timing"]
    res.write_text(json.dumps(_result(cut)))
    assert bench_run.dispatch_problems(_result(cut)) == ["V=151936 split_2pass: skipped"]
    with pytest.raises(bench_run.DispatchNotReady, match="split_2pass: skipped.*--force"):
        bench_run.write_dispatch(str(res), str(dst))
    argv = ["--write-dispatch", str(res), "--dispatch-file", str(dst)]
    assert bench_run.main(argv) == 2 and dst.read_text() == before
    assert "refused" in capsys.readouterr().err
    # a variant absent from the run (--only) is refused too
    partial = [r for r in _complete(times) if r["variant"] != "row_rev"]
    assert len(bench_run.dispatch_problems(_result(partial))) == 2
    # --force writes and says so
    assert bench_run.main([*argv, "--force"]) == 0
    forced = _load_dispatch(dst)
    assert forced.MEASURED is True and "FORCED" in forced.PROVENANCE
    assert "with --force" in forced.__doc__
    # a complete run: table, runner-up ratios, status paragraph rewritten, file still importable
    dst.write_text(before)
    res.write_text(json.dumps(_result(_complete(times))))
    bench_run.write_dispatch(str(res), str(dst))
    mod = _load_dispatch(dst)
    assert mod.TABLE == ((69727, "row"), (None, "split")) and mod.MEASURED is True
    assert "r.json" in mod.PROVENANCE and "runner-up multi x1.500" in mod.PROVENANCE
    assert "runner-up row x1.250" in mod.PROVENANCE and "FORCED" not in mod.PROVENANCE
    assert "UNMEASURED" not in mod.__doc__ and "Status: MEASURED on NVIDIA H200" in mod.__doc__
    assert mod.choose_variant(32000) == "row" and mod.choose_variant(151936) == "split"
    tail = before[before.index("def choose_variant"):]
    assert dst.read_text().endswith(tail)  # the rest kept byte for byte
    assert "FUSED_VARIANTS = " in dst.read_text()
    assert max(map(len, dst.read_text().splitlines())) <= 100  # ruff's line length
    # rewriting again (status paragraph now MEASURED) works; within the noise margin the
    # table's current choice (split at 151936) is kept over a 2 % faster row
    times[151936] = {"split": 4.0, "row": 3.92}
    res.write_text(json.dumps(_result(_complete(times))))
    bench_run.write_dispatch(str(res), str(dst))
    again = _load_dispatch(dst)
    assert again.choose_variant(151936) == "split"
    assert again.__doc__.count("Status:") == 1 and "within noise" in again.PROVENANCE
    res.write_text(json.dumps(_result(_complete(times), smoke=True)))
    with pytest.raises(ValueError, match="smoke"):
        bench_run.write_dispatch(str(res), str(dst))


def test_split_fallback_and_sync_helpers():
    """The launcher's split -> split_2pass rule (more chunks per row than SMs), the bench's
    record of it, and the sync guard (a no-op off CUDA)."""
    from kernels.triton import fused_split, split_falls_back

    bv = 1024
    V = 151936  # 149 chunks of 1024
    assert fused_split.split_max_chunks(V, bv) == 149
    assert split_falls_back(V, 132, bv) and not split_falls_back(V, 149, bv)
    assert not split_falls_back(V, None, bv)  # not a GPU: never
    assert not split_falls_back(V, 132, 4096)  # 38 chunks
    assert bench_run.ran_as("split", V, "cpu", bv) == "split"
    assert bench_run.ran_as("multi", V, "cpu") == "multi"
    assert bench_run.ran_as(None, V, "cpu") is None
    with bench_run.sync_guard(False) as g:
        assert g.prev is None


def test_liger_wheel_loader(tmp_path):
    """A wheel is a zip: the loader unpacks the newest liger_kernel-*.whl onto sys.path."""
    whl = tmp_path / "liger_kernel-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("liger_kernel/__init__.py", "")
        z.writestr("liger_kernel/ops/__init__.py", "")
        z.writestr("liger_kernel/ops/grpo_loss.py", "def fused_selective_log_softmax(): return 1\n")
        z.writestr("liger_kernel/transformers/__init__.py", "")
        z.writestr("liger_kernel/transformers/grpo_loss.py", "def triton_grpo_loss(): return 2\n")
    saved = list(sys.path)
    try:
        sel, grpo, version = bench_run.find_liger(str(tmp_path))
        if version.startswith("9.9.9") or "from liger_kernel-9.9.9" in version:
            assert sel() == 1 and grpo() == 2
        else:  # a real liger-kernel is installed in this environment: it wins
            assert sel is not None and grpo is not None
    finally:
        sys.path[:] = saved
        for m in [m for m in sys.modules if m.startswith("liger_kernel")]:
            del sys.modules[m]
    sel, grpo, why = bench_run.find_liger(str(tmp_path / "empty"))
    if sel is None:
        assert "no wheel" in why


def test_goals_ratios_and_summary_on_gpu_like_results(capsys):
    """The GPU-only summary paths (ratios to Liger, copy bandwidth, goals, tables) on a
    synthetic result set: they never run in the smoke."""
    from types import SimpleNamespace

    r = bench_run.Runner(SimpleNamespace(smoke=False, deadline_s=270.0), "cuda")

    def row(kind, V, ms, variant=None, inplace=False, extra=0.001, status="ok", peer=False):
        return {"name": f"V={V} {kind} {variant} {inplace}", "kind": kind, "V": V,
                "variant": variant, "inplace": inplace, "mode": "verifier", "peer": peer,
                "status": status, "checks": [],
                "timing": {"ms": ms, "GBps_vs_floor": 1000.0 / ms,
                           "peak_extra_frac_of_logits": extra}}  # fmt: skip

    r.results["cases"] = [
        row("copy", 32000, 0.5, peer=True),
        row("liger_fwd", 32000, 1.0, peer=True),
        row("fwd", 32000, 1.02),
        row("liger_grpo", 32000, 2.0, peer=True),
        row("liger_grpo", 32000, 1.9, inplace=True, peer=True),
        row("fused", 32000, 1.5, "row"),
        row("fused", 32000, 1.2, "split", status="fail"),  # failed: not a candidate
        row("fused", 32000, 1.6, None),
        row("fused", 32000, 1.3, "row", inplace=True),
        row("liger_fwd", 151936, 1.5, peer=True),
        row("fwd", 151936, 1.8),
        row("fused", 151936, 4.5, "split", extra=0.02),
    ]
    r.results["cases"][7]["variant_dispatched"] = "row"
    r.ratios()
    t = {(c["kind"], c["V"], c["variant"], c["inplace"]): c["timing"] for c in r.results["cases"]}
    assert t[("fwd", 32000, None, False)]["ratio_to_liger"] == pytest.approx(1.02)
    assert t[("fused", 32000, "row", False)]["ratio_to_liger"] == pytest.approx(0.75)
    assert t[("fused", 32000, "row", True)]["ratio_to_liger"] == pytest.approx(1.3 / 1.9)
    assert t[("fwd", 32000, None, False)]["frac_of_copy_bandwidth"] == pytest.approx(0.5 / 1.02)
    goals = {g["goal"]: g for g in r.goals()}
    g = goals["V=32000 forward: ours sequence_logprobs / Liger fused_selective_log_softmax"]
    assert g["status"] == "met" and g["value"] == pytest.approx(1.02)
    g = [v for k, v in goals.items() if k.startswith("V=32000 forward+backward: best")][0]
    assert g["status"] == "missed" and g["value"] == pytest.approx(1.5 / 1.9)
    assert "best variant row" in g["detail"] and "default (row)" in g["detail"]
    g = [v for k, v in goals.items() if k.startswith("V=151936 forward+backward: best")][0]
    assert g["status"] == "not measured"  # no Liger fused loss at that V
    g = [v for k, v in goals.items() if k.startswith("V=151936 peak extra")][0]
    assert g["status"] == "missed" and g["value"] == pytest.approx(0.02)
    g = [v for k, v in goals.items() if k.startswith("V=151936 forward:")][0]
    assert g["status"] == "missed" and g["value"] == pytest.approx(1.2)
    r.results["dispatch"] = {"best": {"32000": ["row", 1.5]}, "TABLE": "((None, 'row'),)"}
    bench_run.print_summary(r.results, r.goals())
    out = capsys.readouterr().out
    assert "MISSED" in out and "MET" in out and "NOT MEASURED" in out and "TABLE" in out
    assert "0.750" in out  # the ratio column
    for c in r.results["cases"]:
        c.setdefault("wall_s", 0.1)
        assert c["name"] in bench_run.progress_line(c)
