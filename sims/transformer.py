r"""A tiny causal transformer that samples its own rationales: cold start on a synthetic task.

The task (:class:`Task`) is a small computation over the digits ``0..n-1``:

* prompt ``x = (a, b)`` (two digit tokens, uniform over the n² prompts);
* rationale ``z``: up to ``R`` tokens the policy samples itself from its full softmax; it ends when
  the policy samples the marker token, or the marker is *forced* after ``R`` tokens (like a
  forced ``</think>``); a forced marker is not a sample, so its log-prob is in no span;
* gold answer ``y* = (A[(a + b) mod n], A[(a + 2b) mod n], ...)``, ``L`` answer tokens from a
  separate answer alphabet ``A_0..A_{n-1}``, teacher-forced after the marker (likelihood mode:
  the weight is w(z) = p(y* | x, z)) or sampled and scored by exact match (verifier mode, w ∈
  {0, 1}).  The intermediate results ``(a + l·b) mod n`` written as digits in the rationale make
  the answer a copy (with an alphabet shift) of earlier tokens, so a rationale *can* help.

Vocabulary: digits ``0..n-1``, the marker ``n``, answer tokens ``n+1..2n`` (V = 2n + 1).

**Cold start.** P = E_x E_z p(y* | x, z) starts at p0, set by an
initial output bias ``-β`` on the answer tokens (nothing else changes: same architecture,
lengths and task).  With small weights the logits are ≈ the bias, so each answer token has
probability p_tok = e^(-β)/((n + 1) + n e^(-β)) and p0 ≈ p_tok^L; :func:`bias_for_p0` inverts
this (any p0 < n^(-L)).  The run measures its actual P (see below), and reports it.

**The policy** (:func:`forward`) is a pre-LayerNorm transformer (token + position embeddings,
``layers`` blocks of causal multi-head attention and a GELU MLP, final LayerNorm, unembedding
with bias) written with a leading *ensemble* dimension E on every weight: E independent runs
(settings × seeds) are one batched program, and member e's logits depend only on member e's
weights and tokens.

**Training** (:func:`train`): each step draws G prompts and M rationales per prompt, builds the
sequences, and calls :func:`tsallis.tsallis_logits_loss` on the shifted logits (the same entry a
user's trainer takes, ``kernels`` torch path on CPU) with any estimator of
:data:`tsallis.ESTIMATORS`; the loss is the mean over the G prompts.  SGD or Adam
(:func:`sims.training.adam_update`: bias-corrected, configurable ε) per member, per-member
learning rate and q, and q may follow the SFT→RLVR step
schedule :class:`tsallis.schedules.Step` (q = 1 before a switch step, then the member's q),
evaluated for all members at once by :func:`q_at_step`.

**Measuring P.** At every step, before the update, P̂ = mean over the step's G·M sampled
(x, z) of p(y* | x, z), computed in log space (logsumexp of the teacher-forced answer
log-probs): an unbiased Monte Carlo estimate of P.  Verifier mode computes the same
teacher-forced weights on its sampled rationales (an extra no-grad pass), so both modes measure
P identically.  The escape step is the first step with P̂ ≥ δ.  :func:`estimate_p` gives a
lower-variance estimate (every prompt, many rationales) used for p0.  The steps run in the
shared freeze-on-escape loop :func:`sims.training.run_to_escape` in its masking style: an
escaped member (``freeze_escaped``) stays in the ensemble with its weights and Adam state
frozen, its update masked to zero; a diverged one (non-finite weights) is frozen too, its
weights parked at a finite stand-in, and counts as censored unless it had escaped before.

**Randomness.** Every random number (initial weights, prompts, token draws) comes from
:func:`sims.rng.counter_uniform` keyed by the member's key and the step: a run is a pure function
of (settings, seed) and does not depend on which other runs share its batch.  The one exception
is PAFT's resampling, drawn by :func:`tsallis.estimators.paft` from one ``torch.Generator``
seeded by ``paft_seed``: a pure function of the whole batch, so experiments run each PAFT setting
as a batch of its own, seeded by that setting's id and seeds (``sims.experiments.lm_cold_start``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from tsallis import shift_for_causal_lm, tsallis_logits_loss
from tsallis.estimators import RANDOMIZED, get_estimator

from .rng import counter_uniform
from .training import adam_update, run_to_escape

__all__ = [
    "Task",
    "ModelSpec",
    "bias_for_p0",
    "init_params",
    "forward",
    "gold_answers",
    "sample_sequences",
    "answer_logprob",
    "sequence_loss",
    "estimate_p",
    "q_at_step",
    "TrainResult",
    "train",
]

_DTYPE = torch.float32


@dataclass(frozen=True)
class Task:
    """The synthetic reasoning task: digits base ``n``, answer length ``L``, rationale budget ``R``.

    Sequence layout (length ``T = 2 + R + 1 + L``): prompt at 0, 1; rationale tokens at
    2..2+k-1 (k ≤ R sampled tokens), the marker at 2+k; the answer at 2+k+1..2+k+L; filler after.
    """

    n: int = 3
    L: int = 2
    R: int = 2

    def __post_init__(self):
        for name, v, lo in (("n", self.n, 2), ("L", self.L, 1), ("R", self.R, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"Task.{name} must be an integer >= {lo}, got {v!r}")

    @property
    def V(self) -> int:
        return 2 * self.n + 1

    @property
    def marker(self) -> int:
        return self.n

    @property
    def T(self) -> int:
        return 3 + self.R + self.L

    @property
    def n_prompts(self) -> int:
        return self.n * self.n

    def p0_max(self) -> float:
        """The largest p0 the answer bias reaches (β -> -inf): n^(-L)."""
        return float(self.n) ** (-self.L)


@dataclass(frozen=True)
class ModelSpec:
    """Width ``d`` (≤ 64), ``heads`` (dividing d), ``layers`` (1 or 2), MLP width ``mlp·d``,
    init scale ``init_std``."""

    d: int = 16
    heads: int = 1
    layers: int = 1
    mlp: int = 2
    init_std: float = 0.02

    def __post_init__(self):
        if not (isinstance(self.d, int) and 1 <= self.d <= 64):
            raise ValueError(f"ModelSpec.d must be an int in [1, 64], got {self.d!r}")
        if not (isinstance(self.heads, int) and self.heads >= 1 and self.d % self.heads == 0):
            raise ValueError(f"ModelSpec.heads must divide d = {self.d}, got {self.heads!r}")
        if not (isinstance(self.mlp, int) and self.mlp >= 1):
            raise ValueError(f"ModelSpec.mlp must be a positive int, got {self.mlp!r}")
        if self.layers not in (1, 2):
            raise ValueError(f"ModelSpec.layers must be 1 or 2, got {self.layers!r}")
        if not self.init_std > 0:
            raise ValueError(f"ModelSpec.init_std must be > 0, got {self.init_std!r}")


def bias_for_p0(task: Task, p0: float) -> float:
    r"""The answer-token bias β with p_tok(β)^L = p0 at zero weights:

        p_tok = e^(-β)/((n + 1) + n·e^(-β))  =>  β = -log(p_tok·(n + 1)/(1 - n·p_tok)),

    p_tok = p0^(1/L).  ValueError unless 0 < p0 < n^(-L).

    >>> t = Task(n=4, L=2, R=3)
    >>> b = bias_for_p0(t, 1e-6)
    >>> p = math.exp(-b) / (5 + 4 * math.exp(-b))
    >>> round(math.log10(p ** 2), 6)
    -6.0
    """
    p0 = float(p0)
    if not (0.0 < p0 < task.p0_max()):
        raise ValueError(
            f"p0 must lie in (0, n^-L) = (0, {task.p0_max():.3g}) for this task, got {p0!r}"
        )
    log_tok = math.log(p0) / task.L
    p_tok = math.exp(log_tok)
    # -log(p_tok (n+1) / (1 - n p_tok)) in log space (p_tok may be 1e-35)
    return -(log_tok + math.log(task.n + 1) - math.log1p(-task.n * p_tok))


# ----------------------------------------------------------------------------- parameters


def _normal(keys: torch.Tensor, step: int, n: int) -> torch.Tensor:
    """Standard normals [E, n] from counter uniforms (Box-Muller), float64."""
    m = (n + 1) // 2
    u = counter_uniform(keys, step, 2 * m)
    u1, u2 = u[:, :m], u[:, m:]
    r = torch.sqrt(-2.0 * torch.log1p(-u1))  # 1 - u1 in (0, 1]
    z = torch.cat([r * torch.cos(2 * math.pi * u2), r * torch.sin(2 * math.pi * u2)], dim=1)
    return z[:, :n]


def _shapes(task: Task, spec: ModelSpec) -> dict[str, tuple]:
    d, V, T = spec.d, task.V, task.T
    s = {"emb": (V, d), "pos": (T, d)}
    for i in range(spec.layers):
        s.update(
            {
                f"l{i}.ln1_g": (d,), f"l{i}.ln1_b": (d,), f"l{i}.qkv": (d, 3 * d),
                f"l{i}.o": (d, d), f"l{i}.ln2_g": (d,), f"l{i}.ln2_b": (d,),
                f"l{i}.fc": (d, spec.mlp * d), f"l{i}.fc_b": (spec.mlp * d,),
                f"l{i}.proj": (spec.mlp * d, d),
            }
        )  # fmt: skip
    s.update({"lnf_g": (d,), "lnf_b": (d,), "out": (d, V), "out_b": (V,)})
    return s


def init_params(task: Task, spec: ModelSpec, keys, betas) -> dict[str, torch.Tensor]:
    """Initial weights of E members, a pure function of each member's key and β.

    Matrices and embeddings ~ N(0, init_std²); LayerNorm gains 1, biases 0; the output bias is 0
    on digits and marker and ``-β_e`` on the answer tokens.  Returns ``{name: [E, *shape]}``.
    """
    keys = torch.as_tensor(np.asarray(keys, dtype=np.int64))
    betas = torch.as_tensor(np.asarray(betas, dtype=np.float64))
    if keys.dim() != 1 or betas.shape != keys.shape:
        raise ValueError(
            f"keys and betas must be 1-d of equal length, got {tuple(keys.shape)} and "
            f"{tuple(betas.shape)}"
        )
    E = keys.shape[0]
    shapes = _shapes(task, spec)
    total = sum(math.prod(s) for s in shapes.values())
    z = _normal(keys, 2**40, total) * spec.init_std
    params, off = {}, 0
    for name, shp in shapes.items():
        k = math.prod(shp)
        if name.endswith(("_g",)):
            t = torch.ones(E, *shp, dtype=torch.float64)
        elif name.endswith(("_b",)) and name != "out_b":
            t = torch.zeros(E, *shp, dtype=torch.float64)
        elif name == "out_b":
            t = torch.zeros(E, *shp, dtype=torch.float64)
            t[:, task.n + 1 :] = -betas[:, None]
        else:
            t = z[:, off : off + k].reshape(E, *shp)
        off += k
        params[name] = t.to(_DTYPE).contiguous()
    return params


def _ln(h, g, b):
    mu = h.mean(-1, keepdim=True)
    var = h.var(-1, keepdim=True, unbiased=False)
    shape = (g.shape[0],) + (1,) * (h.dim() - 2) + (g.shape[-1],)
    return (h - mu) * torch.rsqrt(var + 1e-5) * g.reshape(shape) + b.reshape(shape)


def forward(params: dict, ids: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """Logits ``[E, N, T, V]`` of token ids ``[E, N, T]`` (causal: position t sees 0..t).

    Member e uses only ``params[name][e]``.
    """
    E, N, T = ids.shape
    emb = params["emb"]
    V, d = emb.shape[1], emb.shape[2]
    H = spec.heads
    dh = d // H
    onehot = torch.nn.functional.one_hot(ids, V).to(emb.dtype).reshape(E, N * T, V)
    h = torch.bmm(onehot, emb).reshape(E, N, T, d) + params["pos"][:, None, :T, :]
    causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
    for i in range(spec.layers):
        p = f"l{i}."
        x = _ln(h, params[p + "ln1_g"], params[p + "ln1_b"])
        qkv = torch.bmm(x.reshape(E, N * T, d), params[p + "qkv"]).reshape(E, N, T, 3, H, dh)
        q, k, v = qkv.unbind(3)  # [E, N, T, H, dh]
        att = torch.einsum("enthc,enshc->enhts", q, k) / math.sqrt(dh)
        att = att.masked_fill(~causal, float("-inf")).softmax(-1)
        o = torch.einsum("enhts,enshc->enthc", att, v).reshape(E, N * T, d)
        h = h + torch.bmm(o, params[p + "o"]).reshape(E, N, T, d)
        x = _ln(h, params[p + "ln2_g"], params[p + "ln2_b"]).reshape(E, N * T, d)
        f = torch.nn.functional.gelu(torch.bmm(x, params[p + "fc"]) + params[p + "fc_b"][:, None])
        h = h + torch.bmm(f, params[p + "proj"]).reshape(E, N, T, d)
    x = _ln(h, params["lnf_g"], params["lnf_b"]).reshape(E, N * T, d)
    logits = torch.bmm(x, params["out"]) + params["out_b"][:, None, :]
    return logits.reshape(E, N, T, V)


# ----------------------------------------------------------------------------- sequences


def gold_answers(task: Task, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Gold answer token ids ``[..., L]``: y*_l = n + 1 + ((a + l·b) mod n), l = 1..L.

    >>> gold_answers(Task(n=4, L=2), torch.tensor([1]), torch.tensor([3])).tolist()
    [[5, 8]]
    """
    ls = torch.arange(1, task.L + 1, device=a.device)
    return task.n + 1 + (a[..., None] + ls * b[..., None]) % task.n


