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


def test_every_seed_is_reported_with_its_outcome(records):
    """Each point lists all its seeds; the collapse flag follows its definition (escaped, then
    below its own p0 or more than COLLAPSE_DECADES below its running peak), checked here from
    the per-seed numbers."""
    from sims.experiments.lm_cold_start import COLLAPSE_DECADES

    for r in (r for r in records if r["part"] != "curve"):
        seeds = r["seeds"]
        assert len(seeds) == r["n_runs"] == len(r["steps"])
        assert [d["seed"] for d in seeds] == list(range(len(seeds)))
        assert sum(d["censored"] for d in seeds) == r["n_censored"]
        for d, t in zip(seeds, r["steps"], strict=True):
            assert (d["escape_step"] is None) == d["censored"]
            if not d["censored"]:
                assert d["escape_step"] == t
        if r["part"] != "adam":  # frozen at the escape: the post-escape phase is not observed
            assert r["n_collapsed"] is None
            assert all(d["collapsed"] is None for d in seeds)
            continue
        assert r["n_collapsed"] == sum(d["collapsed"] for d in seeds)
        for d in seeds:
            assert d["final_log10_P"] is not None and d["peak_log10_P"] is not None
            if d["censored"]:
                assert not d["collapsed"] and d["min_log10_P_after_escape"] is None
                assert d["peak_log10_P"] < math.log10(r["delta"])
                continue
            assert d["peak_log10_P"] >= math.log10(r["delta"])
            low = d["min_log10_P_after_escape"]
            assert low <= d["final_log10_P"]
            if d["collapsed"]:  # necessary: some post-escape step below max(p0, peak - 10)
                assert low < max(d["log10_p0"], d["peak_log10_P"] - COLLAPSE_DECADES)
            # sufficient: below its p0, or 10 decades below δ (the running peak after the
            # escape is at least δ)
            if low < d["log10_p0"] or low < math.log10(r["delta"]) - COLLAPSE_DECADES:
                assert d["collapsed"]

def test_curve_records_carry_every_seed(records):
    pts = {(r["label"], r["adam_eps"], r["p0"]): r for r in records if r["part"] == "adam"}
    for c in (r for r in records if r["part"] == "curve"):
        rows = c["curve"]["log10_P_seeds"]
        assert len(rows) == c["n_runs"] == len(c["collapsed"])
        assert all(len(row) == len(c["curve"]["step"]) for row in rows)
        med = np.median(np.array(rows, dtype=float), axis=0)
        np.testing.assert_allclose(med, c["curve"]["log10_P"], atol=1e-12)
        point = pts[(c["label"], c["adam_eps"], c["p0"])]
        assert c["collapsed"] == [d["collapsed"] for d in point["seeds"]]
        assert c["escape_steps"] == [d["escape_step"] for d in point["seeds"]]
        for row, d in zip(rows, point["seeds"], strict=True):
            assert row[-1] == pytest.approx(d["final_log10_P"])


