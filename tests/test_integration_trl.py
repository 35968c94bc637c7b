"""TsallisGRPOTrainer (tsallis.integrations.trl) training a tiny Qwen2 for real, on CPU.

Checks: the optimiser's gradient equals a hand-computed -(1/G)·Σ_b coef·log π (both modes,
several estimators, gradient accumulation, both log-prob implementations), the kernels'
per-token log-probs match TRL's, the logged metrics, config validation, a cold-start learning
test against stock GRPO, and two processes (torchrun, gloo) against one.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def require_extra(module: str, extra: str):
    """Import ``module``; when it is missing, fail under CI (the extra must be installed there)
    and skip locally."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"{module} is missing: pip install -e '.[{extra}]' ({exc})"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg, allow_module_level=True)


require_extra("trl", "trl")
torch = require_extra("torch", "trl")
from _tiny_lm import char_tokenizer, merged_tokenizer, tiny_lm  # noqa: E402
from _trl_capture import CapturingTrainer, GradCapture  # noqa: E402
from datasets import Dataset  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tsallis import ESTIMATORS, rewards_to_log_w  # noqa: E402
from tsallis.integrations import trl as tsallis_trl  # noqa: E402
from tsallis.integrations.trl import (  # noqa: E402
    TsallisGRPOConfig,
    TsallisGRPOTrainer,
    split_rationale,
)
from tsallis.schedules import Callable, Step  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """A tiny model runs fastest on one thread (and far faster on a shared, loaded CPU)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


M = 4
LOW_CHARS = set("0123456789abcdefghij")


def low_share(completions, **kwargs):
    """Verifier reward in [0, 1]: the share of characters among 0-9a-j (0 for empty text)."""
    return [sum(ch in LOW_CHARS for ch in c) / len(c) if c else 0.0 for c in completions]


def _dataset(n=16):
    half = n // 2
    return Dataset.from_dict({"prompt": ["ab=", "cd="] * half, "answer": ["12", "34"] * half})


def _uneven_dataset(n=16):
    """Prompts of different lengths, so that the batch's prompts are left-padded."""
    half = n // 2
    return Dataset.from_dict({"prompt": ["a=", "bcdef="] * half, "answer": ["1", "345"] * half})


def _config(tmp_path, **overrides):
    base = dict(
        output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, report_to="none",
        save_strategy="no", per_device_train_batch_size=8, num_generations=M,
        max_completion_length=6, max_steps=1, logging_steps=1, disable_tqdm=True,
        optim="sgd", learning_rate=0.1, lr_scheduler_type="constant", weight_decay=0.0,
        max_grad_norm=0.0, seed=0, q=0.75, logprob_impl="torch", shuffle_dataset=False,
    )  # fmt: skip
    base.update(overrides)
    if base.get("mode") == "likelihood":
        base.setdefault("answer_marker", "=")
    return TsallisGRPOConfig(**base)


def _train(tmp_path, *, seed=0, reward_funcs="default", cls=CapturingTrainer, dataset=None,
           **overrides):  # fmt: skip
    model, tok = tiny_lm(seed)
    args = _config(tmp_path, **overrides)
    if reward_funcs == "default":
        reward_funcs = [low_share] if args.mode == "verifier" else None
    grads = GradCapture()
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = cls(
        model=model, reward_funcs=reward_funcs, args=args,
        train_dataset=_dataset() if dataset is None else dataset, processing_class=tok,
        callbacks=[grads],
    )  # fmt: skip
    trainer.train()
    return trainer, tok, grads, init


def _hand_token_logps(model, prompt_ids, seq):
    """log π(seq_t | prompt, seq_<t) for every token of seq, from a plain forward pass."""
    ids = torch.tensor([list(prompt_ids) + list(seq)])
    logp = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    tok_lp = logp.gather(-1, ids[0, 1:, None])[:, 0]
    return tok_lp[len(prompt_ids) - 1 :]