@dataclass
class Batch:
    """One step's sampled sequences of E members × N = G·M rows (all ``[E, N, T]`` or ``[E, N]``).

    ids: tokens (gold answer in likelihood mode, sampled answer in verifier mode); gold_ids: the
    same rationales with the gold answer teacher-forced; rat_mask/ans_mask: spans (the rationale
    span holds the sampled rationale tokens and a *sampled* marker; a forced marker is in no
    span); forced: whether the marker was forced; rat_len: k; reward: exact match (verifier).
    """

    ids: torch.Tensor
    gold_ids: torch.Tensor
    rat_mask: torch.Tensor
    ans_mask: torch.Tensor
    forced: torch.Tensor
    rat_len: torch.Tensor
    reward: torch.Tensor
    prompt: torch.Tensor


def _draw(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw from softmax(logits) [..., V] with uniforms u [...] (float64 CDF)."""
    cdf = torch.softmax(logits.to(torch.float64), dim=-1).cumsum(-1)
    idx = (cdf < u[..., None]).sum(-1)
    return idx.clamp(max=logits.shape[-1] - 1)


def sample_sequences(
    params: dict,
    task: Task,
    spec: ModelSpec,
    keys: torch.Tensor,
    step: int,
    G: int,
    M: int,
    *,
    verifier: bool,
    prompts: torch.Tensor | None = None,
) -> Batch:
    """Draw G prompts (or take ``prompts [E, G]``) and M rationales each for every member.

    Rows are prompt-major (row g·M + m is sample m of prompt g), as the estimators expect.
    Uses the counter uniforms of (key, step): prompts, then one uniform per (row, position).
    """
    E = keys.shape[0]
    N, T, R, L, n = G * M, task.T, task.R, task.L, task.n
    u = counter_uniform(keys, step, G + N * T)
    if prompts is None:
        prompts = (u[:, :G] * task.n_prompts).long().clamp(max=task.n_prompts - 1)
    prompts = prompts.to(torch.long)
    uu = u[:, G:].reshape(E, N, T)
    pr = prompts.repeat_interleave(M, dim=1)  # [E, N]
    a, b = pr // n, pr % n
    gold = gold_answers(task, a, b)  # [E, N, L]
    ids = torch.zeros(E, N, T, dtype=torch.long)
    ids[:, :, 0], ids[:, :, 1] = a, b
    rat = torch.zeros(E, N, T, dtype=torch.bool)
    closed = torch.zeros(E, N, dtype=torch.bool)
    k = torch.zeros(E, N, dtype=torch.long)
    with torch.no_grad():
        for t in range(R):
            pos = 2 + t
            logits = forward(params, ids[:, :, :pos], spec)[:, :, -1]
            tok = _draw(logits, uu[:, :, pos])
            open_ = ~closed
            ids[:, :, pos] = torch.where(open_, tok, ids[:, :, pos])
            rat[:, :, pos] = open_
            is_marker = open_ & (tok == task.marker)
            k = torch.where(open_ & ~is_marker, k + 1, k)
            closed = closed | is_marker
            if bool(closed.all()):
                break
        forced = ~closed
    ar = torch.arange(T)
    marker_pos = 2 + k  # [E, N]
    ans_start = marker_pos + 1
    ids = ids.masked_fill(ar >= ans_start[..., None], 0)
    ids = torch.where(ar == marker_pos[..., None], torch.full_like(ids, task.marker), ids)
    rat = rat & (ar < ans_start[..., None])  # positions up to the (sampled) marker
    rat = rat & ~(forced[..., None] & (ar == marker_pos[..., None]))
    rel = ar - ans_start[..., None]  # [E, N, T]
    ans_mask = (rel >= 0) & (rel < L)
    gold_full = torch.gather(gold, 2, rel.clamp(0, L - 1))
    gold_ids = torch.where(ans_mask, gold_full, ids)
    if not verifier:
        reward = torch.ones(E, N, dtype=_DTYPE)  # unused in likelihood mode
        return Batch(gold_ids, gold_ids, rat, ans_mask, forced, k, reward, prompts)
    samp = gold_ids.clone()
    with torch.no_grad():
        for j in range(L):
            pos = ans_start + j  # [E, N]
            logits = forward(params, samp, spec)  # full length; causal, so later slots unused
            prev = torch.gather(logits, 2, (pos - 1)[..., None, None].expand(E, N, 1, task.V))
            u_j = torch.gather(uu, 2, pos[..., None]).squeeze(-1)
            tok = _draw(prev.squeeze(2), u_j)
            samp.scatter_(2, pos[..., None], tok[..., None])
    reward = (samp == gold_ids).all(-1).to(_DTYPE)
    return Batch(samp, gold_ids, rat, ans_mask, forced, k, reward, prompts)


def _answer_logprob_from(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    lp = torch.log_softmax(logits[:, :, :-1].to(torch.float64), -1)
    tok = torch.gather(lp, -1, batch.gold_ids[:, :, 1:, None]).squeeze(-1)
    return (tok * batch.ans_mask[:, :, 1:]).sum(-1)


def answer_logprob(params: dict, batch: Batch, spec: ModelSpec) -> torch.Tensor:
    """log p(y* | x, z) ``[E, N]`` (float64) of the batch's rationales, gold answer forced."""
    with torch.no_grad():
        return _answer_logprob_from(forward(params, batch.gold_ids, spec), batch)


def estimate_p(
    params: dict, task: Task, spec: ModelSpec, keys, *, samples_per_prompt: int = 64, step=0
) -> np.ndarray:
    """log P̂ per member: every prompt, ``samples_per_prompt`` rationales each, P̂ = mean of
    p(y* | x, z) over all of them, computed in log space (logsumexp)."""
    keys = torch.as_tensor(np.asarray(keys, dtype=np.int64))
    E, G = keys.shape[0], task.n_prompts
    prompts = torch.arange(G).repeat(E, 1)
    batch = sample_sequences(
        params, task, spec, keys ^ 0x5EED, step, G, samples_per_prompt, verifier=False,
        prompts=prompts,
    )  # fmt: skip
    lw = answer_logprob(params, batch, spec)
    return (torch.logsumexp(lw, dim=1) - math.log(lw.shape[1])).numpy()


# ----------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """Per member: ``steps`` (first step with P̂ ≥ δ, or the budget), ``censored``, the
    per-step ``log_p_hat [E, S+1]`` and ``monitor [E, S+1]`` (max over the step's groups of the
    amplified advantage, the paper's Fig. 3 y-axis; NaN after a frozen member escaped),
    ``grad_absmax0`` (max |gradient component| at step 0) and ``log_p0`` (:func:`estimate_p`).
    ``diverged``: the member's weights became non-finite (it is then frozen at a finite stand-in
    and counted as censored unless it had escaped before)."""

    steps: np.ndarray
    censored: np.ndarray
    diverged: np.ndarray
    log_p_hat: np.ndarray
    monitor: np.ndarray
    grad_absmax0: np.ndarray
    log_p0: np.ndarray
    params: dict


def sequence_loss(logits, batch: Batch, task: Task, q, M: int, *, estimator: str,
                  verifier: bool, **estimator_options):
    """The J_Q surrogate of one step through :func:`tsallis.tsallis_logits_loss`: the mean over
    each member's G prompts of -Σ_m [a_m·log p(z_m|x) + b_m·log p(y|x, z_m)] (Eq. 12 for
    GARL-RLOO; the coefficients of any registered estimator), summed over members.

    ``logits [E, N, T, V]`` are the policy's on ``batch.ids``; ``q`` is a float or a tensor with
    one entry per group ``[E·G]``.  Returns (loss, :class:`tsallis.LogitsLossInfo`).
    """
    E, N, T, V = logits.shape
    G = N // M
    # full logits with shifted labels (contiguous rows for the kernels' chunked path)
    labels, rat, ans = shift_for_causal_lm(
        batch.ids.reshape(E * N, T), batch.rat_mask.reshape(E * N, T),
        batch.ans_mask.reshape(E * N, T),
    )  # fmt: skip
    loss, info = tsallis_logits_loss(
        logits.reshape(E * N, T, V), labels, q, group_size=M, rationale_mask=rat,
        answer_mask=ans, rewards=batch.reward.reshape(E * N) if verifier else None,
        estimator=estimator, reduction="sum", fused=False, impl="torch", track_entropy=False,
        return_info=True, **estimator_options,
    )  # fmt: skip
    return loss / G, info


def _nonfinite_members(params: dict) -> np.ndarray:
    E = next(iter(params.values())).shape[0]
    bad = torch.zeros(E, dtype=torch.bool)
    for v in params.values():
        bad |= ~torch.isfinite(v.detach().reshape(E, -1)).all(1)
    return bad.numpy()


def _park(params: dict, bad: torch.Tensor) -> None:
    with torch.no_grad():
        for v in params.values():
            v[bad] = 0.0


def q_at_step(q, step: int, switch) -> np.ndarray:
    """Each member's q at ``step``: ``tsallis.schedules.Step(at_step=switch, q_before=1,
    q_after=q)`` evaluated for all members at once (``switch=None``: constant q).

    >>> q_at_step([0.0, 0.5], 1, [2, 1]).tolist()
    [1.0, 0.5]
    """
    qs = np.asarray(q, dtype=np.float64)
    if switch is None:
        return qs
    sw = np.asarray(switch, dtype=np.float64)
    return np.where(step < sw, 1.0, qs)  # schedule: q = 1 before the switch, then q


def train(
    task: Task,
    spec: ModelSpec,
    keys,
    p0,
    q,
    lr,
    *,
    steps: int,
    G: int = 2,
    M: int = 8,
    estimator: str = "garl_rloo",
    mode: str = "likelihood",
    optimizer: str = "sgd",
    adam_eps=1e-8,
    betas=(0.9, 0.999),
    switch=None,
    delta: float = 0.5,
    freeze_escaped: bool = True,
    paft_seed: int = 0,
    p0_samples: int = 16,
) -> TrainResult:
    """Train E members (one per entry of ``keys``) for ``steps`` steps in one batched program.

    Per member: ``p0`` (target, sets β by :func:`bias_for_p0`), ``q`` (after the switch, if
    any), ``lr``, ``adam_eps``, ``switch`` (None: constant q; else q = 1 before step
    ``switch``, the SFT→RLVR schedule).  Shared: task, model, G, M, estimator, mode, optimizer.
    Frozen members (escaped, ``freeze_escaped``) keep their weights and Adam state.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ops are tiny: one thread avoids oversubscription stalls
    try:
        return _train(**_train_args(locals()))
    finally:
        torch.set_num_threads(threads)


