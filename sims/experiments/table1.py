r"""Table 1 in miniature: a cold start on k-hop questions, held-out evaluation.

The task (:mod:`sims.table1_task`): k-hop lookups over a random permutation of ``n`` entities,
the answer in a separate alphabet, a quarter of the start entities held out.  The base model
(:mod:`sims.table1_model`): a small Qwen2 pre-trained here on the single facts, free chains and
the output format at k <= 2 hops (cached under ``$TSALLIS_TABLE1_BASE`` or ``results/``).  RL
(:mod:`sims.table1_engine`): the trainer's J_Q step (``TsallisGRPOTrainer``'s loss, estimator
and optimiser) at k = ``hops``, G prompts × M completions per step, Adam, a fixed number of
steps; held-out and training questions evaluated every ``eval_every`` steps by sampling
``eval_k`` completions per question (pass@1, majority@k, the teacher-forced P and its
format/content split).

Methods (the rows of the paper's Table 1): GRPO and Dr. GRPO (verifier mode, exact match),
GARL-RLOO at q ∈ {0, .25, .5, .75, 1} and PAFT at q = .75 (likelihood mode), the SFT→RLVR
schedule (q = 1 for ``SFT_STEPS`` steps, then q = 0), and the adaptive q of
:class:`sims.table1_engine.HeldAdaptiveQ` (:func:`sims.table1_engine.adaptive_q` chosen from a
probed score scale, held until the escape); each with and without label noise.

A setting is one (method, label noise) with ``n_seeds`` seeds; seed i of a setting is keyed by
(experiment, setting id, seed + i), not by the cache hash.  The ``base`` part measures p0 of
the base model on training and held-out questions with many samples.  The ``trainer`` part
(full preset) runs the headline methods on the cold set, and GRPO and GARL q = 0.5 on the
reachable set, through ``TsallisGRPOTrainer`` itself (TRL generation, both modes),
``trainer_seeds`` seeds keyed like the engine runs, and evaluates the trained model the same
way.

Escape = the first step whose batch P̂ (mean teacher-forced gold-answer probability after the
sampled rationales) reaches ``DELTA``; ``escape_step`` is None when it never does.  In the
``trainer`` part it is the first step whose logged mean exact-match reward reaches ``DELTA``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys

import numpy as np
import torch

from ..rng import row_key
from ..table1_engine import evaluate, train_run
from ..table1_model import BaseSpec, base_model
from ..table1_task import World, gold_answer, noisy_answers
from . import Experiment

NAME = "table1"
VERSION = 2  # 2: rows cut through the seam (the trainer since it uses tsallis.rollouts)
DELTA = 0.5
SFT_STEPS = 10
#: (method label, estimator, mode, q, schedule)
METHODS = (
    ("GRPO", "grpo", "verifier", None, None),
    ("Dr. GRPO", "dr_grpo", "verifier", None, None),
    *((f"GARL q={q:g}", "garl_rloo", "likelihood", q, None) for q in (0.0, 0.25, 0.5, 0.75, 1.0)),
    ("PAFT q=0.75", "paft", "likelihood", 0.75, None),
    ("SFT->RLVR", "garl_rloo", "likelihood", 0.0, {"sft_steps": SFT_STEPS}),
    ("adaptive q", "garl_rloo", "likelihood", None, "adaptive"),
)


#: the two question sets ("datasets", the columns of the table): the base model is pre-trained
#: on questions with these hop counts, RL asks k = 3.  "cold": k = 3 lies beyond every
#: pre-trained question (extrapolation: the base writes 2 hops, a correct 3-hop chain has
#: probability ~1e-6); "reachable": k = 3 lies between pre-trained 2 and 4 (the base writes
#: the correct 3 hops, then often a 4th: the rationale must learn where to stop).
TASKS = {"cold": (1, 2), "reachable": (1, 2, 4)}


NOISE_METHODS = ("GRPO", "GARL q=0.75", "GARL q=1", "PAFT q=0.75", "adaptive q")


def _preset(quick: bool) -> dict:
    if quick:
        return {
            "world": {"n_entities": 32, "hops": 3, "answer_len": 1, "n_heldout": 8},
            "base": {"hidden": 48, "layers": 2, "heads": 4, "kv_heads": 2, "mlp": 4,
                     "steps": 400, "batch": 128, "lr": 3e-3},  # fmt: skip
            # copy drills (20%): a 32-entity base pre-trained this briefly writes the chain but
            # does not copy its last entity into the answer alphabet without them
            "base_by_task": {"reachable": {"steps": 600, "copy_share": 0.2}},
            # the cold set for GRPO's stall and likelihood mode's memorising escape, the
            # reachable set (3 seeds) for learnt computation on held-out questions
            "runs": [("cold", "GRPO", 0.0), ("cold", "GARL q=1", 0.0),
                     ("reachable", "GARL q=0.25", 0.0)],  # fmt: skip
            "seeds": {"cold": 1, "reachable": 3},
            "steps": 40,
            "eval_every": 20,
            "eval_k": 8,
            "eval_train_n": 8,
            "base_k": 16,
        }
    labels = [m[0] for m in METHODS]
    runs = [("cold", m, 0.0) for m in labels]
    runs += [("reachable", m, 0.0) for m in labels]
    # label noise: the methods the noise question is about (q = 1 vs q = 0.75, Prop. C.2)
    runs += [("reachable", m, 0.2) for m in NOISE_METHODS]
    return {
        "world": {"n_entities": 64, "hops": 3, "answer_len": 1, "n_heldout": 16},
        "base": {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "mlp": 4, "steps": 1500,
                 "batch": 128, "lr": 3e-3},  # fmt: skip
        "runs": runs,
        # the reachable set, where the methods differ, gets more seeds (seeds 0-2 are the same
        # runs in either case: a seed is keyed by (experiment, setting id, seed))
        "seeds": {"cold": 3, "reachable": 5},
        "steps": 80,
        "eval_every": 40,
        "eval_k": 8,
        "eval_train_n": 16,
        "base_k": 64,
        # through TsallisGRPOTrainer itself: the headline methods on the cold set, and GRPO
        # against the likelihood mode's most reliable q on the reachable set
        "trainer": [("cold", "GRPO"), ("cold", "GARL q=0.75"), ("cold", "GARL q=1"),
                    ("reachable", "GRPO"), ("reachable", "GARL q=0.5")],  # fmt: skip
        "trainer_steps": 40,
        "trainer_seeds": 3,
    }


def _base_of(p: dict, task: str) -> dict:
    """The base-model settings of a question set: the preset's, its per-set overrides, the
    set's pre-trained hop counts."""
    return {**p["base"], **p.get("base_by_task", {}).get(task, {}),
            "task_hops": list(TASKS[task])}  # fmt: skip


