"""The table1 experiment's quick preset (the 'cold' question set, one seed; the 'reachable' set,
GARL q = 0.25, three seeds), with assertions on what it establishes; the analysis helpers on
fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("trl")

from sims.experiments import get_experiment  # noqa: E402
from sims.experiments.table1 import bootstrap_ci, settings, t_ci  # noqa: E402
from sims.runner import run_experiment  # noqa: E402


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "sims_quick_results"  # shared with the figures
    exp = get_experiment("table1")
    return exp.analyze(run_experiment(exp, quick=True, out=root, progress=False))


def _run(recs, method, task="cold"):
    return next(r for r in recs if r["part"] == "run" and r["method"] == method
                and r["task"] == task)  # fmt: skip


def _base(recs, task):
    return {r["split"]: r for r in recs if r["part"] == "base" and r["task"] == task}


def test_base_model_knows_the_format_not_the_content(records):
    base = _base(records, "cold")
    assert set(base) == {"train", "heldout"}
    for r in _base(records, "reachable").values():
        assert r["F0"] > 0.9  # the reachable set's base knows the format too
    for r in base.values():
        assert r["p0_ci"][0] <= r["p0"] <= r["p0_ci"][1]
        assert r["F0"] * r["C0"] == pytest.approx(r["p0"])
        assert r["F0"] > 0.5  # the answer alphabet at the answer slot: format known
        # content below chance: the base confidently answers with the 2-hop entity
        assert r["C0"] < r["content_chance"]
        assert r["p0"] < 0.02 and r["majority_at_k"] == 0.0


def test_grpo_stalls_where_likelihood_mode_moves(records):
    grpo = _run(records, "GRPO")
    assert grpo["frac_stalled_first10"] >= 0.7
    for m in ("GARL q=1",):
        r = _run(records, m)
        assert r["frac_stalled_mean"] == 0.0  # likelihood weights are never all zero
        p = r["curves"]["train_log10_P"]
        assert max(p[-5:]) - p[0] > 1.0  # training P leaves the cold start by > 1 decade
        assert r["escape_step"] is not None


def test_cold_start_escape_is_memorisation_in_the_quick_preset(records):
    """What the quick preset establishes on the 'cold' questions: the likelihood-mode runs fit
    the training questions' answers, and the held-out questions stay unanswered (the rationale
    never grows the third hop)."""
    for m in ("GARL q=1",):
        r = _run(records, m)
        assert r["train_pass_at_1"] - r["heldout_pass_at_1"] > 0.3
        assert r["heldout_chain_written"] < 0.1


def test_reachable_set_learns_the_hop_on_held_out_questions(records):
    """On the 'reachable' questions (the base writes the three correct hops and often a
    fourth) GARL q = 0.25 learns where to stop, and the answer follows on questions it never
    trained on: a seed ends with held-out majority@8 >= 0.5 (4 of 8 held-out questions; the
    base answers 1 of 8) and held-out pass@1 >= 3x the base's and >= 10x content chance
    (1/32), writing the correct chain.  Not every seed does: over seeds 0-9 (measured offline,
    docs/experiments/table1.md) 7 of 10 end at 0.5-1.0 and 3 collapse to 0-0.125, so one of the
    three seeds is asked, not all."""
    base = _base(records, "reachable")["heldout"]
    seeds = [r for r in records if r["part"] == "run" and r["task"] == "reachable"]
    assert [r["seed"] for r in seeds] == [0, 1, 2]
    assert all(r["method"] == "GARL q=0.25" and r["escape_step"] is not None for r in seeds)
    best = max(seeds, key=lambda r: r["heldout_majority_at_k"])
    assert best["heldout_majority_at_k"] >= max(0.5, base["majority_at_k"] + 3 / 8)
    assert best["heldout_pass_at_1"] >= max(3 * base["pass_at_1"], 10 * base["content_chance"])
    assert best["heldout_chain_written"] >= 0.4


def test_json_record_fields(records):
    need = {"method", "estimator", "mode", "q", "label_noise", "seed", "p0",
            "heldout_pass_at_1", "heldout_majority_at_k", "escape_step"}  # fmt: skip
    runs = [r for r in records if r["part"] == "run"]
    assert runs and all(need <= set(r) for r in runs)
    assert all(r["escape_step"] is None or r["escape_step"] >= 0 for r in runs)


def test_settings_ids_are_unique_and_seeds_keyed_by_id():
    for quick in (True, False):
        s = settings(quick)
        ids = [x["id"] for x in s]
        assert len(ids) == len(set(ids))
    full = settings(False)
    methods = {x["method"] for x in full if x["part"] == "rl"}
    assert {"GRPO", "Dr. GRPO", "PAFT q=0.75", "SFT->RLVR", "adaptive q"} <= methods
    assert {f"GARL q={q:g}" for q in (0, 0.25, 0.5, 0.75, 1)} <= methods
    assert {x["label_noise"] for x in full} == {0.0, 0.2}
    noisy = {x["method"] for x in full if x["label_noise"] > 0}
    assert {"GARL q=0.75", "GARL q=1"} <= noisy
    trainer = {(x["task"], x["method"]): x["n_seeds"] for x in full if x["part"] == "trainer"}
    assert {("cold", "GRPO"), ("cold", "GARL q=0.75"), ("cold", "GARL q=1")} <= set(trainer)
    assert min(trainer.values()) >= 3


def test_ci_helpers():
    m, lo, hi = t_ci([0.2, 0.4, 0.6])
    assert m == pytest.approx(0.4) and lo < m < hi
    assert hi - m == pytest.approx(4.302653 * 0.2 / math.sqrt(3), rel=1e-5)
    m, lo, hi = t_ci([0.5])
    assert m == 0.5 and math.isnan(lo) and math.isnan(hi)
    lo, hi = bootstrap_ci(np.arange(10.0), np.mean)
    assert lo < 4.5 < hi
    assert bootstrap_ci([3.0], np.mean) == (3.0, 3.0)


def test_trainer_records_one_per_seed():
    """The trainer part's arrays [n_seeds, ...] become one record per seed, each with its own
    escape step (first logged reward >= delta) and evaluation."""
    from sims.experiments.table1 import _trainer_records

    r = {"task": "cold", "method": "GRPO", "estimator": "grpo", "mode": "verifier", "q": None,
         "label_noise": 0.0, "seed": 0, "n_seeds": 2, "steps": 3, "delta": 0.5,
         "trainer_reward": np.array([[0.0, 0.0, 0.0], [0.1, 0.6, 0.7]]),
         "trainer_frac_stalled": np.array([[1.0, 1.0, 1.0], [0.5, 0.0, 0.0]]),
         "heldout_pass_at_1": np.array([0.0, 0.25]), "heldout_majority_at_k": np.array([0.0, 0.5]),
         "train_pass_at_1": np.array([0.0, 0.75]),
         "heldout_chain_written": np.array([0.0, 0.125])}  # fmt: skip
    recs = _trainer_records(r, 1e-4)
    assert [x["seed"] for x in recs] == [0, 1]
    assert [x["escape_step"] for x in recs] == [None, 1]
    assert [x["frac_stalled_mean"] for x in recs] == pytest.approx([1.0, 1 / 6])
    assert [x["heldout_majority_at_k"] for x in recs] == [0.0, 0.5]
    assert recs[1]["curves"]["reward"] == pytest.approx([0.1, 0.6, 0.7])
    assert all(x["part"] == "trainer" and x["p0"] == 1e-4 for x in recs)
