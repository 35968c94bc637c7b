"""Runner, cache, CLI and censoring: a run that never escapes is kept as censored (README,
"Simulators"), and the cache never recomputes or overwrites silently."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sims.analysis import escape_summary, fit_slope
from sims.experiments import Experiment
from sims.runner import ResultCache, load_table, run_experiment, setting_hash

ROOT = Path(__file__).resolve().parents[1]


def _toy(calls: list, fail_after: int | None = None) -> Experiment:
    """A tiny experiment whose result is a pure function of its setting; counts its calls."""

    def settings(quick):
        return [
            {"id": f"toy/x={x}", "x": x, "seed": 0, "n_seeds": 1, "group": x % 2}
            for x in range(3 if quick else 6)
        ]

    def run_batch(batch):
        if fail_after is not None and len(calls) >= fail_after:
            raise KeyboardInterrupt("simulated interruption")
        calls.append([s["id"] for s in batch])
        return [{"y": np.array([s["x"] ** 2])} for s in batch]

    return Experiment(
        "toy",
        "toy",
        1,
        settings,
        lambda s: (s["group"],),
        run_batch,
        lambda table: [{"sum": int(sum(r["y"][0] for r in table))}],
    )


def test_cache_reuses_results_and_never_overwrites_silently(tmp_path):
    calls = []
    exp = _toy(calls)
    table = run_experiment(exp, out=tmp_path, progress=False)
    assert sorted(r["y"][0] for r in table) == [0, 1, 4, 9, 16, 25]
    assert len(calls) == 2  # two batch keys
    run_experiment(exp, out=tmp_path, progress=False)
    assert len(calls) == 2  # all cached
    s = exp.settings(False)[0]
    h = setting_hash("toy", 1, s)
    cache = ResultCache(tmp_path, "toy")
    with pytest.raises(FileExistsError, match="overwrite"):
        cache.save(h, s, {"y": np.array([99])}, {}, overwrite=False)
    side = json.loads((tmp_path / "toy" / f"{h}.json").read_text())
    for key in ("settings", "seed", "package_version", "git_commit", "hash", "id"):
        assert key in side
    run_experiment(exp, out=tmp_path, overwrite=True, progress=False)
    assert len(calls) == 4
    assert not list((tmp_path / "toy").glob("*.tmp"))


def test_interrupted_sweep_resumes_without_recomputing(tmp_path):
    calls = []
    with pytest.raises(KeyboardInterrupt):
        run_experiment(_toy(calls, fail_after=1), out=tmp_path, progress=False)
    assert len(calls) == 1
    done = set(calls[0])
    with pytest.raises(FileNotFoundError, match="no results"):
        load_table(tmp_path, _toy([]))
    calls2 = []
    run_experiment(_toy(calls2), out=tmp_path, progress=False)
    assert len(calls2) == 1 and not (set(calls2[0]) & done)


def test_setting_hash_depends_on_every_field():
    s = {"id": "a", "x": 1, "seed": 0}
    h = setting_hash("e", 1, s)
    assert h != setting_hash("e", 1, {**s, "seed": 1})
    assert h != setting_hash("e", 2, s)
    assert h == setting_hash("e", 1, dict(reversed(list(s.items()))))


@settings(max_examples=40)
@given(times=st.lists(st.floats(1, 1e6), min_size=1, max_size=30), data=st.data())
@example(times=[5.0, 100.0, 100.0], data=None)
def test_censoring_never_drops_runs(times, data):
    budget = max(times)
    if data is None:
        cens = [False, True, True]
    else:
        cens = data.draw(st.lists(st.booleans(), min_size=len(times), max_size=len(times)))
    t = [budget if c else x for x, c in zip(times, cens, strict=False)]
    s = escape_summary(t, cens)
    assert s["n"] == len(times) and s["n_censored"] == sum(cens)
    n_unc = len(times) - sum(cens)
    assert s["median_censored"] == (n_unc < len(times) // 2 + 1)
    assert s["median"] <= budget


def test_fit_excludes_censored_medians_and_counts_them():
    fit = fit_slope(
        [1e-2, 1e-3, 1e-4],
        [[100.0, 110], [1000.0, 1100], [5e3, 5e3]],
        [[False, False], [False, False], [True, True]],
    )
    assert fit["n_excluded"] == 1 and fit["n_censored"] == 2 and fit["n_points"] == 2
    assert fit["slope"] == pytest.approx(1.0, abs=1e-9)


def test_cli_list_and_json_summary(tmp_path):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "sims", "list"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=True,
    ).stdout
    for name in (
        "escape_time",
        "sampled_escape",
        "training_curves",
        "label_noise",
        "estimator_bias",
        "grpo_q_axis",
    ):
        assert name in out
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "sims",
            "run",
            "grpo_q_axis",
            "--quick",
            "--json",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=True,
    )
    recs = json.loads(res.stdout)
    assert recs
    for r in recs:
        for key in (
            "experiment",
            "regime",
            "model",
            "estimator",
            "q",
            "M",
            "slope",
            "slope_ci",
            "theory_slope",
            "n_censored",
        ):
            assert key in r
        assert r["regime"] in ("flow", "gd", "sampled_verifier", "sampled_likelihood")
        assert len(r["slope_ci"]) == 2
    bad = subprocess.run(
        [sys.executable, "-m", "sims", "run", "nope"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert bad.returncode != 0 and "unknown experiment" in bad.stderr


def test_text_summary_names_experiment_distinguishes_rows_and_explains_nan():
    from sims.__main__ import summary_lines

    base = {"regime": "flow", "model": "two_label", "estimator": "exact", "q": 0.5, "M": None}
    recs = [
        {**base, "eps": 0.1, "lr": 1.0, "slope": 0.03, "slope_ci": [0.0, 0.1], "n_censored": 0},
        {**base, "eps": 0.2, "lr": 1.0, "slope": 0.02, "slope_ci": [0.0, 0.1], "n_censored": 0},
        {**base, "eps": 0.3, "lr": 1.0, "slope": math.nan, "slope_ci": [math.nan] * 2,
         "n_censored": 3, "n_points": 1},
        {**base, "q": 1.0, "eps": 0.3, "lr": 1.0, "slope": math.nan,
         "slope_ci": [math.nan] * 2, "n_censored": 0, "slope_note": "a stated reason"},
        {"regime": "flow", "no": "slope here"},
    ]
    lines = summary_lines("label_noise", "the noise experiment", recs)
    assert lines[0].startswith("== label_noise: the noise experiment")
    rows = lines[2:]
    assert len(rows) == 4 and len(set(rows)) == 4
    assert "eps" in lines[1] and "lr" not in lines[1]  # only the field that tells rows apart
    assert "0.2" in rows[1] and "0.3" in rows[2]
    assert "nan: too few points to fit (1 usable, 2 needed)" in rows[2]
    assert "nan: a stated reason" in rows[3]
    assert "nan:" not in rows[0]
    for r in recs[:4]:  # the text never lies about which field differs
        assert sum(str(r["eps"]) in row for row in rows) >= 1