def _train_args(loc: dict) -> dict:
    return {k: v for k, v in loc.items() if k != "threads"}


def _train(
    task, spec, keys, p0, q, lr, *, steps, G, M, estimator, mode, optimizer, adam_eps, betas,
    switch, delta, freeze_escaped, paft_seed, p0_samples,
) -> TrainResult:
    if mode not in ("likelihood", "verifier"):
        raise ValueError(f"mode must be 'likelihood' or 'verifier', got {mode!r}")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    get_estimator(estimator)
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    keys_np = np.asarray(keys, dtype=np.int64).ravel()
    E = keys_np.size

    def per_member(v, name):
        arr = np.asarray(v, dtype=np.float64)
        if arr.size not in (1, E):
            raise ValueError(
                f"{name} must be a scalar or have one entry per member ({E}), got shape "
                f"{arr.shape}"
            )
        arr = np.broadcast_to(arr.reshape(-1), (E,)).copy()
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite, got {v!r}")
        return arr

    p0 = per_member(p0, "p0")
    q = per_member(q, "q")
    lr = per_member(lr, "lr")
    if np.any(lr < 0):
        raise ValueError(f"lr must be >= 0, got {lr}")
    eps = per_member(1e-8 if adam_eps is None else adam_eps, "adam_eps")
    sw = None if switch is None else per_member(switch, "switch")
    keys_t = torch.as_tensor(keys_np)
    params = init_params(task, spec, keys_np, [bias_for_p0(task, p) for p in p0])
    log_p0 = estimate_p(params, task, spec, keys_np, samples_per_prompt=p0_samples)
    for t in params.values():
        t.requires_grad_(True)
    names = list(params)

    def bshape(x, ref):
        return torch.as_tensor(x, dtype=_DTYPE).reshape((E,) + (1,) * (ref.dim() - 1))

    lr_b = {k: bshape(lr, v) for k, v in params.items()}
    eps_b = {k: bshape(eps, v) for k, v in params.items()}
    m_state = {k: torch.zeros_like(v) for k, v in params.items()}
    v_state = {k: torch.zeros_like(v) for k, v in params.items()}
    b1, b2 = betas
    est_opts = {}
    if estimator in RANDOMIZED:
        est_opts["generator"] = torch.Generator().manual_seed(int(paft_seed) & (2**63 - 1))
    verifier = mode == "verifier"
    log_p_hat = np.full((E, steps + 1), np.nan)
    monitor = np.full((E, steps + 1), np.nan)
    grad0 = np.zeros(E)
    diverged = np.zeros(E, dtype=bool)
    now = {}  # the step's batch and logits: sampled by the monitor, trained on by the step

    def retire(_, t, active):
        bad = _nonfinite_members(params)
        if bad.any():  # diverged: mark, freeze, and park its weights at a finite stand-in
            diverged[:] |= bad
            _park(params, torch.as_tensor(bad))
        return bad

    def measure(_, t, active):
        batch = sample_sequences(params, task, spec, keys_t, t, G, M, verifier=verifier)
        logits = forward(params, batch.ids, spec)
        if verifier:
            lw = answer_logprob(params, batch, spec)  # [E, N] float64, gold answer forced
        else:  # the sequences are the gold-forced ones: reuse the logits
            lw = _answer_logprob_from(logits.detach(), batch)
        lp = (torch.logsumexp(lw, 1) - math.log(lw.shape[1])).numpy()
        log_p_hat[:, t] = np.where(active | ~freeze_escaped, lp, np.nan)
        now["batch"], now["logits"] = batch, logits
        return lp

    def update(_, t, active):
        nonlocal grad0
        batch, logits = now.pop("batch"), now.pop("logits")
        q_now = q_at_step(q, t, sw)
        loss, info = sequence_loss(
            logits, batch, task, torch.as_tensor(np.repeat(q_now, G)), M,
            estimator=estimator, verifier=verifier, **est_opts,
        )  # fmt: skip
        mon = info.max_amplified_advantage.reshape(E, G).amax(1).detach().double().numpy()
        monitor[:, t] = np.where(active | ~freeze_escaped, mon, np.nan)
        grads = torch.autograd.grad(loss, [params[k] for k in names])
        act = torch.as_tensor(active)
        with torch.no_grad():
            if t == 0:
                grad0 = np.max(
                    np.stack([g.reshape(E, -1).abs().amax(1).double().numpy() for g in grads]), 0
                )
            for k, g in zip(names, grads, strict=True):
                p = params[k]
                a = act.reshape((E,) + (1,) * (p.dim() - 1))
                if optimizer == "sgd":
                    upd = lr_b[k] * g
                else:  # frozen members keep their moments (and weights: upd is masked)
                    m_new, v_new, upd = adam_update(
                        m_state[k], v_state[k], g, t + 1, lr_b[k], eps_b[k], (b1, b2)
                    )
                    m_state[k] = torch.where(a, m_new, m_state[k])
                    v_state[k] = torch.where(a, v_new, v_state[k])
                p.sub_(torch.where(a, upd, torch.zeros_like(upd)))
        return _

    # P̂ is compared in log space, log P̂ ≥ log δ, as it is computed
    run = run_to_escape(
        None, E, monitor=measure, step=update, max_steps=steps, delta=math.log(delta),
        drop=False, freeze=freeze_escaped, retire=retire,
    )  # fmt: skip
    return TrainResult(
        steps=run.steps,
        censored=run.censored,
        diverged=diverged,
        log_p_hat=log_p_hat,
        monitor=monitor,
        grad_absmax0=grad0,
        log_p0=log_p0,
        params={k: v.detach() for k, v in params.items()},
    )
