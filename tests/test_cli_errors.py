"""The command lines' rough edges: one-line errors that name the option typed, paths the system
refuses, Ctrl-C (one line, and the sweep resumes), and summaries that print each line once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import paper_figs.__main__ as figs_cli
import sims.__main__ as sims_cli
from tsallis.__main__ import main as table_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("argv", "typed", "words"),
    [
        (["--delta", "1"], "--delta", "escape threshold must lie in (0, 1), got 1"),
        (["--del", "1"], "--del", "escape threshold must lie in (0, 1)"),
        (["--delta=nan"], "--delta", "got nan"),
        (["--p0", "0.6"], "--p0", "p0 must lie in (0, delta = 0.5), got 0.6"),
        (["--delta", "0.3", "--p0", "0.4"], "--p0", "(0, delta = 0.3), got 0.4"),
        (["--q", "0", "2"], "--q", "q must lie in [0, 1], got 2"),
    ],
)
def test_table_errors_name_the_option_typed(argv, typed, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        table_main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"python -m tsallis: error: {typed}: ") and words in err, err
    assert "p_end" not in err and "p_start" not in err  # the internal names never leak


@pytest.mark.parametrize("bad", ["/proc/x", "/sys/x"])
def test_paths_the_system_refuses_are_one_line_errors(bad, monkeypatch, capsys):
    if not Path(bad).parent.is_dir():
        pytest.skip(f"{Path(bad).parent} does not exist on this system")
    monkeypatch.setattr(sims_cli, "run_experiment", lambda *a, **k: pytest.fail("work started"))
    assert sims_cli.main(["run", "grpo_q_axis", "--quick", "--out", bad]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and bad in err and "cannot" in err, err
    for flag in ("--out", "--results"):
        assert figs_cli.main(["grpo_q_axis", "--quick", flag, bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and flag in err and bad in err, err


def test_interrupt_in_process_is_one_line(tmp_path, monkeypatch, capsys):
    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sims_cli, "run_experiment", interrupted)
    assert sims_cli.main(["run", "grpo_q_axis", "--quick", "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "interrupted" in err and "resume" in err, err


def test_paper_figs_interrupt_is_one_line(tmp_path, monkeypatch, capsys):
    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(figs_cli.importlib, "import_module", interrupted)
    argv = ["escape_time", "--quick", "--results", str(tmp_path)]
    assert figs_cli.main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "interrupted" in err and str(tmp_path) in err, err


def _sims(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "sims", "run", *args, "--no-progress"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw,
    )  # fmt: skip


def test_ctrl_c_is_one_line_and_the_sweep_resumes(tmp_path):
    """SIGINT (what Ctrl-C sends) after the first settings are committed: exit 130, one line
    naming the folder, no traceback; the same command then finishes the sweep, and its summary
    equals that of a run that was never interrupted."""
    out = tmp_path / "res"
    proc = _sims(["escape_time", "--quick", "--out", str(out)])
    deadline = time.monotonic() + 120
    while not list((out / "escape_time").glob("*.npz")) and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.skip("the sweep finished before it could be interrupted")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the sweep finished before the signal arrived")
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stdout == ""
    last = stderr.strip().splitlines()[-1]
    assert "interrupted" in last and str(out / "escape_time") in last and "resume" in last
    kept = len(list((out / "escape_time").glob("*.npz")))
    assert 0 < kept < 120  # escape_time's quick preset has 120 settings

    resumed = _sims(["escape_time", "--quick", "--out", str(out)])
    r_out, r_err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, r_err
    assert f"{120 - kept} of 120 settings missing" in r_err
    fresh = _sims(["escape_time", "--quick", "--out", str(tmp_path / "fresh")])
    f_out, f_err = fresh.communicate(timeout=300)
    assert fresh.returncode == 0, f_err
    assert r_out == f_out and "slope" in r_out


def _count_repeats(lines):
    seen: dict = {}
    for line in lines:
        seen[line] = seen.get(line, 0) + 1
    return {k: v for k, v in seen.items() if v > 1}


def test_summary_prints_each_series_once():
    """lm_cold_start's analysis gives one record per measured point, each carrying its series'
    slope: the summary collapses them to one row per series."""
    base = {
        "experiment": "lm_cold_start", "part": "sgd", "model": "tiny", "mode": "likelihood",
        "estimator": "garl_rloo", "M": 8, "slope_ci": [0.1, 0.3], "n_censored": 0,
    }  # fmt: skip
    recs = [
        {**base, "q": q, "label": f"q={q}", "p0": p0, "p0_target": p0, "median_steps": s,
         "slope": slope}
        for q, slope in ((0.0, 0.8), (1.0, 0.05))
        for p0, s in ((1e-2, 20.0), (1e-3, 50.0), (1e-4, 90.0))
    ]  # fmt: skip
    lines = sims_cli.summary_lines("lm_cold_start", "desc", recs)
    assert not _count_repeats(lines)
    assert sum("slope=0.800" in line for line in lines) == 1
    assert sum("slope=0.050" in line for line in lines) == 1


def test_threshold_summary_without_json():
    """adam_threshold's records carry no slope: the text summary is the q* table."""
    rec = {
        "experiment": "adam_threshold", "record": "q_star", "model": "sigmoid",
        "adam_eps": 1e-8, "p0": 1e-30, "q_star_measured": 0.7, "q_below": 0.6,
        "q_star_predicted": 0.734, "q_star_budget": 0.67, "prediction_in_cell": False,
        "prediction_gap": 0.034, "budget_in_cell": True, "fastest_q": 0.75,
    }  # fmt: skip
    lines = sims_cli.summary_lines("adam_threshold", "desc", [rec, {"record": "escape"}])
    assert lines[0] == "== adam_threshold: desc"
    row = next(line for line in lines if "sigmoid" in line)
    assert "(0.6, 0.7]" in row and "0.73 ✗" in row and "0.67" in row and "0.75" in row
    assert any("1 escape records" in line for line in lines)
