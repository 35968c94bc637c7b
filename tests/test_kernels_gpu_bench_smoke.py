"""benchmarks/gpu_bench.py must keep working: its --smoke run (CPU, Triton interpreter) goes
through the same case table, handlers and report as the GPU run; plus each module's pure
pieces on synthetic inputs (registry, criteria, hidden-state checks, peers, kernel-test
record, goals, candidate dispatch table)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from types import SimpleNamespace

import pytest
import torch
from _gpu_bench import ROOT, load_bench

bench = load_bench()
registry, checks, report, peers_mod = bench.registry, bench.checks, bench.report, bench.peers

needs_triton = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="triton not installed"
)
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_bench.py")


def _env(**over):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(over)
    return env


@needs_triton
def test_gpu_bench_smoke(tmp_path):
    import kernels

    cmd = [sys.executable, SCRIPT, "--smoke", "--commit", "smoke-test", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-4000:]
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and files[0].name.endswith("-smoketest.json")
    res = json.loads(files[0].read_text())
    meta = res["meta"]
    assert meta["smoke"] is True and meta["commit"] == "smoke-test" and meta["torch"]
    assert meta["variants"] == list(kernels.FUSED_VARIANTS)
    assert meta["dispatch_at_run"]["rows"] == [list(r) for r in kernels.dispatch.TABLE]
    assert set(meta["peers"]) == {"liger", "trl", "cce"}
    assert res["errors"] == [] and res["tests"] is None  # smoke: no kernel tests by default
    cases = res["cases"]
    bad = [(c["name"], c["status"], c.get("checks")) for c in cases
           if c["status"] not in ("ok", "skipped")]  # fmt: skip
    assert not bad, bad
    for c in cases:  # skipped only for a missing library, never for ours' logits kernels
        if c["status"] == "skipped":
            assert c["kind"] in registry.PEER_KINDS or c["kind"] == "linear", c
            assert "not importable" in c["why"], c
    # every variant checked against the oracle and repeated bitwise, through the public API
    for v in kernels.FUSED_VARIANTS:
        (c,) = [c for c in cases if c["kind"] == "fused" and c["variant"] == v
                and not c["inplace"] and c["mode"] == "verifier"]  # fmt: skip
        names = [k["check"] for k in c["checks"]]
        assert "grad vs float64" in names and any(n.startswith("repeatable") for n in names)
        assert c["timing"]["ms"] > 0 and c["ran_as"] == v and isinstance(c["timeouts"], int)
    kinds = {c["kind"] for c in cases if c["status"] == "ok"}
    assert {"fwd", "fused", "kernel_fwd", "kernel_fused", "two_pass", "naive_fwd",
            "naive_fused", "copy"} <= kinds  # fmt: skip
    # the timed default names the case that checked its configuration, which passed
    (dflt,) = [c for c in cases if c["kind"] == "fused" and c["variant"] is None
               and c["mode"] == "verifier" and c["upstream"] == 1.0]  # fmt: skip
    by_name = {c["name"]: c for c in cases}
    assert by_name[dflt["checked_by"]]["status"] == "ok"
    assert by_name[dflt["checked_by"]]["variant"] == dflt["variant_dispatched"]
    ok = [c for c in cases if c["status"] == "ok"]
    assert any(c["mode"] == "likelihood" and c["variant"] is None for c in ok)
    assert any(c["upstream"] != 1.0 and "grad vs float64" in str(c["checks"]) for c in ok)
    assert any(c["inplace"] for c in ok)
    if importlib.util.find_spec("trl") is not None:
        (trl,) = [c for c in cases if c["kind"] == "trl_chunked"]
        assert trl["status"] == "ok" and trl["H"] == 8, trl
        assert [k["check"] for k in trl["checks"]] == ["d_hidden vs float64 (normwise)",
                                                       "d_weight vs float64 (normwise)"]
    if hasattr(kernels, "fused_linear_sequence_loss"):  # the hidden-state loss, Triton path
        lin = [c for c in cases if c["kind"] == "linear"]
        assert {c["mode"] for c in lin} == {"verifier", "likelihood"}
        assert all(c["status"] == "ok" and len(c["checks"]) == 6 for c in lin), lin
    checks_ = [k["check"] for c in cases for k in c.get("checks", [])]
    assert any(k.startswith("batch invariant") for k in checks_)
    assert {g["status"] for g in res["goals"]} == {"not measured"}
    assert not (tmp_path / "dispatch_table.json").exists()  # smoke: never a candidate
    out = proc.stdout
    assert "=== goals" in out and "=== timings" in out
    assert out.rstrip().splitlines()[-1].startswith("wrote")


def test_out_and_commit_are_required(tmp_path, monkeypatch, capsys):
    p = subprocess.run([sys.executable, SCRIPT, "--smoke", "--commit", "x"],
                       capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)
    assert p.returncode == 2 and "--out" in p.stderr
    monkeypatch.delenv("GIT_COMMIT", raising=False)
    monkeypatch.setattr(bench.run, "git_commit", lambda: None)
    assert bench.run.main(["--smoke", "--out", str(tmp_path)]) == 2
    assert "--commit SHA" in capsys.readouterr().err


def test_git_commit_names_the_checkout():
    sha = bench.run.git_commit()
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
    except Exception:
        pytest.skip("not a git checkout")
    assert sha is not None and sha.split("+")[0] == head


def test_case_table_gpu_profile():
    variants = ("row", "split")
    cases = registry.build_cases(registry.PROFILES["gpu"], variants, lambda V: "row")
    names = [c.name for c in cases]
    assert len(names) == len(set(names))
    for V in (32000, 151936):
        for v in variants:
            for inplace in (False, True):
                assert any(c.kind == "fused" and c.variant == v and c.inplace == inplace
                           and c.work.V == V for c in cases)  # fmt: skip
            assert any(c.kind == "kernel_fused" and c.variant == v and c.work.V == V
                       for c in cases)  # fmt: skip
        assert {"liger_fwd", "liger_grpo", "copy", "fwd"} <= {
            c.kind for c in cases if c.work is not None and c.work.V == V
        }
    w = cases[0].work
    assert (w.B, w.T, w.masked_tail) == (16, 1024, 100)
    # before the hidden-state section (the deadline reaches it): every V has a likelihood
    # case and one case has an upstream gradient != 1, all checking themselves
    head = cases[: [c.kind for c in cases].index("linear")]
    assert {c.work.V for c in head if c.mode == "likelihood" and c.check} == {32000, 151936}
    assert any(c.upstream != 1.0 and c.check for c in head)
    assert all(not c.inplace for c in head)
    # the hidden-state loss and its three peers at H = 896 and 2048, B16 x T1024, bf16
    lin = [c for c in cases if c.kind in registry.LINEAR_KINDS]
    for H in (896, 2048):
        assert {c.kind for c in lin if c.work.H == H} == set(registry.LINEAR_KINDS)
    assert {(c.work.B, c.work.T, c.work.dtype) for c in lin} == {(16, 1024, "bfloat16")}
    # timed cases check themselves or name a case that does
    for c in cases:
        if c.time and not c.check and c.kind != "copy":
            assert c.checked_by in names and next(x for x in cases if x.name == c.checked_by).check
    assert cases[-1].kind.startswith("compile")


def test_case_validation():
    w = registry.Workload(2, 2, 37)
    with pytest.raises(ValueError, match="unknown case kind"):
        registry.Case("x", "nope")
    with pytest.raises(ValueError, match="mode must be"):
        registry.Case("x", "fused", w, mode="maybe")
    with pytest.raises(ValueError, match="neither checks itself nor names"):
        registry.Case("x", "fused", w, check=False)
    with pytest.raises(TypeError, match="needs a LinearWorkload, got Workload"):
        registry.Case("x", "linear", w)
    with pytest.raises(TypeError, match="needs a Workload, got LinearWorkload"):
        registry.Case("x", "fused", registry.LinearWorkload(2, 2, 37, 8))


def test_ulp_and_grad_criterion():
    ref = torch.tensor([1.0, 1.5, -3.0, 2.0**-130, 0.0], dtype=torch.float64)
    u = checks.ulp(ref, "bfloat16")
    assert u.tolist()[:3] == [2.0**-7, 2.0**-7, 2.0**-6]
    assert u[3] == 2.0**-133 and u[4] == 2.0**-133
    g = torch.tensor([1.0, 1.5, -3.0], dtype=torch.float64)
    r = g + torch.tensor([2.0**-9, 0.0, 0.0], dtype=torch.float64)
    st = checks.GradStats("bfloat16", 0.125)
    st.add(g, r, g)  # same error as the yardstick everywhere
    assert st.result("x")["ok"]
    st = checks.GradStats("bfloat16", 0.125)
    st.add(g, r, r)  # yardstick exact: our 1/4 ulp error exceeds the 1/8 ulp slack
    res = st.result("x")
    assert not res["ok"] and res["elements_failing"] == 1
    assert res["first_failure"]["flat_index"] == 0
    st = checks.GradStats("bfloat16", 0.125)
    st.add(torch.tensor([float("nan")]), torch.tensor([0.0]), torch.tensor([float("nan")]))
    assert not st.result("x")["ok"]


def test_timing_record_on_cpu():
    t = bench.timing
    assert t.tensor_bytes((torch.zeros(3, 4), torch.zeros(5, dtype=torch.bfloat16), None)) == 58
    assert t.peak_extra(lambda: torch.zeros(2), None, cuda=False) is None
    rec = t.measure(t.TimingSpec(lambda: torch.zeros(8), floor=800, logits_bytes=64,
                                 flops=1e6), cuda=False)  # fmt: skip
    assert rec["ms"] > 0 and rec["GBps_vs_floor"] > 0 and rec["TFLOPs"] > 0
    assert "peak_extra_bytes" not in rec and "not a measurement" in rec["note"]


def _upstream_check(upstream, scale):
    """check_fused of torch's float32 gradient of ``upstream * L``, claimed as ``upstream *
    scale * L``'s."""
    d = bench.workloads.make_data(registry.Workload(2, 3, 11, dtype="float32", masked_tail=1,
                                                    answer_len=1), "cpu")  # fmt: skip
    g = checks.lowp_fused(d, 0, 2, "verifier", upstream) * scale
    return checks.check_fused(d, checks.Criteria(True), "verifier", g, upstream=upstream)[0]