def _slug(label: str) -> str:
    return label.lower().replace(". ", "_").replace(" ", "_").replace("->", "-")


def settings(quick: bool) -> list[dict]:
    p = _preset(quick)
    common = {
        "experiment": NAME, "world": p["world"], "G": 8, "M": 8, "lr": 1e-3, "adam_eps": 1e-8,
        "steps": p["steps"], "eval_every": p["eval_every"], "eval_k": p["eval_k"],
        "eval_train_n": p["eval_train_n"],
        "max_new": p["world"]["hops"] + p["world"]["answer_len"] + 4, "delta": DELTA,
        "adaptive_margin": 2.0, "seed": 0,
    }  # fmt: skip
    out = []
    for task in dict.fromkeys(t for t, _, _ in p["runs"]):
        base = _base_of(p, task)
        out.append({**common, "part": "base", "task": task, "base": base, "method": "base",
                    "estimator": None, "mode": None, "q": None, "schedule": None,
                    "label_noise": 0.0, "n_seeds": 1, "eval_k": p["base_k"],
                    "id": f"{NAME}/{task}/base"})  # fmt: skip
    by_label = {m[0]: m for m in METHODS}
    for task, label, noise in p["runs"]:
        _, est, mode, q, sched = by_label[label]
        out.append({
            **common, "part": "rl", "task": task,
            "base": _base_of(p, task), "method": label,
            "estimator": est, "mode": mode, "q": q, "schedule": sched, "label_noise": noise,
            "n_seeds": p["seeds"][task] if isinstance(p["seeds"], dict) else p["seeds"],
            "id": f"{NAME}/{task}/{_slug(label)}/noise={noise:g}",
        })  # fmt: skip
        if sched == "adaptive":
            # the adaptive rule (sims.table1_engine.HeldAdaptiveQ: s probed before the first
            # step, q held until the escape); a field of its own so that replacing the old
            # per-step rule with a q = 1 first step recomputes only these settings
            out[-1]["adaptive"] = "held"
    for task, label in p.get("trainer", ()):
        _, est, mode, q, sched = by_label[label]
        out.append({
            **common, "part": "trainer", "task": task,
            "base": _base_of(p, task), "method": label,
            "estimator": est, "mode": mode, "q": q, "schedule": sched, "label_noise": 0.0,
            "n_seeds": p["trainer_seeds"], "steps": p["trainer_steps"],
            "id": f"{NAME}/{task}/trainer/{_slug(label)}/noise=0",
        })  # fmt: skip
    return out


