r"""The Table-1 RL engine: the trainer's J_Q step on the HF base model, without TRL's overhead.

One step (:func:`rl_step`) is what ``tsallis.integrations.trl.TsallisGRPOTrainer`` does in one
optimiser step with ``num_iterations = 1``, no KL, no clipping, on G prompts × M completions:

1. sample M completions per prompt from the current policy (temperature 1, up to
   ``max_new`` tokens, a row ends at EOS);
2. likelihood mode: cut each completion into its rationale z (:func:`likelihood_rows`: the
   trainer's own cut, through the shared seam ``tsallis.rollouts`` when it is there), append the
   (forced) marker and the teacher-forced gold answer, log w = the answer span's log-prob (a
   no-grad pass); verifier mode: reward = exact match of the text after the marker
   (``answer_match_reward``), log w = log r;
3. the estimator's coefficients on the [G, M] log-weights (:func:`coefficients`, the trainer's
   call) and the loss L = -(1/G)·Σ_b [coef_z[b]·log π(z_b|x_b) + coef_y[b]·log π(y_b|x_b,z_b)]
   (:func:`tsallis.sequence_loss`, ``reduction="mean"``); verifier mode puts the whole
   completion (through its EOS) in the z span, as the trainer does;
4. one step of ``torch.optim.AdamW`` (weight decay 0: the trainer's ``adamw_torch``).

``tests/test_table1_engine.py`` checks that on the same sampled batch this loss has the
gradient of the trainer's, in both modes.  The training loop (:func:`train_run`) runs a fixed
number of steps (no freeze on escape: Table 1 reports the end of training), evaluating held-out
and training questions every ``eval_every`` steps (:func:`evaluate`).

q per step: a constant, :class:`tsallis.schedules.Step` (the SFT→RLVR schedule), or the
adaptive rule :func:`adaptive_q`.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from tsallis import get_estimator, rewards_to_log_w, sequence_loss
from tsallis.estimators import RANDOMIZED

from .table1_model import encode_words, sample
from .table1_task import MARKER, World, completion_words, question_words

__all__ = [
    "Rows",
    "likelihood_rows",
    "completion_logps",
    "coefficients",
    "HeldAdaptiveQ",
    "adaptive_q",
    "batch_loss",
    "rl_step",
    "evaluate",
    "train_run",
]


# ----------------------------------------------------------------------------- rows


@functools.cache
def trainer_uses_seam() -> bool:
    """Whether ``TsallisGRPOTrainer`` cuts its rows through the seam ``tsallis.rollouts`` (it
    imports its functions) rather than its own pre-seam ``split_rationale``."""
    from tsallis.integrations import trl

    return any(getattr(v, "__module__", None) == "tsallis.rollouts" for v in vars(trl).values())


def _row(comp, answer_ids, marker_ids, stop_ids):
    """(ids, rationale_len, forced_len, answer_len, forced) of one completion, cut as the
    trainer cuts it: through :func:`tsallis.rollouts.likelihood_row` (sampled marker and EOS in
    z, a forced marker in no span, log w over the gold answer) when the trainer uses the seam,
    else as the pre-seam trainer does (z before the marker or stop token, y* = marker + gold
    answer, log w over y*)."""
    if trainer_uses_seam():
        from tsallis.rollouts import likelihood_row

        r = likelihood_row(comp, answer_ids, marker_ids, stop_ids=tuple(stop_ids))
        return list(r.ids), r.rationale_len, r.forced_len, r.answer_len, bool(r.forced)
    from tsallis.integrations.trl import split_rationale

    z, forced = split_rationale(comp, marker_ids, stop_ids)
    y = list(marker_ids) + list(answer_ids)
    return list(z) + y, len(z), 0, len(y), bool(forced)


@dataclass
class Rows:
    """Likelihood rows of a batch: ``ids [B, T]`` right-padded (rationale, forced context,
    answer), ``rationale_mask``/``answer_mask [B, T]`` bool, ``valid [B, T]`` bool (not pad),
    ``forced [B]`` bool, ``rationale_len [B]``."""

    ids: torch.Tensor
    rationale_mask: torch.Tensor
    answer_mask: torch.Tensor
    valid: torch.Tensor
    forced: torch.Tensor
    rationale_len: torch.Tensor


def likelihood_rows(completions: torch.Tensor, answers: list[list[int]], marker_ids: list[int],
                    stop_ids, pad_id: int) -> Rows:  # fmt: skip
    """The trainer's likelihood rows of sampled completions ``[B, K]`` (pad after EOS) and the
    gold answer ids of each row."""
    stop = frozenset(int(s) for s in stop_ids)
    rows = []
    for b in range(completions.shape[0]):
        comp = [int(t) for t in completions[b]]
        # the trainer sees the completion through its mask: tokens up to and including EOS
        end = next((i + 1 for i, t in enumerate(comp) if t in stop), len(comp))
        rows.append(_row(comp[:end], answers[b], marker_ids, stop))
    T = max(len(r[0]) for r in rows)
    B = len(rows)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    rat = torch.zeros((B, T), dtype=torch.bool)
    ans = torch.zeros((B, T), dtype=torch.bool)
    for b, (r, lz, lf, ly, _f) in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        rat[b, :lz] = True
        ans[b, lz + lf : lz + lf + ly] = True
    valid = torch.zeros((B, T), dtype=torch.bool)
    for b, r in enumerate(rows):
        valid[b, : len(r[0])] = True
    forced = torch.tensor([r[4] for r in rows])
    rl = torch.tensor([r[1] for r in rows])
    return Rows(ids, rat, ans, valid, forced, rl)


def completion_logps(model, prompt_ids: torch.Tensor, comp_ids: torch.Tensor) -> torch.Tensor:
    """log π(c_t | x, c_<t) ``[B, K]`` (float32) of completion tokens ``[B, K]`` after
    equal-length prompts ``[B, Tp]``: one forward pass over the concatenation (causal, so the
    right padding of the completions never reaches an earlier token)."""
    ids = torch.cat([prompt_ids, comp_ids], dim=1)
    K = comp_ids.shape[1]
    logits = model(input_ids=ids, use_cache=False).logits[:, -K - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(-1, comp_ids[..., None])[..., 0]


# ----------------------------------------------------------------------------- coefficients


def coefficients(log_w: torch.Tensor, q: float, estimator: str, mode: str, M: int,
                 generator: torch.Generator | None = None):  # fmt: skip
    """The estimator on the [G, M] groups of the flat log-weights (float64, CPU): the
    trainer's ``_coefficients`` (``paper_normalization=False``)."""
    lw = log_w.detach().to("cpu", torch.float64).reshape(-1, M)
    options = {"mode": mode}
    if estimator in RANDOMIZED:
        options["generator"] = generator
    return get_estimator(estimator)(lw, q, **options)