def test_upstream_gradient_is_part_of_the_oracle():
    assert _upstream_check(0.25, 1.0)["ok"]
    assert not _upstream_check(0.25, 4.0)["ok"]  # the gradient of L, not of L / 4


# ------------------------------------------------------------------------ hidden states
def _standin_linear_loss(wrong=None):
    """A plain-torch ``fused_linear_sequence_loss`` (the API of kernels/ops.py): full fp32
    logits, autograd. ``wrong``: "answer_sign" flips the answer rows' coefficient, "bias" adds
    a constant to the logits of token 0 (its gradient goes wrong, values too)."""
    from kernels import ANSWER, RATIONALE

    def fn(hidden, weight, token_ids, layout, coefficients, *, normalizer=1.0, **kw):
        logits = hidden.float() @ weight.float().T
        if wrong == "bias":
            logits = logits + torch.nn.functional.one_hot(
                torch.zeros(len(logits), dtype=torch.long), logits.shape[1]) * 0.5
        lp = logits.log_softmax(-1).gather(-1, token_ids[:, None])[:, 0]
        seq, span = layout.seq_index(), layout.span
        B = layout.num_sequences
        z = torch.zeros(B).index_add(0, seq, torch.where(span == RATIONALE, lp, 0.0))
        y = torch.zeros(B).index_add(0, seq, torch.where(span == ANSWER, lp, 0.0))
        cz, cy = coefficients(y.detach()) if callable(coefficients) else coefficients
        if wrong == "answer_sign":
            cy = -cy
        loss = -(cz * z + cy * y).sum() / normalizer
        tok = torch.where(span != 0, lp, 0.0).detach()
        return SimpleNamespace(loss=loss, logp_z=z.detach(), logp_y=y.detach(), coef_z=cz,
                               coef_y=cy, token_logp=tok, entropy=None)  # fmt: skip

    return fn