def batch_key(s: dict) -> tuple:
    """Each setting is a batch of its own (committed as soon as its seeds finish)."""
    return (s["id"],)


def _root() -> str:
    return os.environ.get("TSALLIS_TABLE1_BASE", "results")


def _base(s: dict):
    world = World(**s["world"])
    model, tok, info = base_model(world, BaseSpec(**s["base"]), root=_root())
    return world, model, tok, info


def load_base(task: str = "cold", quick: bool = False):
    """(world, model, tokenizer) of a preset's base model for question set ``task`` ("cold" or
    "reachable"), pre-trained now if not cached (see :func:`sims.table1_model.base_model`)."""
    for s in settings(quick):
        if s["part"] == "base" and s["task"] == task:
            world, model, tok, _ = _base(s)
            return world, model, tok
    raise ValueError(f"no base model for task {task!r} in the {'quick' if quick else 'full'} "
                     f"preset; known: {sorted(TASKS)}")  # fmt: skip


def run_batch(batch: list[dict]) -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [_run_setting(s) for s in batch]
    finally:
        torch.set_num_threads(threads)


def _run_setting(s: dict) -> dict:
    world, base, tok, _info = _base(s)
    clean = {a: gold_answer(world, a) for a in range(world.n_entities)}
    if s["part"] == "base":
        return _measure_base(s, world, base, tok, clean)
    if s["part"] == "trainer":
        return _run_trainer(s, world, base, tok, clean)
    per_seed = []
    for i in range(s["n_seeds"]):
        key = row_key(NAME, s["id"], s["seed"] + i)
        labels = {**clean, **noisy_answers(world, s["label_noise"], seed=s["seed"] + i)}
        model = copy.deepcopy(base)
        per_seed.append(train_run(model, tok, world, s, key, labels, clean))
    return {k: np.stack([r[k] for r in per_seed]) for k in per_seed[0]}


def _run_trainer(s, world, base, tok, clean) -> dict:
    """The same RL run through ``TsallisGRPOTrainer`` itself (TRL's generation, the trainer's
    loss and AdamW), ``n_seeds`` seeds: per seed, ``steps`` optimiser steps of G prompts × M
    completions from the base model, then the held-out and training evaluation of
    :func:`sims.table1_engine.evaluate`.  Per-step arrays [n_seeds, steps] from the trainer's
    logs: the mean exact-match reward, ``tsallis/frac_stalled`` and (when logged)
    ``tsallis/log_w_mean``; evaluation entries [n_seeds]."""
    per_seed = [_trainer_seed(s, world, base, tok, clean, s["seed"] + i)
                for i in range(s["n_seeds"])]  # fmt: skip
    return {k: np.stack([r[k] for r in per_seed]) for k in per_seed[0]}


