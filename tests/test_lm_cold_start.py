"""The ``lm_cold_start`` quick preset as a test of its findings (not only that it runs).

Shares the results cache of the figure test, so the preset is computed once per session.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sims.experiments import get_experiment
from sims.runner import run_experiment

REQUIRED = (
    "experiment", "model", "mode", "estimator", "optimizer", "adam_eps", "q", "p0", "M",
    "median_steps", "n_runs", "n_censored",
)  # fmt: skip


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    results = tmp_path_factory.getbasetemp() / "sims_quick_results"
    exp = get_experiment("lm_cold_start")
    return exp.analyze(run_experiment(exp, quick=True, out=results, progress=False))


def _pts(records, **cond):
    return [r for r in records if all(r.get(k) == v for k, v in cond.items())]


def test_records_carry_the_fields(records):
    pts = [r for r in records if r["part"] != "curve"]
    assert pts
    for r in pts:
        for k in REQUIRED:
            assert k in r, k
        assert r["experiment"] == "lm_cold_start"
        assert (r["adam_eps"] is None) == (r["optimizer"] == "sgd")
        assert r["n_runs"] == len(r["steps"])  # censored runs are kept, never dropped
        assert 0 <= r["n_censored"] <= r["n_runs"]
        assert r["median_steps"] <= r["budget"]
        # the bias sets p0: measured within 0.2 decades of the target
        assert abs(math.log10(r["p0"]) - math.log10(r["p0_target"])) < 0.2


def test_sgd_slopes_are_ordered_by_q(records):
    """Matched SGD step size, likelihood mode: the escape exponent falls as q rises (flow: 1-q);
    q = 0 is close to the flow's 1."""
    slope = {r["q"]: r["slope"] for r in _pts(records, part="sgd")}
    assert 0.5 < slope[0.0] < 1.4
    assert slope[0.0] > slope[0.5] + 0.15
    assert slope[0.5] > slope[1.0]
    assert all(np.isfinite(v) for v in slope.values())


def test_adam_threshold_side_at_the_smallest_p0(records):
    """Adam, ε = 1e-8, p0 = 1e-30 (q* ≈ 0.73): q ≤ 0.5 stall (every run censored), q = 0.75 and
    q = 1 escape (no run censored), each on the predicted side of q*."""
    pts = _pts(records, part="adam", estimator="garl_rloo", schedule=None)
    p_min = min(r["p0_target"] for r in pts)
    assert p_min <= 1e-29
    low = [r for r in pts if r["p0_target"] == p_min]
    assert {r["q"] for r in low} == {0.0, 0.25, 0.5, 0.75, 1.0}
    for r in low:
        assert 0.6 < r["q_star"] < 0.85
        assert r["predicted_escape"] == (r["q"] > r["q_star"])
        if r["q"] <= 0.5:
            assert r["n_censored"] == r["n_runs"], r
        else:
            assert r["n_censored"] == 0, r
        assert r["escaped"] == r["predicted_escape"]


def test_sft_then_rlvr_escapes_where_q0_stalls(records):
    pts = _pts(records, part="adam", estimator="garl_rloo")
    p_min = min(r["p0_target"] for r in pts)
    sched = [r for r in pts if r["schedule"] and r["p0_target"] == p_min]
    plain = [r for r in pts if r["schedule"] is None and r["q"] == 0.0 and r["p0_target"] == p_min]
    assert sched and plain
    assert sched[0]["n_censored"] == 0 and plain[0]["n_censored"] == plain[0]["n_runs"]


def test_curves_and_monitor(records):
    curves = [r for r in records if r["part"] == "curve"]
    labels = {r["label"] for r in curves}
    assert {"grpo", "garl_rloo q=0.75", "paft q=1"} <= labels
    for r in curves:
        lp = np.array(r["curve"]["log10_P"], dtype=float)
        assert lp[0] < -25  # the cold start
        mon = np.array([np.nan if v is None else v for v in r["curve"]["monitor"]], dtype=float)
        if r["estimator"] == "garl_rloo":  # max_m c_m / M^q lies in [0, 1]
            fin = mon[np.isfinite(mon)]
            assert np.all((fin >= -1e-9) & (fin <= 1 + 1e-9))