@pytest.mark.parametrize("mode", ["verifier", "likelihood"])
@pytest.mark.parametrize("wrong", [None, "answer_sign", "bias"])
def test_linear_handler_checks_catch_wrong_losses(monkeypatch, mode, wrong):
    import kernels

    monkeypatch.setattr(kernels, "fused_linear_sequence_loss", _standin_linear_loss(wrong),
                        raising=False)  # fmt: skip
    lw = registry.LinearWorkload(3, 5, 29, 16, dtype="float32", masked_tail=1, answer_len=2)
    case = registry.Case("lin", "linear", lw, mode=mode)
    b = bench.handlers.Bench("cpu", True, peers_mod.load_peers(disabled=("liger", "trl", "cce")))
    row = bench.run.run_case(b, case)
    assert row["status"] == ("ok" if wrong is None else "fail"), row
    names = {c["check"] for c in row["checks"]}
    assert {"d_hidden vs float64 (normwise)", "d_weight vs float64 (normwise)", "logp_z vs "
            "float64", "logp_y vs float64", "token logp vs float64 (active rows)",
            "repeatable (bitwise: d_hidden, d_weight)"} == names  # fmt: skip
    assert row["H"] == 16 and row["timing"]["TFLOPs"] >= 0


def test_linear_handler_skips_until_the_loss_lands(monkeypatch):
    import kernels

    monkeypatch.delattr(kernels, "fused_linear_sequence_loss", raising=False)
    case = registry.Case("lin", "linear", registry.LinearWorkload(2, 3, 11, 4))
    b = bench.handlers.Bench("cpu", True, peers_mod.load_peers(disabled=("liger", "trl", "cce")))
    row = bench.run.run_case(b, case)
    assert row["status"] == "skipped" and "fused_linear_sequence_loss" in row["why"]