def _trainer_seed(s, world, base, tok, clean, seed: int) -> dict:
    """One seed of :func:`_run_trainer`: prompts, TRL's seed and the evaluation samples all
    keyed by (experiment, setting id, seed)."""
    import tempfile

    from datasets import Dataset

    from tsallis.integrations.trl import (
        TsallisGRPOConfig,
        TsallisGRPOTrainer,
        answer_match_reward,
    )

    from ..table1_task import question_words

    key = row_key(NAME, s["id"], seed)
    rng = np.random.default_rng([key & (2**32 - 1), 11])
    G, M, S = s["G"], s["M"], s["steps"]
    starts = [int(a) for _ in range(S) for a in rng.choice(world.train, G, replace=False)]
    ds = Dataset.from_dict({
        "prompt": [" ".join(question_words(world, a)) for a in starts],
        "answer": [" ".join(f"A{x}" for x in clean[a]) for a in starts],
    })  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        args = TsallisGRPOConfig(
            output_dir=tmp, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
            per_device_train_batch_size=G * M, num_generations=M,
            max_completion_length=s["max_new"], max_steps=S, logging_steps=1, disable_tqdm=True,
            optim="adamw_torch", learning_rate=s["lr"], adam_epsilon=s["adam_eps"],
            lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0,
            seed=int(key & (2**31 - 1)), q=0.0 if s["q"] is None else s["q"],
            estimator=s["estimator"], mode=s["mode"], answer_marker="=",
            logprob_impl="torch", shuffle_dataset=False, temperature=1.0,
        )  # fmt: skip
        trainer = TsallisGRPOTrainer(
            model=copy.deepcopy(base), reward_funcs=[answer_match_reward("=")], args=args,
            train_dataset=ds, processing_class=tok,
        )  # fmt: skip
        with contextlib.redirect_stdout(sys.stderr):  # TRL prints its logs; stdout is --json's
            trainer.train()
    model = trainer.model.eval()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    out = {
        "trainer_reward": np.array([h.get("reward", np.nan) for h in logs]),
        "trainer_frac_stalled": np.array([h.get("tsallis/frac_stalled", np.nan) for h in logs]),
        "trainer_log_w_mean": np.array([h.get("tsallis/log_w_mean", np.nan) for h in logs]),
    }
    for split, st, in (("heldout", world.heldout), ("train", world.train[: s["eval_train_n"]])):
        g = torch.Generator().manual_seed(row_key(NAME, s["id"], seed, split) & (2**63 - 1))
        r = evaluate(model, tok, world, st, clean, k=s["eval_k"], max_new=s["max_new"],
                     generator=g)  # fmt: skip
        for name, v in r.items():
            out[f"{split}_{name}"] = np.array(v)
    return out


def _measure_base(s, world, model, tok, clean) -> dict:
    """p0 and its split on train / held-out questions: per question, log P̂, log F̂ from
    ``eval_k`` sampled rationales (for a bootstrap over questions)."""
    out = {}
    for split, starts in (("train", world.train), ("heldout", world.heldout)):
        lp, lf, p1, mj = [], [], [], []
        for a in starts:
            g = torch.Generator().manual_seed(row_key(NAME, s["id"], split, a) & (2**63 - 1))
            r = evaluate(model, tok, world, [a], clean, k=s["eval_k"], max_new=s["max_new"],
                         generator=g)  # fmt: skip
            lp.append(r["log_p"])
            lf.append(r["log_f"])
            p1.append(r["pass_at_1"])
            mj.append(r["majority_at_k"])
        out[f"{split}_log_p"] = np.array(lp)
        out[f"{split}_log_f"] = np.array(lf)
        out[f"{split}_pass_at_1"] = np.array(p1)
        out[f"{split}_majority_at_k"] = np.array(mj)
    return out


# ----------------------------------------------------------------------------- analysis


def _log_mean_exp(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    m = x.max()
    return float(m + np.log(np.mean(np.exp(x - m))))


def bootstrap_ci(x, stat, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap CI of ``stat`` over the entries of ``x`` (resampled with
    replacement): (lo, hi).  A single entry gives (stat, stat)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size <= 1:
        v = float(stat(x))
        return v, v
    rng = np.random.default_rng(seed)
    vals = np.array([stat(x[rng.integers(0, x.size, x.size)]) for _ in range(n_boot)])
    a = (1 - level) / 2
    return float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))