def adaptive_q(log_w_bar: float, grad_scale: float, *, adam_eps: float, margin: float,
               q_min: float = 0.0) -> float:  # fmt: skip
    r"""The smallest q whose cold-start gradient clears Adam's ε by ``margin`` decades.

    At a cold start the largest coordinate of the J_Q gradient is ≈ P^(1-q)·s (Prop. 4.1 with s
    the score scale ‖∇log P‖_∞); Adam's step m̂/(√v̂ + ε) moves a coordinate at full speed only
    when it is ≫ ε, and the update of a coordinate ≪ ε is ≈ g/ε: stalled (the Adam threshold,
    q* = 1 - log(ε/s)/log P).  Requiring P^(1-q)·s ≥ ε·10^margin gives

        q(P) = clip(1 - log(ε·10^margin / s) / log P,  q_min, 1),

    evaluated per batch at P = w̄ (the batch's mean weight, ``log_w_bar`` its log) and s from
    the previous step.  Near a cold start (log P ≪ 0) this is the q that keeps Adam moving with
    the least amplification of noise; as P grows it falls toward q_min (RLVR's end of the
    continuum, which does not fit noisy labels as q = 1 does, Prop. C.2).  P ≥ 1 or a
    gradient already above the target give q_min.

    With no s yet (``grad_scale`` NaN) it returns 1.  :func:`train_run` therefore measures s
    before its first step with :func:`score_probe` (one backward pass at q = 1, no optimiser
    step): a first *step* at q = 1 would leave g0 ≈ s in Adam's second moment and, in the stall
    regime (p0 ≲ 1e-20, ε = 1e-8), stall the later ε·10^margin-sized steps for thousands of
    steps (measured with :mod:`sims.adaptive_escape`, docs/experiments/table1.md, "Adaptive q
    in the stall regime").  :class:`HeldAdaptiveQ` holds its first value until the escape.

    >>> round(adaptive_q(math.log(1e-20), 1.0, adam_eps=1e-8, margin=2.0), 3)
    0.7
    >>> adaptive_q(-1e-9, 1.0, adam_eps=1e-8, margin=2.0)
    0.0
    """
    if not (math.isfinite(grad_scale) and grad_scale > 0):
        return 1.0  # no score measured yet (step 0): the log-likelihood end measures s
    if not log_w_bar < 0:
        return float(q_min)
    if log_w_bar == -math.inf:
        return 1.0
    target = math.log(adam_eps) + margin * math.log(10.0) - math.log(grad_scale)
    return float(min(1.0, max(q_min, 1.0 - target / log_w_bar)))


