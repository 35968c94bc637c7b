"""The Table-1 engine's step is the trainer's step: on the batch TsallisGRPOTrainer sampled, the
engine's loss (sims.table1_engine.batch_loss) has the gradient the trainer handed its optimiser,
in both modes; plus the pieces (rows, adaptive q, evaluation) on small cases."""

from __future__ import annotations

import copy
import math
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from _trl_capture import CapturingTrainer, GradCapture  # noqa: E402
from datasets import Dataset  # noqa: E402

from sims.table1_engine import (  # noqa: E402
    Batch,
    adaptive_q,
    batch_loss,
    evaluate,
    likelihood_rows,
)
from sims.table1_model import BaseSpec, encode_words, pretrain, sample  # noqa: E402
from sims.table1_task import World, gold_answer, question_words  # noqa: E402
from tsallis.integrations.trl import TsallisGRPOConfig  # noqa: E402

WORLD = World(n_entities=6, hops=1, n_heldout=1, prefix_len=1, n_fillers=2)
M = 4


@pytest.fixture(scope="module")
def base():
    """A briefly pre-trained base model: it answers some 1-hop questions, not all, so both
    modes see mixed weights and rewards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tok, _ = pretrain(WORLD, BaseSpec(hidden=16, layers=1, heads=2, kv_heads=1, mlp=2,
                                             steps=60, batch=64, lr=1e-2))  # fmt: skip
    yield model, tok
    torch.set_num_threads(n)


def _dataset():
    starts = list(WORLD.train) * 2
    return Dataset.from_dict({
        "prompt": [" ".join(question_words(WORLD, a)) for a in starts],
        "answer": [" ".join(f"A{x}" for x in gold_answer(WORLD, a)) for a in starts],
    })  # fmt: skip


def _trainer_step(tmp_path, model, tok, mode, estimator, q):
    from tsallis.integrations.trl import answer_match_reward

    args = TsallisGRPOConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none",
        save_strategy="no", per_device_train_batch_size=2 * M, num_generations=M,
        max_completion_length=WORLD.hops + 4, max_steps=1, logging_steps=1, disable_tqdm=True,
        optim="adamw_torch", learning_rate=1e-3, lr_scheduler_type="constant", weight_decay=0.0,
        max_grad_norm=0.0, seed=3, q=q, estimator=estimator, mode=mode, answer_marker="=",
        logprob_impl="torch", shuffle_dataset=False, temperature=1.0,
    )  # fmt: skip
    grads = GradCapture()
    tr = CapturingTrainer(model=model, reward_funcs=[answer_match_reward("=")], args=args,
                  train_dataset=_dataset(), processing_class=tok, callbacks=[grads])  # fmt: skip
    tr.train()
    return tr.captured[0], grads.grads[0]


@pytest.mark.parametrize(("mode", "estimator", "q"), [("likelihood", "garl_rloo", 0.75),
                                                      ("verifier", "grpo", 0.0)])
def test_engine_loss_has_the_trainers_gradient(tmp_path, base, mode, estimator, q):
    model0, tok = base
    (prompts, comps, examples), want = _trainer_step(tmp_path, copy.deepcopy(model0), tok,
                                                     mode, estimator, q)  # fmt: skip
    K = max(len(c) for c in comps)
    comp = torch.full((len(comps), K), tok.pad_token_id, dtype=torch.long)
    for b, c in enumerate(comps):
        comp[b, : len(c)] = torch.tensor(c)
    prompt_ids = torch.tensor([tok(p, add_special_tokens=False)["input_ids"] for p in prompts])
    answers = [tok(e["answer"], add_special_tokens=False)["input_ids"] for e in examples]
    marker = encode_words(tok, [["="]])[0]
    rows = likelihood_rows(comp, answers, marker, {tok.eos_token_id, tok.pad_token_id},
                           tok.pad_token_id)  # fmt: skip
    from sims.table1_engine import _answer_text_match

    rewards = _answer_text_match(tok, comp, [e["answer"] for e in examples])
    if mode == "verifier":
        assert 0 < float(rewards.sum()) < len(comps), "the test needs mixed rewards"
    batch = Batch(prompt_ids, comp, answers, rewards, rows if mode == "likelihood" else None)
    model = copy.deepcopy(model0)
    model.train()
    loss, coefs, _ = batch_loss(model, batch, q, estimator=estimator, mode=mode, M=M,
                                eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)  # fmt: skip
    loss.backward()
    scale = max(float(g.abs().max()) for g in want.values())
    assert scale > 0
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[n], atol=1e-4 * scale, rtol=1e-3, msg=n)


def test_likelihood_rows_cut_and_spans():
    eos, pad = 1, 0
    comp = torch.tensor([[5, 6, 9, 7, eos], [5, eos, pad, pad, pad], [5, 6, 5, 6, 5]])
    rows = likelihood_rows(comp, [[30], [31], [32]], [9], {eos, pad}, pad)
    assert rows.forced.tolist() == [False, True, True]
    # the answer span ends with the gold answer token; the rationale span starts the row
    for b, gold in enumerate((30, 31, 32)):
        ids = rows.ids[b][rows.valid[b]].tolist()
        assert ids[-1] == gold
        assert rows.answer_mask[b].sum() >= 1
        assert not (rows.rationale_mask[b] & rows.answer_mask[b]).any()
        assert rows.ids[b][rows.rationale_mask[b]].tolist() == ids[: int(rows.rationale_len[b])]
    assert rows.ids[0][rows.rationale_mask[0]].tolist()[:2] == [5, 6]
    assert rows.rationale_len[2] == 5  # budget: every sampled token is rationale


def test_adaptive_q_formula_and_limits():
    eps, s, m = 1e-8, 0.5, 2.0
    for log_p in (math.log(1e-3), math.log(1e-12), math.log(1e-30)):
        q = adaptive_q(log_p, s, adam_eps=eps, margin=m)
        want = min(1.0, max(0.0, 1 - math.log(eps * 10**m / s) / log_p))
        assert q == pytest.approx(want)
        if 0 < q < 1:  # the rule's defining property: P^(1-q)·s = ε·10^margin
            assert math.exp((1 - q) * log_p) * s == pytest.approx(eps * 10**m, rel=1e-9)
    qs = [adaptive_q(math.log(p), s, adam_eps=eps, margin=m) for p in (1e-40, 1e-20, 1e-8, 1e-2)]
    assert qs == sorted(qs, reverse=True)  # smaller P -> larger q
    assert adaptive_q(-1.0, math.nan, adam_eps=eps, margin=m) == 1.0  # no score yet
    assert adaptive_q(0.0, s, adam_eps=eps, margin=m, q_min=0.1) == 0.1
    assert adaptive_q(-math.inf, s, adam_eps=eps, margin=m) == 1.0


def test_sampling_stops_at_eos_and_evaluation_is_consistent(base):
    model, tok = base
    g = torch.Generator().manual_seed(0)
    prompt = torch.tensor(encode_words(tok, [question_words(WORLD, a) for a in WORLD.train]))
    comp = sample(model, prompt, 5, tok.eos_token_id, tok.pad_token_id, g)
    for row in comp.tolist():
        if tok.eos_token_id in row:
            i = row.index(tok.eos_token_id)
            assert all(t == tok.pad_token_id for t in row[i + 1 :])
    clean = {a: gold_answer(WORLD, a) for a in range(WORLD.n_entities)}
    r = evaluate(model, tok, WORLD, WORLD.train, clean, k=6, max_new=5,
                 generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert 0.0 <= r["pass_at_1"] <= 1.0 and 0.0 <= r["majority_at_k"] <= 1.0
    # P = F·C with F <= 1: the content part is at least P
    assert r["log_p"] <= r["log_f"] + 1e-9 <= 1e-9
    assert r["log_c"] == pytest.approx(r["log_p"] - r["log_f"])
    assert np.isfinite(r["log_p"])


def test_base_model_is_cached_by_its_settings(tmp_path):
    from sims.table1_model import base_key, base_model

    spec = BaseSpec(hidden=8, layers=1, heads=2, kv_heads=1, mlp=2, steps=3, batch=8, lr=1e-2)
    m1, tok, info1 = base_model(WORLD, spec, root=tmp_path)
    m2, _, info2 = base_model(WORLD, spec, root=tmp_path)
    assert not info1["loaded"] and info2["loaded"] and info1["key"] == info2["key"]
    ids = torch.tensor(encode_words(tok, [question_words(WORLD, 0)]))
    with torch.no_grad():
        torch.testing.assert_close(m1(input_ids=ids).logits, m2(input_ids=ids).logits)
    other = BaseSpec(hidden=8, layers=1, heads=2, kv_heads=1, mlp=2, steps=4, batch=8, lr=1e-2)
    assert base_key(WORLD, other) != info1["key"]
    with pytest.raises(ValueError, match="heads"):
        BaseSpec(hidden=10, heads=4)
    # copy drills change the key; without them the key is that of a spec without the field
    # (bases cached before it existed stay valid)
    import dataclasses
    import hashlib
    import json

    from sims.table1_model import BASE_VERSION

    assert base_key(WORLD, dataclasses.replace(spec, copy_share=0.2)) != info1["key"]
    old = {k: v for k, v in dataclasses.asdict(spec).items() if k != "copy_share"}
    body = {"world": dataclasses.asdict(WORLD), "spec": old, "version": BASE_VERSION}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    assert info1["key"] == digest[:16]
    with pytest.raises(ValueError, match="copy_share"):
        BaseSpec(copy_share=1.0)


def _adaptive_setting(adaptive):
    return {"estimator": "garl_rloo", "mode": "likelihood", "q": None, "schedule": "adaptive",
            "G": 2, "M": M, "steps": 3, "lr": 1e-3, "adam_eps": 1e-8, "max_new": 4,
            "eval_every": 3, "eval_k": 2, "eval_train_n": 2, "delta": 0.5,
            "adaptive_margin": 2.0, "adaptive": adaptive}  # fmt: skip


def test_adaptive_q_measures_s_before_its_first_step_and_holds_q(base):
    """The adaptive rule's first q comes from a score probe (one backward at q = 1, no step),
    so no step runs at q = 1 unless the rule asks for it; the probe leaves weights and
    gradients untouched; the held rule keeps its first q until the batch P̂ reaches delta."""
    from sims.table1_engine import HeldAdaptiveQ, make_batch, score_probe, train_run

    model, tok = base
    answers = {a: gold_answer(WORLD, a) for a in range(WORLD.n_entities)}
    kw = dict(estimator="garl_rloo", mode="likelihood", M=M, eos_id=tok.eos_token_id,
              pad_id=tok.pad_token_id, generator=None)  # fmt: skip
    m = copy.deepcopy(model)
    before = [p.detach().clone() for p in m.parameters()]
    batch = make_batch(m, tok, WORLD, list(WORLD.train)[:2], answers, M, 4,
                       torch.Generator().manual_seed(0), mode="likelihood")  # fmt: skip
    s = score_probe(m, batch, -3.0, **kw)
    assert math.isfinite(s) and s > 0
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))
    assert all(p.grad is None for p in m.parameters())
    for adaptive in ("held", "per_step"):
        out = train_run(copy.deepcopy(model), tok, WORLD, _adaptive_setting(adaptive), 7,
                        answers, answers)  # fmt: skip
        log_p, q = out["step_log_p"], out["step_q"]
        assert np.all((q >= 0) & (q <= 1))
        # the base answers some questions (P̂ ≈ 1e-1), so the probed s puts q below 1 at once
        assert log_p[0] > math.log(1e-3) and q[0] < 1.0
        if adaptive == "held" and log_p[0] < math.log(0.5) and log_p[1] < math.log(0.5):
            assert q[1] == q[0]
    with pytest.raises(ValueError, match="adaptive"):
        train_run(copy.deepcopy(model), tok, WORLD, _adaptive_setting("later"), 7, answers,
                  answers)  # fmt: skip
    rule = HeldAdaptiveQ(adam_eps=1e-8, margin=2.0, delta=0.5)
    assert rule(-1.0, math.nan) == 1.0 and rule.held is None  # no s yet: not held
    q0 = rule(math.log(1e-20), 1.0)
    assert rule(math.log(1e-5), 1.0) == q0 == rule(math.log(1e-25), 50.0)  # held
    assert rule(math.log(0.5), 1.0) == 0.0 and rule(math.log(1e-3), 1.0) == adaptive_q(
        math.log(1e-3), 1.0, adam_eps=1e-8, margin=2.0)  # after the escape: the rule