def test_collapse_definition_on_synthetic_curves():
    """seed_outcomes on hand-made log10 P̂ curves (escape threshold log10 δ ≈ -1.3)."""
    from sims.experiments.lm_cold_start import seed_outcomes

    lp = np.array([
        [-30.0, -20.0, -1.0, -0.9, -40.0, -1.0],  # escapes at 2, falls below p0, recovers
        [-30.0, -30.0, -30.0, -30.0, -30.0, -30.0],  # censored: never a collapse
        [-6.0, -1.0, -1.0, -3.0, -2.0, -1.0],  # plateau noise of 2 decades: no collapse
        [-6.0, -1.0, -1.0, -7.0, -2.0, -1.0],  # below its own p0 (1e-6)
        [-30.0, -1.0, -1.0, -11.5, -1.0, -1.0],  # 10.5 decades below its peak, above p0
        [-30.0, -1.0, -1.0, -10.5, -1.0, -1.0],  # 9.5 decades: no collapse
        [-30.0, -25.0, -40.0, -1.0, -1.0, -1.0],  # deep dip before the escape only: none
        [-30.0, -20.0, -10.0, -5.0, -1.0, -np.inf],  # escapes at the 4th step, underflows
    ])  # fmt: skip
    p0 = np.array([-30.0, -30.0, -6.0, -6.0, -30.0, -30.0, -30.0, -30.0])
    steps = np.array([2, 5, 1, 1, 1, 1, 3, 4])
    cens = np.array([False, True, False, False, False, False, False, False])
    out = seed_outcomes(lp, p0, steps, cens)
    assert out["collapsed"].tolist() == [True, False, False, True, True, False, False, True]
    final = [-1.0, -30.0, -1.0, -1.0, -1.0, -1.0, -1.0, -np.inf]
    np.testing.assert_array_equal(out["final"], final)
    np.testing.assert_array_equal(out["peak"], [-0.9, -30.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0])
    assert np.isnan(out["min_after"][1])
    assert out["min_after"][0] == -40.0 and out["min_after"][6] == -1.0
    assert out["min_after"][7] == -np.inf
    # the threshold is a parameter: at 9 decades the 9.5-decade fall counts
    assert seed_outcomes(lp, p0, steps, cens, decades=9.0)["collapsed"][5]
    # a run frozen at its escape (NaN afterwards) has no observed post-escape phase
    frozen = np.array([[-30.0, -10.0, -1.0, np.nan, np.nan]])
    o = seed_outcomes(frozen, np.array([-30.0]), np.array([2]), np.array([False]))
    assert not o["collapsed"][0] and np.isnan(o["min_after"][0]) and o["final"][0] == -1.0


@pytest.mark.parametrize(
    "kw, err",
    [
        ({"log10_p": np.zeros(3)}, ValueError),
        ({"log10_p0": np.zeros(3)}, ValueError),
        ({"steps": np.array([0, 9])}, ValueError),
        ({"steps": np.array([0.0, 1.0])}, ValueError),
        ({"censored": np.array([0, 1])}, TypeError),
        ({"decades": 0.0}, ValueError),
    ],
)
def test_collapse_definition_rejects_bad_input(kw, err):
    from sims.experiments.lm_cold_start import seed_outcomes

    args = {
        "log10_p": np.full((2, 4), -1.0), "log10_p0": np.array([-6.0, -6.0]),
        "steps": np.array([1, 3]), "censored": np.array([False, True]),
    }  # fmt: skip
    args.update(kw)
    with pytest.raises(err):
        seed_outcomes(**args)


def test_answer_split_is_exact_and_content_at_chance_at_the_escape():
    """format · content is p(y*|x,z) (checked against the training loop's own estimate of P on
    the same samples), and at the escape (q = 1, p0 = 1e-12, two seeds) the content part is at
    chance, 1/9: the escape is the answer format only."""
    from sims.experiments import lm_cold_start as lm
    from sims.experiments.lm_cold_start import answer_split, escape_anatomy
    from sims.transformer import ModelSpec, Task, bias_for_p0, estimate_p, init_params

    task, spec = Task(**lm.TASK), ModelSpec(**lm.SPEC)
    keys = np.array([3, 4], dtype=np.int64)
    params = init_params(task, spec, keys, np.full(2, bias_for_p0(task, 1e-3)))
    split = answer_split(params, task, spec, keys, samples_per_prompt=8)
    ref = estimate_p(params, task, spec, keys, samples_per_prompt=8) / math.log(10.0)
    np.testing.assert_allclose(split["log10_P"], ref, atol=1e-9)
    assert np.all((split["format"] > 0) & (split["format"] <= 1))
    rows = [d for d in escape_anatomy(quick=True, qs=(1.0,)) if d["p0"] == 1e-12]
    assert len(rows) == 2 and all(d["escape_step"] is not None for d in rows)
    for d in rows:
        assert abs(d["content"] - 1 / 9) < 0.005, d  # chance; learning the digits would lift it
        assert d["log10_P"] > math.log10(lm.DELTA)
    with pytest.raises(ValueError):
        answer_split(params, task, spec, keys, samples_per_prompt=0)