class HeldAdaptiveQ:
    r"""The adaptive q of this package's Table-1 runs: :func:`adaptive_q` chosen once, at the
    first call with a measured score scale s, held until the batch P reaches ``delta`` (the
    escape), then :func:`adaptive_q` at every step.  A callable ``(log P, s) -> q``.

    Why hold: the per-step rule keeps the gradient at ε·10^margin all the way up, so Adam moves
    θ by about lr per step, while a fixed q lets P^(1-q)·s grow as P rises and Adam's lagging v̂
    (β2 = 0.999) turn that growth into steps above lr.  Measured on the exact-gradient sigmoid
    and latent models at p0 = 1e-20/1e-30 (:mod:`sims.adaptive_escape`): the held rule escapes
    within 1.1x of the best fixed q of the grid, the per-step rule 2.1-2.3x slower.  After the
    escape q falls toward ``q_min`` (RLVR's end, which fits noisy labels least, Prop. C.2).

    >>> rule = HeldAdaptiveQ(adam_eps=1e-8, margin=2.0, delta=0.5)
    >>> round(rule(math.log(1e-20), 1.0), 3), round(rule(math.log(1e-10), 1.0), 3)
    (0.7, 0.7)
    >>> rule(math.log(0.6), 1.0)
    0.0
    """

    def __init__(self, *, adam_eps: float, margin: float, delta: float, q_min: float = 0.0):
        if not 0.0 < delta <= 1.0:
            raise ValueError(f"delta must lie in (0, 1], got {delta!r}")
        self.adam_eps, self.margin, self.q_min = adam_eps, margin, q_min
        self.log_delta = math.log(delta)
        self.held: float | None = None
        self.escaped = False

    def __call__(self, log_p: float, grad_scale: float) -> float:
        q = adaptive_q(log_p, grad_scale, adam_eps=self.adam_eps, margin=self.margin,
                       q_min=self.q_min)  # fmt: skip
        self.escaped = self.escaped or log_p >= self.log_delta
        if self.escaped or not math.isfinite(grad_scale):
            return q
        if self.held is None:
            self.held = q
        return self.held


# ----------------------------------------------------------------------------- one step


@dataclass
class Batch:
    """One sampled batch: prompt ids [B, Tp], completions [B, K], gold (possibly noisy) answer
    ids per row, the verifier rewards [B], the likelihood rows (likelihood mode)."""

    prompt_ids: torch.Tensor
    completions: torch.Tensor
    answers: list
    rewards: torch.Tensor
    rows: Rows | None