def test_check_linear_bf16_yardstick():
    """bf16 inputs: the float64 oracle against the chunked bf16 yardstick; the yardstick's own
    gradient passes, a gradient off by 3 % does not; row chunking does not change the oracle."""
    ld = bench.workloads.make_linear_data(registry.LinearWorkload(2, 4, 23, 8, masked_tail=1,
                                                                  answer_len=1), "cpu")
    _, z, y, dh, dw = checks._linear_pass(ld, "verifier", torch.bfloat16, 3)
    res = checks.check_linear(ld, "verifier", dh, dw, z, y, rows=3)
    assert all(r["ok"] for r in res), res
    res = checks.check_linear(ld, "verifier", dh * 1.03, dw, rows=5)
    assert [r["ok"] for r in res] == [False, True]
    a = checks._linear_pass(ld, "likelihood", torch.float64, 1)
    b = checks._linear_pass(ld, "likelihood", torch.float64, 8)
    for x, y_ in zip(a, b, strict=True):
        assert torch.allclose(x, y_, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------------ peers, kernel tests
def test_peer_wheel_loader(tmp_path):
    """A wheel is a zip: the loader unpacks the newest <prefix>-*.whl onto sys.path."""
    for ver, val in (("9.9.8", 0), ("9.9.9", 1)):
        with zipfile.ZipFile(tmp_path / f"cut_cross_entropy-{ver}-py3-none-any.whl", "w") as z:
            z.writestr("cut_cross_entropy/__init__.py",
                       f"def linear_cross_entropy(): return {val}\n")  # fmt: skip
    saved = list(sys.path)
    try:
        p = peers_mod.load_peer("cce", peers_mod.IMPORTERS["cce"], str(tmp_path))
        if "from cut_cross_entropy-9.9.9" in (p.version or ""):
            assert p.get("linear_cross_entropy")() == 1 and p.version.startswith("9.9.9")
        else:  # a real cut-cross-entropy is installed in this environment: it wins
            assert p.get("linear_cross_entropy") is not None
    finally:
        sys.path[:] = saved
        for m in [m for m in sys.modules if m.startswith("cut_cross_entropy")]:
            del sys.modules[m]
    p = peers_mod.load_peer("cce", lambda: 1 / 0, str(tmp_path / "empty"))
    assert p.get("linear_cross_entropy") is None and "pip install cut-cross-entropy" in p.why_not
    assert "not available" in p.describe() and p.reason("x").startswith("cce: not importable")
    off = peers_mod.load_peers(disabled=("liger", "trl", "cce"))
    assert all(v.why_not == "disabled (--no-peers)" for v in off.values())


def test_kernel_tests_record(tmp_path):
    t = tmp_path / "test_fake.py"
    t.write_text("import pytest\n\ndef test_a():\n    pass\n\ndef test_b():\n    assert 1 == 2\n\n"
                 "@pytest.mark.skip(reason='why not')\ndef test_c():\n    pass\n")
    out = tmp_path / "out"
    out.mkdir()
    alone = ("-o", "addopts=", "--rootdir", str(tmp_path))  # not this repository's pytest config
    rec = bench.correctness.run_kernel_tests([str(t)], str(out), 120, extra_args=alone)
    assert rec["returncode"] == 1 and not rec["ok"]
    assert rec["counts"] == {"tests": 3, "failures": 1, "errors": 0, "skipped": 1, "passed": 1}
    assert [f["test"].split("::")[-1] for f in rec["failed"]] == ["test_b"]
    assert rec["skipped"][0]["why"] == "why not"
    assert "1 failed" in rec["summary"] and (out / "kernel-tests.log").exists()
    rec = bench.correctness.run_kernel_tests([str(t) + "::test_a"], str(out), 120,
                                             extra_args=alone)
    assert rec["ok"] and rec["counts"]["passed"] == 1
    # each target in its own process, the counts summed
    rec = bench.correctness.run_kernel_tests([f"{t}::test_a", f"{t}::test_b"], str(out), 120,
                                             extra_args=alone)  # fmt: skip
    assert len(rec["runs"]) == 2 and rec["counts"]["tests"] == 2 and rec["returncode"] == 1
    slow = tmp_path / "test_slow.py"
    slow.write_text("import time\n\ndef test_slow():\n    time.sleep(60)\n")
    rec = bench.correctness.run_kernel_tests([str(slow)], str(out), 4, extra_args=alone)
    assert rec["returncode"] is None and not rec["ok"] and "timed out" in rec["summary"]


# ------------------------------------------------------------------------ dispatch candidate
def _result(rows, smoke=False):
    return {"meta": {"smoke": smoke, "gpu": "NVIDIA H200", "commit": "abc",
                     "date_utc": "2026-01-01T00:00:00Z"},
            "cases": rows}  # fmt: skip


def _fused(V, variant, ms, status="ok", inplace=False, mode="verifier", upstream=1.0):
    return {"kind": "fused", "V": V, "variant": variant, "inplace": inplace, "mode": mode,
            "upstream": upstream, "status": status, "timing": {"ms": ms}}  # fmt: skip


def _complete(times):
    """A verifier-mode out-of-place row for every fused variant at every V of ``times``
    ({V: {variant: ms}}; variants not named get 10 ms)."""
    from kernels.dispatch import FUSED_VARIANTS

    return [_fused(V, v, by.get(v, 10.0)) for V, by in times.items() for v in FUSED_VARIANTS]


def test_best_variants_and_rows():
    rows = [
        _fused(32000, "row", 1.0),
        _fused(32000, "multi", 0.9, status="fail"),  # failed a check: never chosen
        _fused(32000, "row_rev", 0.5, inplace=True),  # in place: not a dispatch candidate
        _fused(32000, "split", 0.4, mode="likelihood"),
        _fused(32000, "split_2pass", 0.3, upstream=0.25),
        _fused(151936, "split", 4.0),
        _fused(151936, "row", 5.0),
        _fused(151936, None, 3.0),  # the default row itself
    ]
    best = report.best_variants(_result(rows))
    assert best == {32000: ("row", 1.0, None), 151936: ("split", 4.0, ("row", 1.25))}
    assert report.dispatch_rows(best) == ((69727, "row"), (None, "split"))  # sqrt(32000*151936)
    assert report.dispatch_rows({32000: ("multi", 1), 151936: ("multi", 2)}) == ((None, "multi"),)
    with pytest.raises(ValueError, match="nothing to dispatch"):
        report.dispatch_rows({})
    # noise margin: the current choice stays unless beaten by more than the margin
    near = _result([_fused(32000, "row", 1.02), _fused(32000, "multi", 1.0)])
    assert report.best_variants(near, prefer=lambda V: "row", margin=0.03)[32000][0] == "row"
    assert report.best_variants(near, prefer=lambda V: "row", margin=0.01)[32000][0] == "multi"


def test_candidate_table_refuses_incomplete_runs(tmp_path, capsys):
    from kernels import dispatch

    times = {32000: {"row": 1.0, "multi": 1.5}, 151936: {"split": 4.0, "row": 5.0}}
    cut = _complete(times)
    cut[-1] = dict(cut[-1], status="skipped")  # the deadline cut the last variant at 151936
    del cut[-1]["timing"]
    assert report.dispatch_problems(_result(cut)) == ["V=151936 split_2pass: skipped"]
    with pytest.raises(report.DispatchNotReady, match="split_2pass: skipped.*--force"):
        report.candidate_table(_result(cut), "r.json")
    partial = [r for r in _complete(times) if r["variant"] != "row_rev"]  # --only
    assert len(report.dispatch_problems(_result(partial))) == 2
    forced = report.candidate_table(_result(cut), "r.json", force=True)
    assert forced.measured and "FORCED" in forced.provenance
    with pytest.raises(ValueError, match="smoke"):
        report.candidate_table(_result(_complete(times), smoke=True), "r.json")
    # the command: refuses (exit 2, nothing written), then --force writes
    res = tmp_path / "r.json"
    res.write_text(json.dumps(_result(cut)))
    argv = ["--dispatch-candidate", str(res), "--out", str(tmp_path / "o")]
    assert bench.run.main(argv) == 2 and "refused" in capsys.readouterr().err
    assert not (tmp_path / "o" / "dispatch_table.json").exists()
    assert bench.run.main([*argv, "--force"]) == 0
    assert "FORCED" in dispatch.load_table(str(tmp_path / "o" / "dispatch_table.json")).provenance


def test_candidate_table_file_is_what_kernels_dispatch_reads(tmp_path):
    from kernels import dispatch

    times = {32000: {"row": 1.0, "multi": 1.5}, 151936: {"split": 4.0, "row": 5.0}}
    path = tmp_path / "dispatch_table.json"
    rec = report.write_candidate(_result(_complete(times)), "r.json", str(path))
    t = dispatch.load_table(str(path))
    assert t.rows == ((69727, "row"), (None, "split")) and t.measured is True
    assert rec["rows"] == [[69727, "row"], [None, "split"]]
    assert "r.json" in t.provenance and "runner-up multi x1.500" in t.provenance
    assert "runner-up row x1.250" in t.provenance and "FORCED" not in t.provenance
    assert dispatch.choose_variant(32000, t.rows) == "row"
    assert dispatch.choose_variant(151936, t.rows) == "split"
    # within the noise margin the table in force keeps its choice (multi above 65536 now)
    times[151936] = {"split": 4.0, "multi": 4.08}
    again = report.candidate_table(_result(_complete(times)), "r2.json")
    assert again.rows == ((69727, "row"), (None, "multi")) and "within noise" in again.provenance
    # against a different table in force, the same numbers crown split
    other = report.candidate_table(_result(_complete(times)), "r2.json",
                                   current=((None, "row"),))  # fmt: skip
    assert other.rows[-1] == (None, "split")


# ------------------------------------------------------------------------ ratios, goals, summary
def test_goals_ratios_and_summary_on_gpu_like_results(capsys):
    """The GPU-only summary paths (ratios to the peers, copy bandwidth, goals, tables) on a
    synthetic result set: they never run in the smoke."""

    def row(kind, V, ms, variant=None, inplace=False, extra=0.001, status="ok", peer=False,
            H=None, extra_bytes=None):  # fmt: skip
        r = {"name": f"V={V} H={H} {kind} {variant} {inplace}", "kind": kind, "V": V,
             "variant": variant, "inplace": inplace, "mode": "verifier", "upstream": 1.0,
             "peer": peer, "status": status, "checks": [],
             "timing": {"ms": ms, "GBps_vs_floor": 1000.0 / ms,
                        "peak_extra_frac_of_logits": extra,
                        "peak_extra_bytes": extra_bytes}}  # fmt: skip
        if H is not None:
            r["H"] = H
        return r

    results = {"meta": {"smoke": False}, "errors": [], "tests": None, "cases": [
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
        row("linear", 151936, 30.0, H=896, extra=0.05, extra_bytes=400),
        row("trl_chunked", 151936, 40.0, H=896, peer=True, extra_bytes=500),
        row("liger_linear", 151936, 60.0, H=896, peer=True),
    ]}  # fmt: skip
    results["cases"][7]["variant_dispatched"] = "row"
    report.fill_ratios(results)
    t = {(c["kind"], c["V"], c["variant"], c["inplace"]): c["timing"] for c in results["cases"]}
    assert t[("fwd", 32000, None, False)]["ratio_to_liger"] == pytest.approx(1.02)
    assert t[("fused", 32000, "row", False)]["ratio_to_liger"] == pytest.approx(0.75)
    assert t[("fused", 32000, "row", True)]["ratio_to_liger"] == pytest.approx(1.3 / 1.9)
    assert t[("fwd", 32000, None, False)]["frac_of_copy_bandwidth"] == pytest.approx(0.5 / 1.02)
    lin = t[("linear", 151936, None, False)]
    assert lin["ratio_to_trl_chunked"] == pytest.approx(0.75)
    assert lin["ratio_to_liger_linear"] == pytest.approx(0.5) and "ratio_to_liger" not in lin
    goals = {g["goal"]: g for g in report.goals(results, [32000, 151936], [(151936, 896),
                                                                           (151936, 2048)])}
    g = goals["V=32000 forward: ours sequence_logprobs / Liger fused_selective_log_softmax"]
    assert g["status"] == "met" and g["value"] == pytest.approx(1.02)
    g = [v for k, v in goals.items() if k.startswith("V=32000 forward+backward: best")][0]
    assert g["status"] == "missed" and g["value"] == pytest.approx(1.5 / 1.9)
    assert "best variant row" in g["detail"] and "default (row)" in g["detail"]
    g = [v for k, v in goals.items() if k.startswith("V=151936 forward+backward: best")][0]
    assert g["status"] == "not measured"  # no Liger fused loss at that V
    g = [v for k, v in goals.items() if k.startswith("V=151936 peak extra")][0]
    assert g["status"] == "missed" and g["value"] == pytest.approx(0.02)
    g = [v for k, v in goals.items() if k.startswith("H=896") and "TRL" in k and "memory" not in k]
    assert g[0]["status"] == "met" and g[0]["value"] == pytest.approx(0.75)
    g = [v for k, v in goals.items() if k.startswith("H=896 V=151936 peak extra memory: ours")]
    assert g[0]["status"] == "met" and g[0]["value"] == pytest.approx(0.8)
    assert all(v["status"] == "not measured" for k, v in goals.items() if k.startswith("H=2048"))
    results["dispatch"] = {"candidate_file": "/x/dispatch_table.json", "rows": [[None, "row"]]}
    report.print_summary(results, list(goals.values()))
    out = capsys.readouterr().out
    assert "MISSED" in out and "MET" in out and "NOT MEASURED" in out and "candidate" in out
    assert "0.750" in out  # the ratio column
    for c in results["cases"]:
        c.setdefault("wall_s", 0.1)
        assert c["name"] in report.progress_line(c)
    smoke = {"meta": {"smoke": True}, "cases": [row("fwd", 32000, 1.0),
                                                row("liger_fwd", 32000, 1.0, peer=True)]}
    report.fill_ratios(smoke)
    assert "ratio_to_liger" not in smoke["cases"][0]["timing"]


class _FakeLigerLinearGRPO:
    """LigerFusedLinearGRPOLoss's call convention in plain torch (on-policy, beta 0):
    ``loss_type="grpo"`` averages each sequence's tokens, then the batch; "padded" (wrong)
    divides by every position of the batch, padding included."""

    def __init__(self, beta, use_ref_model, loss_type, temperature):
        assert beta == 0.0 and not use_ref_model and temperature == 1.0
        self.loss_type = loss_type

    def __call__(self, x, weight, ids, mask, adv):
        lp = (x.float() @ weight.float().T).log_softmax(-1).gather(-1, ids[..., None])[..., 0]
        per_tok = -adv[:, None] * torch.exp(lp - lp.detach()) * mask
        if self.loss_type == "grpo":
            loss = (per_tok.sum(-1) / mask.sum(-1).clamp(min=1)).sum() / x.shape[0]
        else:
            loss = per_tok.sum() / mask.numel()
        return loss, [torch.zeros(())]


def _fake_cce(e, c, targets, reduction="mean"):
    assert reduction == "none"
    lp = (e.float() @ c.float().T).log_softmax(-1)
    nll = -lp.gather(-1, targets.clamp(min=0)[:, None])[:, 0]
    return torch.where(targets == -100, 0.0, nll)


@pytest.mark.parametrize("kind,entry,ok", [
    ("liger_linear", lambda: _FakeLigerLinearGRPO, True),
    ("liger_linear", lambda: lambda **kw: _FakeLigerLinearGRPO(**{**kw, "loss_type": "padded"}),
     False),
    ("cce", lambda: _fake_cce, True),
    ("cce", lambda: lambda e, c, t, reduction: _fake_cce(e, c, t, reduction) * 1.05, False),
])  # fmt: skip
def test_hidden_state_peer_handlers_compute_our_loss(kind, entry, ok):
    """The Liger and cut-cross-entropy handlers' glue (call convention, masks, GRPO weights)
    against plain-torch stand-ins: the right loss passes the float64 checks, a wrong
    normalisation fails them."""
    key = {"liger_linear": ("liger", "LigerFusedLinearGRPOLoss"),
           "cce": ("cce", "linear_cross_entropy")}[kind]  # fmt: skip
    peers = peers_mod.load_peers(disabled=("liger", "trl", "cce"))
    peers[key[0]] = peers_mod.Peer(key[0], {key[1]: entry()}, "fake")
    lw = registry.LinearWorkload(3, 5, 29, 16, dtype="float32", masked_tail=1, answer_len=2)
    row = bench.run.run_case(bench.handlers.Bench("cpu", True, peers),
                             registry.Case("peer", kind, lw))  # fmt: skip
    assert row["status"] == ("ok" if ok else "fail"), row
    assert [c["check"] for c in row["checks"]] == ["d_hidden vs float64 (normwise)",
                                                   "d_weight vs float64 (normwise)"]


def test_split_fallback_rule_and_ran_as():
    """The launcher's split -> split_2pass rule (more chunks per row than SMs) and the
    benchmark's record of it."""
    from kernels.triton import fused_split, split_falls_back

    bv = 1024
    V = 151936  # 149 chunks of 1024
    assert fused_split.split_max_chunks(V, bv) == 149
    assert split_falls_back(V, 132, bv) and not split_falls_back(V, 149, bv)
    assert not split_falls_back(V, None, bv)  # not a GPU: never
    assert not split_falls_back(V, 132, 4096)  # 38 chunks
    ran_as = bench.handlers.ran_as
    assert ran_as("split", V, "cpu", bv) == "split"
    assert ran_as("multi", V, "cpu") == "multi" and ran_as(None, V, "cpu") is None