def _assert_grads_equal(hand_model, captured):
    names = [n for n, p in hand_model.named_parameters() if p.grad is not None]
    assert names and set(names) <= set(captured)
    scale = max(float(p.grad.abs().max()) for p in hand_model.parameters() if p.grad is not None)
    assert scale > 0
    for n, p in hand_model.named_parameters():
        if p.grad is None:
            continue
        torch.testing.assert_close(captured[n], p.grad, atol=2e-5 * scale, rtol=1e-4, msg=n)


def _check_metrics(trainer, *, likelihood):
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert logs
    keys = ["tsallis/q", "tsallis/log_w_mean", "tsallis/max_amplified_advantage",
            "tsallis/frac_stalled", "tsallis/w_mean", "entropy"]  # fmt: skip
    if likelihood:
        keys.append("tsallis/frac_forced_marker")
    for h in logs:
        assert math.isfinite(h["loss"])
        for k in keys:
            assert k in h, k
        assert 0.0 <= h["tsallis/frac_stalled"] <= 1.0
        assert h["entropy"] > 0


def _params_changed(trainer, init):
    return any(
        not torch.equal(p.detach(), init[n]) for n, p in trainer.model.named_parameters()
    )


# ----------------------------------------------------------------------------- pure parts


def test_trl_version_pin():
    tsallis_trl._check_trl_version("1.16.0")
    tsallis_trl._check_trl_version("1.16.9")
    for bad in ("1.15.2", "1.17.0", "2.0.0"):
        with pytest.raises(ImportError, match=r">=1\.16,<1\.17"):
            tsallis_trl._check_trl_version(bad)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(q=None), "q is required"),
        (dict(q=1.5), r"\[0, 1\]"),
        (dict(q="x"), "schedule"),
        (dict(q=lambda t: 2.0), r"\[0, 1\]"),
        (dict(estimator="garl_rlo"), "unknown estimator"),
        (dict(mode="reward"), "mode must be one of"),
        (dict(mode="likelihood", answer_marker=""), "answer_marker"),
        (dict(logprob_impl="cuda"), "logprob_impl"),
        (dict(beta=0.04), "beta"),
        (dict(num_iterations=2), "num_iterations"),
        (dict(top_entropy_quantile=0.5), "top_entropy_quantile"),
        (dict(num_generations=1, per_device_train_batch_size=1), "at least 2 generations"),
        (dict(q=lambda t: 0.5), "pickle"),
        (dict(q="half"), "string"),
        (dict(mask_truncated_completions=True), "mask_truncated_completions"),
        (dict(mode="likelihood", mask_truncated_completions=True), "mask_truncated_completions"),
        (dict(use_vllm=True), "vllm_importance_sampling_correction=False"),
    ],
)
def test_config_rejects_bad_options(tmp_path, overrides, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _config(tmp_path, **overrides)


def _q_half(step):
    """A module-level (hence picklable) q schedule."""
    return 0.5


def test_unpicklable_q_is_rejected_and_checkpoints_save(tmp_path):
    def closure(step):
        return 0.5

    with pytest.raises(ValueError, match="pickle.*module-level function"):
        _config(tmp_path, q=closure)
    with pytest.raises(ValueError, match="pickle"):
        _config(tmp_path, q=Callable(lambda t: 0.5))  # a schedule wrapping a lambda
    assert _config(tmp_path, q="0.25").q == 0.25  # a numeric string (YAML, env) is coerced
    for q in (Step(at_step=1), _q_half):
        torch.save(_config(tmp_path, q=q), tmp_path / "args.bin")
    # a real checkpoint save (Trainer._save does torch.save(self.args))
    trainer, *_ = _train(tmp_path, mode="verifier", q=_q_half, save_strategy="steps",
                         save_steps=1, per_device_train_batch_size=4)  # fmt: skip
    checkpoint = tmp_path / "out" / "checkpoint-1"
    saved = torch.load(checkpoint / "training_args.bin", weights_only=False)
    assert saved.q is _q_half and saved.q_schedule(0) == 0.5
    # PAFT's generator: saved with the checkpoint, restored on resume; evaluation has its own
    state = trainer._estimator_generator.get_state()
    assert (checkpoint / tsallis_trl.GENERATOR_STATE_FILE).is_file()
    torch.rand(5, generator=trainer._estimator_generator)
    torch.rand(3, generator=trainer._eval_estimator_generator)
    trainer._load_rng_state(str(checkpoint))
    assert torch.equal(trainer._estimator_generator.get_state(), state)
    assert not torch.equal(trainer._eval_estimator_generator.get_state(), state)
    trainer.args.estimator, trainer._estimator_fn = "paft", ESTIMATORS["paft"]
    eval_state = trainer._eval_estimator_generator.get_state()
    log_w = torch.log(torch.tensor([0.2, 0.5, 0.9, 0.1] * 2, dtype=torch.float64))
    trainer._rows(log_w, 0.5, "verifier", M, "eval")
    assert torch.equal(trainer._estimator_generator.get_state(), state)  # eval draws elsewhere
    assert not torch.equal(trainer._eval_estimator_generator.get_state(), eval_state)
    trainer._rows(log_w, 0.5, "verifier", M, "train")
    assert not torch.equal(trainer._estimator_generator.get_state(), state)


def test_q_parses_from_the_command_line(tmp_path):
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(TsallisGRPOConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--q", "0.5", "--use_cpu", "true", "--report_to", "none"]
    )
    assert args.q == 0.5 and args.q_schedule(3) == 0.5


# ----------------------------------------------------------------------------- answer marker


def test_marker_merged_with_neighbouring_text_is_found():
    """'#' alone is one token, but ' #' and '#4' are merged tokens inside text: the id match
    misses them and the decoded-text search finds them (tsallis.rollouts' convention: a token
    ending with the marker is a sampled marker, part of z; one running past it is 'merged')."""
    tok = merged_tokenizer()

    def enc(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    def decode(ids):
        return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    marker = enc("#")
    stops = {tok.eos_token_id}
    eos = [tok.eos_token_id]

    def cut(ids, **kw):
        c = split_rationale(ids, marker, stops, **kw)
        return c.rationale, c.end

    opts = dict(decode=decode, marker_text="#")
    assert cut(enc("ab #42"), **opts) == (enc("ab #"), "marker")  # ' #' ends with the marker
    assert cut(enc("ab#42"), **opts) == (enc("ab"), "merged")  # '#4' runs past it
    assert cut(enc("#42"), **opts) == ([], "merged")
    assert cut(enc("ab#x"), **opts) == (enc("ab#"), "marker")  # the id match
    assert cut(enc("ab") + eos + enc(" #4"), **opts) == (enc("ab") + eos, "eos")
    assert cut(enc("abc"), **opts) == (enc("abc"), "budget")
    assert cut(enc("a #4b#"), **opts) == (enc("a #"), "marker")  # the first occurrence wins
    assert cut(enc("ab #42")) == (enc("ab #42"), "budget")  # no text search: missed


def test_trainer_cut_uses_the_decoded_marker(tmp_path):
    tok = merged_tokenizer()
    model, _ = tiny_lm(0, tokenizer=tok)
    args = _config(tmp_path, mode="likelihood", answer_marker="#")
    trainer = TsallisGRPOTrainer(model=model, args=args, train_dataset=_dataset(),
                                 processing_class=tok)  # fmt: skip
    ids = tok("ab #42", add_special_tokens=False)["input_ids"]
    c = trainer._split_completion(ids)
    assert (c.rationale, c.forced) == (ids[:3], False)


_CHAR_TOK = char_tokenizer()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(list(range(0, 3)) + list(range(3, 45))), max_size=12))
def test_text_search_agrees_with_id_match_without_merges(ids):
    """With one token per character the decoded-text search and the id match agree."""
    tok = _CHAR_TOK
    marker_ids = tok("=#", add_special_tokens=False)["input_ids"]
    stops = {tok.eos_token_id}

    def decode(t):
        return tok.decode(t, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    ids = [i for i in ids if i != tok.unk_token_id]
    assert split_rationale(ids, marker_ids, stops, decode=decode, marker_text="=#") == (
        split_rationale(ids, marker_ids, stops)
    )


# ----------------------------------------------------------------------------- log-probs


def test_package_head_matches_trls_head(tmp_path):
    """The package's hidden-state head (loss, its gradient, log w) equals TRL's fused head with
    the same weighting, on left- and right-padded rows."""
    model, tok = tiny_lm(1)
    args = _config(tmp_path, mode="likelihood", logprob_impl="torch")
    trainer = TsallisGRPOTrainer(model=model, args=args, train_dataset=_dataset(),
                                 processing_class=tok)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    B, P, K = 4, 4, 7
    prompt = torch.randint(3, len(tok), (B, P), generator=g)
    prompt_mask = torch.ones_like(prompt)
    prompt_mask[0, :2] = 0  # left padding
    comp = torch.randint(3, len(tok), (B, K), generator=g)
    comp_mask = torch.ones_like(comp)
    comp_mask[1, -3:] = 0  # right padding
    span = torch.zeros(B, K, dtype=torch.int8)
    span[:, :3], span[:, 3:5] = 1, 2
    span[1, 4:] = 0
    coef = torch.randn(B, 2, generator=g)
    inputs = dict(prompt_ids=prompt, prompt_mask=prompt_mask, completion_ids=comp,
                  completion_mask=comp_mask, tsallis_span=span, tsallis_coef=coef)  # fmt: skip
    ids = torch.cat([prompt, comp], 1)
    att = torch.cat([prompt_mask, comp_mask], 1)
    out = {}
    for impl in ("torch", "trl"):
        trainer.args.logprob_impl = impl
        trainer.model.zero_grad()
        loss = trainer._compute_loss(trainer.model, inputs)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
        with torch.no_grad():
            log_w = trainer._answer_logprob(ids, att, comp, span == 2, batch_size=3)
        out[impl] = (loss.detach(), grads, log_w)
    torch.testing.assert_close(out["torch"][0], out["trl"][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["torch"][2], out["trl"][2], rtol=1e-6, atol=1e-5)
    for n, gr in out["trl"][1].items():
        torch.testing.assert_close(out["torch"][1][n], gr, rtol=1e-4, atol=1e-6, msg=n)
    assert float(out["torch"][2].max()) < 0


# ----------------------------------------------------------------------------- verifier mode


@pytest.mark.parametrize(
    ("estimator", "q", "extra"),
    [
        ("garl_rloo", 0.75, dict(per_device_train_batch_size=4, gradient_accumulation_steps=2)),
        ("grpo", 0.0, dict(logprob_impl="trl")),
        ("paft", 0.5, dict(paper_normalization=True)),
        ("garl", 0.5, dict(dataset=_uneven_dataset())),
    ],
)
def test_verifier_step_gradient_is_hand_computed(tmp_path, estimator, q, extra):
    trainer, tok, grads, init = _train(tmp_path, mode="verifier", estimator=estimator, q=q,
                                       **extra)  # fmt: skip
    assert len(grads.grads) == 1 and len(trainer.captured) == 1
    prompts, comps, _ = trainer.captured[0]
    if "dataset" in extra:  # prompts of different lengths in one batch: left padding
        assert len({len(p) for p in prompts}) > 1
    B = len(comps)
    G = B // M
    hand, _ = tiny_lm(0)
    logp = torch.stack([
        _hand_token_logps(hand, tok(p)["input_ids"], c).sum()
        for p, c in zip(prompts, comps, strict=True)
    ])  # fmt: skip
    rewards = low_share([tok.decode(c, skip_special_tokens=True) for c in comps])
    log_w = rewards_to_log_w(torch.tensor(rewards, dtype=torch.float64)).reshape(G, M)
    if estimator == "paft":  # the draws are random: take the trainer's, recompute the rest
        n = trainer.last_coefficients.draw_counts.double()
        w_bar = log_w.exp().mean(-1, keepdim=True)
        coef = w_bar ** (1 - q) * n / M / M**q
    else:
        coef = ESTIMATORS[estimator](log_w, q, mode="verifier").coef_z
    coef = coef.reshape(-1).float()
    torch.testing.assert_close(trainer.last_coefficients.coef_z.reshape(-1).float(), coef)
    loss = -(coef * logp).sum() / G
    loss.backward()
    _assert_grads_equal(hand, grads.grads[0])
    _check_metrics(trainer, likelihood=False)
    assert _params_changed(trainer, init)
    assert trainer.state.log_history[0]["tsallis/q"] == q


def test_verifier_reward_outside_unit_interval_is_an_error(tmp_path):
    def too_big(completions, **kwargs):
        return [2.0] * len(completions)

    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        _train(tmp_path, mode="verifier", reward_funcs=[too_big])


def test_none_rewards_are_skipped_like_trl_and_all_none_rows_are_an_error(tmp_path):
    def even_rows(completions, **kwargs):
        return [r if i % 2 == 0 else None for i, r in enumerate(low_share(completions))]

    def odd_rows(completions, **kwargs):
        return [r if i % 2 == 1 else None for i, r in enumerate(low_share(completions))]

    trainer, tok, _, _ = _train(tmp_path, mode="verifier", reward_funcs=[even_rows, odd_rows],
                                per_device_train_batch_size=4)  # fmt: skip
    _, comps, _ = trainer.captured[0]
    rewards = low_share([tok.decode(c, skip_special_tokens=True) for c in comps])
    log_w = rewards_to_log_w(torch.tensor(rewards, dtype=torch.float64)).reshape(-1, M)
    want = ESTIMATORS["garl_rloo"](log_w, 0.75, mode="verifier").coef_z
    torch.testing.assert_close(trainer.last_coefficients.coef_z, want)
    with pytest.raises(ValueError, match=r"every reward function returned None.*\[1, 3"):
        _train(tmp_path, mode="verifier", reward_funcs=[even_rows], per_device_train_batch_size=4)


def test_all_stalled_step_logs_no_nan(tmp_path):
    def zero(completions, **kwargs):
        return [0.0] * len(completions)

    trainer, *_ = _train(tmp_path, mode="verifier", reward_funcs=[zero], max_steps=2,
                         per_device_train_batch_size=4)  # fmt: skip
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for h in logs:
        assert h["tsallis/frac_stalled"] == 1.0
        assert math.isfinite(h.get("tsallis/log_w_mean", 0.0))


def test_multimodal_inputs_and_likelihood_tools_are_rejected(tmp_path, monkeypatch):
    from trl import GRPOTrainer

    original = GRPOTrainer._generate_and_score_completions

    def with_images(self, inputs):
        out = original(self, inputs)
        out["pixel_values"] = torch.zeros(len(inputs), 3)
        return out

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", with_images)
    with pytest.raises(ValueError, match="multimodal.*'pixel_values'"):
        _train(tmp_path, mode="verifier", per_device_train_batch_size=4)
    monkeypatch.undo()
    trainer = TsallisGRPOTrainer(model=tiny_lm(0)[0], args=_config(tmp_path, mode="likelihood"),
                                 train_dataset=_dataset(), processing_class=char_tokenizer())
    for key in ("mm_token_type_ids", "token_type_ids", "image_grid_thw"):
        with pytest.raises(ValueError, match=key):
            trainer._check_supported_inputs({key: torch.zeros(1)})
    with pytest.raises(ValueError, match="tools.*likelihood"):
        trainer._check_supported_inputs({"tool_mask": torch.ones(2, 3)})
    trainer._check_supported_inputs({"token_type_ids": None, "completion_ids": torch.ones(1)})


# ----------------------------------------------------------------------------- likelihood mode


@pytest.mark.parametrize(
    ("estimator", "q", "extra"),
    [
        ("garl_rloo", 0.75, dict()),
        ("garl", 1.0, dict(logprob_impl="trl", paper_normalization=True)),
        ("garl_rloo", 0.5, dict(dataset=_uneven_dataset())),
    ],
)
def test_likelihood_step_gradient_is_hand_computed(tmp_path, estimator, q, extra):
    trainer, tok, grads, init = _train(tmp_path, mode="likelihood", estimator=estimator, q=q,
                                       max_completion_length=5, **extra)  # fmt: skip
    prompts, comps, examples = trainer.captured[0]
    if "dataset" in extra:  # prompts of different lengths in one batch: left padding
        assert len({len(p) for p in prompts}) > 1
    G = len(comps) // M
    hand, _ = tiny_lm(0)
    marker = tok("=", add_special_tokens=False)["input_ids"]
    eos = tok.eos_token_id
    logp_z, logp_y = [], []
    n_forced = 0
    for p, c, ex in zip(prompts, comps, examples, strict=True):
        # the convention, by hand: a sampled marker or EOS ends z and is part of it; a marker
        # that was not sampled is forced after z, attended but in no span
        cut = next((i for i, t in enumerate(c) if t in (eos, marker[0])), None)
        z = c if cut is None else c[: cut + 1]
        forced = [] if cut is not None and c[cut] == marker[0] else marker
        n_forced += bool(forced)
        y = tok(ex["answer"], add_special_tokens=False)["input_ids"]
        lp = _hand_token_logps(hand, tok(p)["input_ids"], z + forced + y)
        logp_z.append(lp[: len(z)].sum())
        logp_y.append(lp[len(z) + len(forced) :].sum())
    logp_z, logp_y = torch.stack(logp_z), torch.stack(logp_y)
    log_w = logp_y.detach().double().reshape(G, M)
    normalize = extra.get("paper_normalization", False)
    coefs = ESTIMATORS[estimator](log_w, q, mode="likelihood", paper_normalization=normalize)
    cz, cy = coefs.coef_z.reshape(-1).float(), coefs.coef_y.reshape(-1).float()
    # log w comes from a batched, padded forward in the trainer and an unpadded one here: the
    # cancellation in c_m = w_m/w̄^q - (w̄_¬m)^(1-q) turns their ~1e-6 difference into ~1e-4
    ours = trainer.last_coefficients
    for got, want in ((ours.coef_z, cz), (ours.coef_y, cy)):
        torch.testing.assert_close(got.reshape(-1).float(), want, rtol=0,
                                   atol=1e-4 * float(want.abs().max()))  # fmt: skip
    loss = -(cz * logp_z + cy * logp_y).sum() / G
    loss.backward()
    _assert_grads_equal(hand, grads.grads[0])
    _check_metrics(trainer, likelihood=True)
    h = trainer.state.log_history[0]
    assert h["tsallis/frac_forced_marker"] == pytest.approx(n_forced / len(comps))
    assert h["tsallis/log_w_mean"] == pytest.approx(
        float(torch.logsumexp(log_w, -1).sub(math.log(M)).mean()), rel=1e-4
    )
    assert _params_changed(trainer, init)


class _Scripted(CapturingTrainer):
    """Replaces the sampled completions by scripted ones covering every end of a rationale:
    a sampled marker (followed by sampled answer text, dropped), a sampled EOS, the budget, a
    marker as the first token. The gradient check then covers each case deterministically."""

    SCRIPT = ("ab=9x", "a<eos>", "abcde", "=12", "c=3", "d<eos>", "", "ee=")

    def _generate(self, prompts):
        out = list(super()._generate(prompts))
        tok = self.processing_class
        ids = []
        for b in range(len(out[1])):
            text = self.SCRIPT[b % len(self.SCRIPT)]
            pieces = text.split("<eos>")
            row = tok(pieces[0], add_special_tokens=False)["input_ids"]
            if len(pieces) > 1:
                row = row + [tok.eos_token_id]
            ids.append(row[: self.args.max_completion_length])
        out[1] = ids
        out[3] = tok.batch_decode(ids, skip_special_tokens=True)
        return tuple(out)


@pytest.mark.parametrize("q", [0.0, 0.6])
def test_likelihood_gradient_for_every_end_of_a_rationale(tmp_path, q):
    trainer, tok, grads, _ = _train(tmp_path, mode="likelihood", q=q, cls=_Scripted,
                                    max_completion_length=5)  # fmt: skip
    prompts, comps, examples = trainer.captured[0]
    marker, eos = tok("=", add_special_tokens=False)["input_ids"], tok.eos_token_id
    G = len(comps) // M
    hand, _ = tiny_lm(0)
    logp_z, logp_y, ends = [], [], []
    for p, c, ex in zip(prompts, comps, examples, strict=True):
        cut = next((i for i, t in enumerate(c) if t in (eos, marker[0])), None)
        z = c if cut is None else c[: cut + 1]
        forced = [] if cut is not None and c[cut] == marker[0] else marker
        ends.append("budget" if cut is None else ("marker" if not forced else "eos"))
        y = tok(ex["answer"], add_special_tokens=False)["input_ids"]
        lp = _hand_token_logps(hand, tok(p)["input_ids"], z + forced + y)
        logp_z.append(lp[: len(z)].sum())
        logp_y.append(lp[len(z) + len(forced) :].sum())
    assert set(ends) == {"marker", "eos", "budget"}
    logp_z, logp_y = torch.stack(logp_z), torch.stack(logp_y)
    coefs = ESTIMATORS["garl_rloo"](logp_y.detach().double().reshape(G, M), q)
    cz, cy = coefs.coef_z.reshape(-1).float(), coefs.coef_y.reshape(-1).float()
    (-(cz * logp_z + cy * logp_y).sum() / G).backward()
    _assert_grads_equal(hand, grads.grads[0])
    h = trainer.state.log_history[0]
    n_forced = sum(e != "marker" for e in ends)
    assert h["tsallis/frac_forced_marker"] == pytest.approx(n_forced / len(ends))


def test_gradient_clipping_keeps_the_direction(tmp_path):
    """max_grad_norm > 0: the optimiser gets ∇L rescaled to norm <= max_grad_norm."""
    _, _, raw, _ = _train(tmp_path / "raw", mode="verifier", learning_rate=10.0)
    _, _, clipped, _ = _train(tmp_path / "clip", mode="verifier", learning_rate=10.0,
                              max_grad_norm=1e-3)  # fmt: skip
    a = torch.cat([g.reshape(-1) for g in raw.grads[0].values()])
    b = torch.cat([g.reshape(-1) for g in clipped.grads[0].values()])
    assert float(a.norm()) > 1e-3  # clipping is active
    assert float(b.norm()) == pytest.approx(1e-3, rel=1e-4)
    assert float(a @ b / (a.norm() * b.norm())) == pytest.approx(1.0, abs=1e-6)


def test_reward_round_off_is_accepted(tmp_path):
    """Ten reward functions of weight 0.1 that all return 1 sum to 1 + 1 ulp in float32."""
    funcs = [lambda completions, **kw: [1.0] * len(completions)] * 10
    trainer, *_ = _train(tmp_path, mode="verifier", reward_funcs=funcs,
                         reward_weights=[0.1] * 10, per_device_train_batch_size=4)  # fmt: skip
    assert trainer.last_rows.stats.frac_stalled == 0.0


@pytest.mark.parametrize(
    ("mode", "estimator"),
    [("likelihood", "paft"), ("likelihood", "grpo"), ("verifier", "rloo")],
)
def test_trains_with_estimator_and_q_schedule(tmp_path, mode, estimator):
    trainer, _, grads, init = _train(
        tmp_path, mode=mode, estimator=estimator, q=Step(at_step=1), max_steps=2,
        optim="adamw_torch", learning_rate=1e-2, per_device_train_batch_size=4,
    )  # fmt: skip
    assert len(grads.grads) == 2
    assert all(math.isfinite(float(g.abs().sum())) for d in grads.grads for g in d.values())
    _check_metrics(trainer, likelihood=mode == "likelihood")
    logged_q = [h["tsallis/q"] for h in trainer.state.log_history if "loss" in h]
    assert logged_q == [1.0, 0.0]
    assert _params_changed(trainer, init)


# ----------------------------------------------------------------------------- cold start

GOLD = "#42"  # marker '#', answer '42': never sampled by the untrained model in this budget


def _gold_logprob(model, tok, rationales):
    """Mean over fixed rationales z of log π('#42' | 'ab=' + z) (teacher-forced)."""
    prompt = tok("ab=")["input_ids"]
    y = tok(GOLD, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return float(torch.stack([
            _hand_token_logps(model, prompt, z + y)[len(z):].sum() for z in rationales
        ]).mean())  # fmt: skip


def test_cold_start_stock_grpo_stalls_tsallis_likelihood_learns(tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    from tsallis.integrations.trl import answer_match_reward

    ds = Dataset.from_dict({"prompt": ["ab="] * 64, "answer": ["42"] * 64})
    common = dict(
        use_cpu=True, bf16=False, report_to="none", save_strategy="no",
        per_device_train_batch_size=8, num_generations=M, max_completion_length=6,
        max_steps=4, logging_steps=1, disable_tqdm=True, learning_rate=3e-2,
        lr_scheduler_type="constant", seed=0,
    )  # fmt: skip
    g = torch.Generator().manual_seed(7)
    rationales = [torch.randint(3, 30, (int(n),), generator=g).tolist()
                  for n in torch.randint(0, 5, (8,), generator=g)]  # fmt: skip
    reward = answer_match_reward("#")

    model, tok = tiny_lm(5)
    before = _gold_logprob(model, tok, rationales)
    stock = GRPOTrainer(model=model, reward_funcs=[reward],
                        args=GRPOConfig(output_dir=str(tmp_path / "grpo"), **common),
                        train_dataset=ds, processing_class=tok)  # fmt: skip
    stock.train()
    rewards = [h["reward"] for h in stock.state.log_history if "reward" in h]
    assert len(rewards) == 4 and all(r == 0.0 for r in rewards)
    stock_after = _gold_logprob(stock.model, tok, rationales)
    assert stock_after == pytest.approx(before, abs=1e-4)  # zero advantages: nothing moves

    model, tok = tiny_lm(5)
    args = TsallisGRPOConfig(output_dir=str(tmp_path / "jq"), q=0.75, mode="likelihood",
                             answer_marker="#", logprob_impl="torch", **common)  # fmt: skip
    ours = TsallisGRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=ds,
                              processing_class=tok)  # fmt: skip
    ours.train()
    after = _gold_logprob(ours.model, tok, rationales)
    # the untrained model gives the 3-token gold answer ~ (1/44)^3; J_Q at q = 0.75 raises its
    # teacher-forced log-prob (-11.4 nats) by more than 3 nats in 4 steps (measured: 7.9)
    assert before < -9.0
    assert after - before > 3.0, (before, after)
    log_w = [h["tsallis/log_w_mean"] for h in ours.state.log_history if "loss" in h]
    assert log_w[-1] > log_w[0]


# ----------------------------------------------------------------------------- two processes


def test_two_processes_match_one(tmp_path):
    """torchrun --nproc_per_node 2 (gloo, CPU), groups split across the processes: the
    coefficients and the optimiser step equal a one-process run on the same data."""
    import dist_trl_worker

    out = tmp_path / "two.json"
    path = os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=path)  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(TESTS / "dist_trl_worker.py"), str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    try:
        one = {
            m: dist_trl_worker.run(m, str(tmp_path / f"one_{m}"))
            for m in ("verifier", "likelihood")
        }
        log, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log[-4000:]
    two = json.loads(out.read_text())
    for mode in ("verifier", "likelihood"):
        a, b = one[mode], two[mode]
        assert a["world"] == 1 and b["world"] == 2
        for key in ("coef_z", "coef_y"):
            torch.testing.assert_close(
                torch.tensor(b[key]), torch.tensor(a[key]), rtol=1e-6, atol=0
            )
        delta_a, delta_b = torch.tensor(a["delta"]), torch.tensor(b["delta"])
        assert float(delta_a.abs().max()) > 1e-3  # the step moved the parameters
        torch.testing.assert_close(delta_b, delta_a, atol=1e-6, rtol=1e-4)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