def _answer_text_match(tok, comp: torch.Tensor, answers_words: list[str]) -> torch.Tensor:
    """Exact match of the text after the first marker (the trainer's ``answer_match_reward``)."""
    texts = tok.batch_decode(comp, skip_special_tokens=True)
    out = []
    for t, a in zip(texts, answers_words, strict=True):
        _, sep, after = t.partition(MARKER)
        out.append(float(bool(sep) and after.strip() == a.strip()))
    return torch.tensor(out, dtype=torch.float64)


def make_batch(model, tok, world: World, starts: list[int], answers: dict, M: int,
               max_new: int, generator: torch.Generator, *, mode: str) -> Batch:  # fmt: skip
    """Sample M completions for each start (rows prompt-major) and score them."""
    words = [question_words(world, a) for a in starts for _ in range(M)]
    prompt = torch.tensor(encode_words(tok, words))
    comp = sample(model, prompt, max_new, tok.eos_token_id, tok.pad_token_id, generator)
    ans_ids = [encode_words(tok, [[f"A{x}" for x in answers[a]]])[0] for a in starts for _ in
               range(M)]  # fmt: skip
    ans_text = [" ".join(f"A{x}" for x in answers[a]) for a in starts for _ in range(M)]
    rewards = _answer_text_match(tok, comp, ans_text)
    rows = None
    if mode == "likelihood":
        marker = encode_words(tok, [[MARKER]])[0]
        rows = likelihood_rows(comp, ans_ids, marker, {tok.eos_token_id, tok.pad_token_id},
                               tok.pad_token_id)  # fmt: skip
    return Batch(prompt, comp, ans_ids, rewards, rows)


def span_logps(model, batch: Batch, mode: str, eos_id: int, pad_id: int):
    """(logp_z [B], logp_y [B] or None, answer-token log-probs are inside): the summed
    log-probs of each row's rationale and answer spans under ``model`` (with gradient)."""
    if mode == "likelihood":
        r = batch.rows
        lp = completion_logps(model, batch.prompt_ids, r.ids)
        zero = torch.zeros((), dtype=lp.dtype)
        logp_z = torch.where(r.rationale_mask, lp, zero).sum(-1)
        logp_y = torch.where(r.answer_mask, lp, zero).sum(-1)
        return logp_z, logp_y
    comp = batch.completions
    lp = completion_logps(model, batch.prompt_ids, comp)
    # TRL's completion mask: tokens up to and including the first EOS
    is_eos = comp == eos_id
    after = (is_eos.cumsum(-1) - is_eos.long()) > 0
    mask = ~after & (comp != pad_id) | is_eos & ~after
    return torch.where(mask, lp, torch.zeros((), dtype=lp.dtype)).sum(-1), None


def batch_loss(model, batch: Batch, q: float, *, estimator: str, mode: str, M: int, eos_id: int,
               pad_id: int, generator=None):  # fmt: skip
    """(loss L, coefficients, log w [B]) of one batch: the trainer's surrogate."""
    if mode == "likelihood":
        with torch.no_grad():
            _, lw = span_logps(model, batch, mode, eos_id, pad_id)
        log_w = lw.double()
    else:
        log_w = rewards_to_log_w(batch.rewards)
    coefs = coefficients(log_w, q, estimator, mode, M, generator)
    logp_z, logp_y = span_logps(model, batch, mode, eos_id, pad_id)
    loss = sequence_loss(logp_z, logp_y, coefs.coef_z.reshape(-1).float(),
                         coefs.coef_y.reshape(-1).float(), group_size=M,
                         reduction="mean")  # fmt: skip
    return loss, coefs, log_w


def _adaptive_q_of(adam_eps: float, margin: float, log_p: float, grad_scale: float) -> float:
    return adaptive_q(log_p, grad_scale, adam_eps=adam_eps, margin=margin)