def t_ci(x, level: float = 0.95):
    """Mean and Student-t CI over seeds: (mean, lo, hi); one seed gives (x, nan, nan)."""
    from scipy import stats

    x = np.asarray(x, dtype=np.float64)
    m = float(x.mean())
    if x.size < 2:
        return m, math.nan, math.nan
    h = float(stats.t.ppf((1 + level) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return m, m - h, m + h


def _base_records(r: dict, chance: float) -> list[dict]:
    recs = []
    for split in ("train", "heldout"):
        lp, lf = r[f"{split}_log_p"], r[f"{split}_log_f"]
        p0 = math.exp(_log_mean_exp(lp))
        f0 = math.exp(_log_mean_exp(lf))
        lo, hi = bootstrap_ci(lp, lambda v: _log_mean_exp(v))
        recs.append({
            "experiment": NAME, "part": "base", "split": split, "p0": p0,
            "p0_ci": [math.exp(lo), math.exp(hi)], "F0": f0, "C0": p0 / f0,
            "content_chance": chance, "n_questions": int(lp.size),
            "samples_per_question": int(r["eval_k"]),
            "pass_at_1": float(np.mean(r[f"{split}_pass_at_1"])),
            "majority_at_k": float(np.mean(r[f"{split}_majority_at_k"])),
        })  # fmt: skip
    return recs


def _trainer_records(r: dict, p0) -> list[dict]:
    """One ``trainer`` record per seed of a trainer setting (arrays [n_seeds, ...]); the escape
    step is the first step whose logged mean reward reaches ``delta``."""
    recs = []
    for i in range(int(r["n_seeds"])):

        def at(name, i=i):
            return np.asarray(r[name], dtype=float).reshape(int(r["n_seeds"]), -1)[i]

        reward, stalled = at("trainer_reward"), at("trainer_frac_stalled")
        hit = np.nonzero(reward >= r["delta"])[0]
        recs.append({
            "experiment": NAME, "part": "trainer", "task": r["task"], "method": r["method"],
            "estimator": r["estimator"], "mode": r["mode"], "q": r["q"],
            "label_noise": r["label_noise"], "seed": r["seed"] + i, "p0": p0,
            "steps": int(r["steps"]),
            **{name: float(at(name)[0]) for name in (
                "heldout_pass_at_1", "heldout_majority_at_k", "train_pass_at_1",
                "heldout_chain_written")},
            "escape_step": int(hit[0]) if hit.size else None,
            "frac_stalled_mean": float(np.nanmean(stalled)),
            "curves": {"reward": [float(x) for x in reward],
                       "frac_stalled": [float(x) for x in stalled]},
        })  # fmt: skip
    return recs


def analyze(table: list[dict]) -> list[dict]:
    """Records: ``base`` (p0, its CI and F/C split per split), ``run`` (one per seed: final
    held-out/training metrics, escape step, stalled fraction, curves) and ``summary`` (one per
    method and noise: mean and t-CI over seeds of the final held-out metrics)."""
    recs: list[dict] = []
    p0_of: dict = {}
    for r in table:
        if r["part"] == "base":
            chance = float(r["world"]["n_entities"]) ** (-r["world"]["answer_len"])
            b = _base_records(r, chance)
            for x in b:
                x["task"] = r["task"]
                p0_of[(r["task"], x["split"])] = x["p0"]
            recs += b
    for r in table:
        if r["part"] == "trainer":
            recs += _trainer_records(r, p0_of.get((r["task"], "train")))
        if r["part"] != "rl":
            continue
        n = r["n_seeds"]
        steps = [int(x) for x in np.asarray(r["eval_steps"])[0]]
        runs = []
        for i in range(n):
            esc = int(np.asarray(r["escape_step"])[i])

            def ev(name, i=i, r=r):
                return [float(x) for x in np.asarray(r[f"eval_{name}"])[i]]

            stalled = np.asarray(r["step_frac_stalled"])[i]
            rec = {
                "experiment": NAME, "part": "run", "task": r["task"], "method": r["method"],
                "estimator": r["estimator"], "mode": r["mode"], "q": r["q"],
                "schedule": r["schedule"], "label_noise": r["label_noise"],
                "seed": r["seed"] + i, "p0": p0_of.get((r["task"], "train")),
                "p0_run": math.exp(ev("train_log_p")[0]),
                "heldout_pass_at_1": ev("heldout_pass_at_1")[-1],
                "heldout_majority_at_k": ev("heldout_majority_at_k")[-1],
                "train_pass_at_1": ev("train_pass_at_1")[-1],
                "train_pass_at_1_clean": ev("train_pass_at_1_clean")[-1],
                "heldout_log10_C": ev("heldout_log_c")[-1] / math.log(10),
                "heldout_log10_F": ev("heldout_log_f")[-1] / math.log(10),
                "heldout_chain_written": ev("heldout_chain_written")[-1],
                "escape_step": None if esc < 0 else esc,
                "frac_stalled_first10": float(np.mean(stalled[:10])),
                "frac_stalled_mean": float(np.mean(stalled)),
                "final_train_log10_P": float(np.asarray(r["step_log_p"])[i][-1] / math.log(10)),
                "k": int(r["eval_k"]), "steps": int(r["steps"]),
                "curves": {
                    "eval_step": steps,
                    "heldout_majority_at_k": ev("heldout_majority_at_k"),
                    "heldout_pass_at_1": ev("heldout_pass_at_1"),
                    "train_pass_at_1": ev("train_pass_at_1"),
                    "train_log10_P": [float(x) / math.log(10) for x in
                                      np.asarray(r["step_log_p"])[i]],
                    "frac_stalled": [float(x) for x in stalled],
                    "q": [float(x) for x in np.asarray(r["step_q"])[i]],
                },
            }  # fmt: skip
            runs.append(rec)
        recs += runs
        summ = {"experiment": NAME, "part": "summary", "task": r["task"], "method": r["method"],
                "estimator": r["estimator"], "mode": r["mode"], "q": r["q"],
                "label_noise": r["label_noise"], "n_seeds": n,
                "n_escaped": sum(x["escape_step"] is not None for x in runs)}  # fmt: skip
        for name in ("heldout_majority_at_k", "heldout_pass_at_1", "train_pass_at_1",
                     "train_pass_at_1_clean", "frac_stalled_mean"):  # fmt: skip
            m, lo, hi = t_ci([x[name] for x in runs])
            summ[name] = m
            summ[f"{name}_ci"] = [lo, hi]
            summ[f"{name}_seeds"] = [x[name] for x in runs]
        recs.append(summ)
    return recs


EXPERIMENT = Experiment(
    name=NAME,
    description="Table 1 in miniature: k-hop questions over a synthetic world, a pre-trained "
    "Qwen2 base model, GRPO / Dr. GRPO / GARL-RLOO q-grid / PAFT / SFT->RLVR / adaptive q "
    "through the trainer's J_Q step, held-out majority@k and pass@1, with and without label noise",
    version=VERSION,
    settings=settings,
    batch_key=batch_key,
    run_batch=run_batch,
    analyze=analyze,
)


def _fmt_ci(m, ci) -> str:
    lo, hi = ci
    if lo is None or not np.isfinite(lo):
        return f"{m:.2f}"
    return f"{m:.2f} [{max(lo, 0.0):.2f}, {min(hi, 1.0):.2f}]"


def markdown_table(records: list[dict], metric: str = "heldout_majority_at_k") -> str:
    """The summary records as a Markdown table in the form of the paper's Table 1: one row per
    method, one column per (task, label noise); each cell the mean over seeds of the final
    ``metric`` with its 95% t-CI (clipped to [0, 1]) and the per-seed values.

    >>> recs = [{"part": "summary", "task": "cold", "label_noise": 0.0, "method": "GRPO",
    ...          "x": 0.5, "x_ci": [0.25, 0.75], "x_seeds": [0.25, 0.5, 0.75]}]
    >>> print(markdown_table(recs, "x"))
    | method | cold, noise 0 |
    |---|---|
    | GRPO | 0.50 [0.25, 0.75] (0.25, 0.5, 0.75) |
    """
    summ = [r for r in records if r["part"] == "summary"]
    combos = list(dict.fromkeys((r["task"], r["label_noise"]) for r in summ))
    methods = list(dict.fromkeys(r["method"] for r in summ))
    head = "| method | " + " | ".join(f"{t}, noise {n:g}" for t, n in combos) + " |"
    lines = [head, "|---|" + "---|" * len(combos)]
    for m in methods:
        cells = []
        for combo in combos:
            r = next((x for x in summ if x["method"] == m
                      and (x["task"], x["label_noise"]) == combo), None)  # fmt: skip
            if r is None:
                cells.append("–")
                continue
            seeds = ", ".join(f"{v:.3g}" for v in r[f"{metric}_seeds"])
            cells.append(f"{_fmt_ci(r[metric], r[f'{metric}_ci'])} ({seeds})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