def score_probe(model, batch: Batch, log_w_bar: float, **kw) -> float:
    """The score scale s = max |∂ℓ_1/∂θ| of ``batch`` at q = 1 (``log_w_bar`` ≤ 0 its log w̄,
    the amplification P^0 = 1), from one backward pass and no optimiser step: the adaptive
    rule's s before its first step, so Adam's moments only ever see steps at the chosen q.
    Gradients are cleared afterwards; NaN when the batch carries no gradient."""
    model.zero_grad(set_to_none=True)
    loss, _, _ = batch_loss(model, batch, 1.0, **kw)
    loss.backward()
    gmax = max((float(p.grad.abs().max()) for p in model.parameters() if p.grad is not None),
               default=0.0)  # fmt: skip
    model.zero_grad(set_to_none=True)
    return gmax if gmax > 0 else math.nan


def rl_step(model, opt, batch: Batch, q: float, **kw):
    """One optimiser step on ``batch``; returns (coefficients, log w, max |gradient|)."""
    opt.zero_grad(set_to_none=True)
    loss, coefs, log_w = batch_loss(model, batch, q, **kw)
    loss.backward()
    gmax = max(float(p.grad.abs().max()) for p in model.parameters() if p.grad is not None)
    opt.step()
    return coefs, log_w, gmax


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def _teacher_forced(model, tok, world, starts, answers, comp):
    """log w and log F [B] of sampled completions: F = Π over answer slots of the probability
    of the answer alphabet (the format), w the gold answer's probability (format × content)."""
    marker = encode_words(tok, [[MARKER]])[0]
    M = comp.shape[0] // len(starts)
    ans_ids = [encode_words(tok, [[f"A{x}" for x in answers[a]]])[0] for a in starts for _ in
               range(M)]  # fmt: skip
    rows = likelihood_rows(comp, ans_ids, marker, {tok.eos_token_id, tok.pad_token_id},
                           tok.pad_token_id)  # fmt: skip
    words = [question_words(world, a) for a in starts for _ in range(M)]
    prompt = torch.tensor(encode_words(tok, words))
    ids = torch.cat([prompt, rows.ids], 1)
    K = rows.ids.shape[1]
    logp = torch.log_softmax(model(input_ids=ids, use_cache=False).logits[:, -K - 1 : -1].float(),
                             -1)  # fmt: skip
    tok_lp = logp.gather(-1, rows.ids[..., None])[..., 0]
    vocab = tok.get_vocab()
    alpha = torch.tensor([vocab[f"A{i}"] for i in range(world.n_entities)])
    alpha_lp = torch.logsumexp(logp[..., alpha], -1)
    # the answer-alphabet slots: answer-mask positions holding an answer-alphabet token
    is_alpha = torch.isin(rows.ids, alpha) & rows.answer_mask
    zero = torch.zeros((), dtype=tok_lp.dtype)
    log_w = torch.where(rows.answer_mask, tok_lp, zero).sum(-1).double()
    log_f = torch.where(is_alpha, alpha_lp, zero).sum(-1).double()
    return log_w, log_f, rows


def _log_mean_exp(x: torch.Tensor) -> float:
    return float(torch.logsumexp(x, 0) - math.log(x.numel()))


def evaluate(model, tok, world: World, starts, answers: dict, *, k: int, max_new: int,
             generator: torch.Generator, clean: dict | None = None) -> dict:  # fmt: skip
    """Sampled evaluation of the questions about ``starts`` (k completions each).

    Returns pass@1 (mean exact match over the k samples and the questions), majority@k (the
    most frequent sampled answer text, ties to the earliest, equals the gold answer; a sample
    without a marker answers nothing), log P̂ (log of the mean teacher-forced gold-answer
    probability after the sampled rationales, log space), log F̂ (the same for the answer
    alphabet's probability at the answer slots) and log C = log P̂ - log F̂, the fraction of
    forced markers and the mean rationale length.  ``answers`` are the labels scored against
    (noisy ones for training questions); ``clean`` (optional) the clean labels to score too
    (``*_clean`` entries).
    """
    starts = list(starts)
    words = [question_words(world, a) for a in starts for _ in range(k)]
    prompt = torch.tensor(encode_words(tok, words))
    comp = sample(model, prompt, max_new, tok.eos_token_id, tok.pad_token_id, generator)
    texts = tok.batch_decode(comp, skip_special_tokens=True)
    sampled = []
    for t in texts:
        _, sep, after = t.partition(MARKER)
        sampled.append(after.strip() if sep else None)
    out = {}
    for tag, labels in (("", answers), ("_clean", clean)):
        if labels is None:
            continue
        hit, maj = [], []
        for i, a in enumerate(starts):
            gold = " ".join(f"A{x}" for x in labels[a])
            s = sampled[i * k : (i + 1) * k]
            hit.append(np.mean([x == gold for x in s]))
            votes = Counter(x for x in s if x is not None)
            top = max(votes.items(), key=lambda kv: (kv[1], -s.index(kv[0])))[0] if votes else None
            maj.append(float(top == gold))
        out[f"pass_at_1{tag}"] = float(np.mean(hit))
        out[f"majority_at_k{tag}"] = float(np.mean(maj))
    log_w, log_f, rows = _teacher_forced(model, tok, world, starts, answers, comp)
    out["log_p"] = _log_mean_exp(log_w)
    out["log_f"] = _log_mean_exp(log_f)
    out["log_c"] = out["log_p"] - out["log_f"]
    out["frac_forced"] = float(rows.forced.double().mean())
    out["rationale_len"] = float(rows.rationale_len.double().mean())
    chain_ok = []
    for i, a in enumerate(starts):
        want = completion_words(_chain(world, a), [])[:-1]
        for j in range(k):
            got = tok.convert_ids_to_tokens(comp[i * k + j].tolist())
            chain_ok.append(got[: len(want)] == want)
    out["chain_written"] = float(np.mean(chain_ok))
    return out


def _chain(world, a):
    from .table1_task import chain

    return chain(world, a, world.hops)


# ----------------------------------------------------------------------------- training


def q_schedule(setting: dict):
    """The q of each step: a callable step -> q, or ``"adaptive"``."""
    from tsallis.schedules import Constant, Step

    sched = setting.get("schedule")
    if sched == "adaptive":
        return "adaptive"
    if isinstance(sched, dict) and "sft_steps" in sched:
        return Step(at_step=int(sched["sft_steps"]), q_before=1.0, q_after=float(setting["q"]))
    return Constant(0.0 if setting["q"] is None else float(setting["q"]))


def _torch_seed(key: int) -> int:
    return int(key) & (2**63 - 1)


def train_run(model, tok, world: World, setting: dict, key: int, answers: dict,
              clean: dict) -> dict:  # fmt: skip
    """Train ``model`` in place for ``setting["steps"]`` steps; per-step and per-eval arrays.

    ``setting``: estimator, mode, q, schedule (None, {"sft_steps": S} or "adaptive"), G, M, lr,
    adam_eps, max_new, eval_every, eval_k, eval_train_n (how many training questions, the first
    in order, are evaluated), delta (escape threshold on the batch's P̂), adaptive_margin,
    adaptive ("held", the default: :class:`HeldAdaptiveQ`; "per_step": :func:`adaptive_q` at
    every step).  The adaptive rule's first s comes from :func:`score_probe` (no optimiser
    step), later ones from the previous step's gradient.
    ``key`` seeds prompts, samples and PAFT's draws.
    """
    G, M, S = setting["G"], setting["M"], setting["steps"]
    est, mode = setting["estimator"], setting["mode"]
    if setting.get("adaptive", "held") not in ("held", "per_step"):
        raise ValueError(f"adaptive must be 'held' or 'per_step', got {setting['adaptive']!r}")
    gen = torch.Generator().manual_seed(_torch_seed(key))
    eval_gen = torch.Generator()
    est_gen = torch.Generator().manual_seed(_torch_seed(key ^ 0xE57))
    opt = torch.optim.AdamW(model.parameters(), lr=setting["lr"], betas=(0.9, 0.999),
                            eps=setting["adam_eps"], weight_decay=0.0)  # fmt: skip
    sched = q_schedule(setting)
    train = list(world.train)
    rng = np.random.default_rng([_torch_seed(key) % (2**32), 7])
    rec = {k: np.full(S, np.nan) for k in ("log_p", "reward", "frac_stalled", "q", "frac_forced",
                                            "rationale_len", "grad_max")}  # fmt: skip
    eval_steps = sorted(set(range(0, S + 1, setting["eval_every"])) | {S})
    ev = {}
    gscale = math.nan
    if setting.get("adaptive", "held") == "held":
        q_rule = HeldAdaptiveQ(adam_eps=setting["adam_eps"], margin=setting["adaptive_margin"],
                               delta=setting["delta"])  # fmt: skip
    else:
        q_rule = functools.partial(_adaptive_q_of, setting["adam_eps"], setting["adaptive_margin"])
    kw = dict(estimator=est, mode=mode, M=M, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
              generator=est_gen)  # fmt: skip
    for step in range(S + 1):
        if step in eval_steps:
            model.eval()
            for split, starts, labels, cl in (("heldout", world.heldout, clean, None),
                                              ("train", train[: setting["eval_train_n"]],
                                               answers, clean)):  # fmt: skip
                eval_gen.manual_seed(_torch_seed(key ^ (step * 7919 + (split == "train"))))
                r = evaluate(model, tok, world, starts, labels, k=setting["eval_k"],
                             max_new=setting["max_new"], generator=eval_gen, clean=cl)  # fmt: skip
                for name, v in r.items():
                    ev.setdefault(f"{split}_{name}", []).append(v)
        if step == S:
            break
        starts = [int(x) for x in rng.choice(train, size=G, replace=False)]
        batch = make_batch(model, tok, world, starts, answers, M, setting["max_new"], gen,
                           mode=mode)  # fmt: skip
        # P̂ of the batch: teacher-forced gold-answer probability after the sampled rationales
        # (measured the same way in both modes)
        with torch.no_grad():
            log_w_tf, _, rows = _teacher_forced(model, tok, world, starts, answers,
                                                batch.completions)  # fmt: skip
        lwbar = _log_mean_exp(log_w_tf)
        if sched == "adaptive":
            if not math.isfinite(gscale):  # first step: measure s without an optimiser step
                model.train()
                gscale = score_probe(model, batch, lwbar, **kw)
            q = q_rule(lwbar, gscale)
        else:
            q = float(sched(step))
        model.train()
        coefs, _log_w, gmax = rl_step(model, opt, batch, q, **kw)
        model.eval()
        # the score scale s for the adaptive rule: the step's largest gradient component
        # divided by the amplification it carried (P^(1-q) at P = w̄)
        gscale = gmax / math.exp((1.0 - q) * min(lwbar, 0.0)) if gmax > 0 else math.nan
        rec["log_p"][step] = lwbar
        rec["reward"][step] = float(batch.rewards.mean())
        rec["frac_stalled"][step] = float(coefs.stalled.double().mean())
        rec["q"][step] = q
        rec["frac_forced"][step] = float(rows.forced.double().mean())
        rec["rationale_len"][step] = float(rows.rationale_len.double().mean())
        rec["grad_max"][step] = gmax
    above = np.nonzero(rec["log_p"] >= math.log(setting["delta"]))[0]
    out = {f"step_{k}": v for k, v in rec.items()}
    out.update({f"eval_{k}": np.asarray(v) for k, v in ev.items()})
    out["eval_steps"] = np.asarray(eval_steps)
    out["escape_step"] = np.array(int(above[0]) if above.size else -1)
    return out
