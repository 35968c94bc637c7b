r"""Monte Carlo estimators of the J_Q gradient as per-sequence coefficients (math.md §5).

Every estimator here turns the M per-sample log-weights of a group into two detached
coefficients per sample, one for the rationale span and one for the answer span, so that the
surrogate loss

    L = -Σ_m [ coef_z[m]·log p(z_m | x*)  +  coef_y[m]·log p(y | x*, z_m) ]

has the estimator's gradient. One kernel therefore serves GARL, PAFT and the RL baselines.

Conventions
-----------
``log_w`` has shape ``[..., M]``: any leading dims (groups, seeds, settings) and the group of M
samples last. In **likelihood mode** (the paper's main setting) ``log_w[m] = log p(y*|x*, z_m)``,
the teacher-forced log-probability of the gold answer, and ``coef_y`` is the pathwise coefficient
of that answer span. In **verifier mode** ``log_w[m] = log r_m`` for a reward r_m ∈ [0, 1]
(``-inf`` for 0, see :func:`rewards_to_log_w`); the whole response was sampled, so
``coef_y == coef_z``. All arithmetic is in float64 and in log space (w̄, w̄_¬m, w̄^(-q) come from
logsumexp), then cast back to ``log_w``'s dtype: ``log_w = -1000`` gives finite, correct
coefficients.

A group whose weights are all zero (verifier mode, no success) has w̄ = 0: it carries no signal,
its coefficients are 0 (0/0 := 0), it is reported in ``stalled``, and no NaN appears.

``paper_normalization=True`` multiplies the GARL and PAFT coefficients by M^(-q), the paper's
q-dependent learning-rate rescale (its algorithms divide by M^q so that the effective reward
w_m/(M·w̄)^q lies in [0, 1]). It changes the step size, not the direction: compare q values at
matched effective step size (sims.md, "the sampled trap").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ._validate import check_q

__all__ = [
    "Coefficients",
    "ESTIMATORS",
    "get_estimator",
    "register_estimator",
    "rewards_to_log_w",
    "garl",
    "garl_rloo",
    "paft",
    "grpo",
    "dr_grpo",
    "rloo",
    "reinforce",
    "sft",
]

_MODES = ("likelihood", "verifier")
# Tolerance on log_w > 0: a sum of token log-probs is <= 0 mathematically, but a kernel that
# gathers u[id] and computes lse(u) in different orders can round a confident answer a few ulps
# of |u| above 0. Within the tolerance log_w is clamped to 0; beyond it, it is an input error.
_LOG_W_POSITIVE_TOL = {torch.float64: 1e-6}
_LOG_W_POSITIVE_TOL_LOW_PRECISION = 1e-3


@dataclass(frozen=True)
class Coefficients:
    """Per-sequence coefficients of one estimator plus group diagnostics (all detached).

    Attributes:
        coef_z: [..., M] coefficient of log p(z_m | x*) (rationale span).
        coef_y: [..., M] coefficient of log p(y | x*, z_m) (answer span).
        log_w_mean: [...] log w̄, the log of the group's mean weight (-inf when stalled).
        amplification: [...] the group multiplier actually applied: w̄^(-q) for GARL and PAFT,
            1/(std + eps) for GRPO, 1 for the other baselines; 0 for stalled groups.
        max_amplified_advantage: [...] max_m M·coef_z[m]/M^q, the monitor of the paper's Fig. 3
            (for GARL-RLOO: max_m c_m/M^q, which lies in [0, 1] for weights in [0, 1]); computed
            without ``paper_normalization`` so it reads the same either way.
        stalled: [...] bool, groups with no positive weight (no signal; coefficients 0).
        draw_counts: [..., M] int64 PAFT resampling counts n_m (Σ_m n_m = K); None otherwise.
        estimator: registry name of the estimator.
        q: the Tsallis index used (a float, or a tensor broadcast over the leading dims).
        mode: "likelihood" or "verifier".
    """

    coef_z: torch.Tensor
    coef_y: torch.Tensor
    log_w_mean: torch.Tensor
    amplification: torch.Tensor
    max_amplified_advantage: torch.Tensor
    stalled: torch.Tensor
    draw_counts: torch.Tensor | None
    estimator: str
    q: float | torch.Tensor
    mode: str

    @property
    def group_size(self) -> int:
        return self.coef_z.shape[-1]


# ----------------------------------------------------------------------------- helpers


def rewards_to_log_w(rewards) -> torch.Tensor:
    """Verifier rewards r ∈ [0, 1] -> log-weights log r (-inf for r = 0), float64 unless given
    a floating tensor (whose dtype is kept).

    >>> rewards_to_log_w(torch.tensor([0.0, 1.0, 0.5]))
    tensor([   -inf,  0.0000, -0.6931])
    """
    if isinstance(rewards, torch.Tensor):
        r = rewards if rewards.is_floating_point() else rewards.to(torch.float64)
    elif isinstance(rewards, (np.ndarray, list, tuple)):
        r = torch.as_tensor(np.asarray(rewards, dtype=np.float64))
    else:
        raise TypeError(
            f"rewards must be a tensor, numpy array or list, got {type(rewards).__name__}"
        )
    if bool(torch.isnan(r).any()) or bool(((r < 0) | (r > 1)).any()):
        lo, hi = (float(r.min()), float(r.max())) if r.numel() else (math.nan, math.nan)
        raise ValueError(
            f"verifier rewards must lie in [0, 1] with no NaN (GARL's weights are "
            f"probabilities), got values in [{lo}, {hi}]"
        )
    return torch.log(r)


def _prepare(log_w, q, mode: str, *, min_group: int = 1, name: str):
    """Validate inputs; return (log_w as float64, q as float or float64 tensor [..., 1], dtype)."""
    if isinstance(log_w, np.ndarray):
        log_w = torch.as_tensor(log_w)
    if not isinstance(log_w, torch.Tensor):
        raise TypeError(
            f"{name}: log_w must be a torch tensor of shape [..., M], got {type(log_w).__name__}"
        )
    if not log_w.is_floating_point():
        raise TypeError(
            f"{name}: log_w must be a floating tensor (log-weights), got dtype {log_w.dtype}; "
            "for 0/1 rewards use rewards_to_log_w(rewards)"
        )
    if log_w.ndim < 1 or log_w.shape[-1] < 1:
        raise ValueError(
            f"{name}: log_w must have shape [..., M] with M >= 1, got {tuple(log_w.shape)}"
        )
    M = log_w.shape[-1]
    if M < min_group:
        raise ValueError(
            f"{name} needs a group of at least {min_group} samples (leave-one-out/std over the "
            f"others), got M = {M} (log_w of shape {tuple(log_w.shape)})"
        )
    if mode not in _MODES:
        raise ValueError(f"{name}: mode must be one of {_MODES}, got {mode!r}")
    if bool(torch.isnan(log_w).any()):
        raise ValueError(f"{name}: log_w contains NaN (shape {tuple(log_w.shape)})")
    tol = _LOG_W_POSITIVE_TOL.get(log_w.dtype, _LOG_W_POSITIVE_TOL_LOW_PRECISION)
    if bool((log_w > tol).any()):
        raise ValueError(
            f"{name}: log_w must be <= 0 (weights are probabilities or rewards in [0, 1]; "
            f"{tol:g} of rounding is tolerated for {log_w.dtype}), got a maximum of "
            f"{float(log_w.max())}"
        )
    q = check_q(q)
    dtype = log_w.dtype
    lw = log_w.detach().to(torch.float64).clamp(max=0.0)
    if isinstance(q, (torch.Tensor, np.ndarray)):
        q = torch.as_tensor(q, dtype=torch.float64, device=lw.device)
        if not _broadcastable(tuple(q.shape), tuple(lw.shape[:-1])):
            raise ValueError(
                f"{name}: a tensor q must broadcast against log_w's leading dims "
                f"{tuple(lw.shape[:-1])}, got shape {tuple(q.shape)}"
            )
        q = q[..., None]
    return lw, q, dtype


def _broadcastable(a: tuple, b: tuple) -> bool:
    """Whether shape a broadcasts onto shape b without growing it (numpy's rule, from the
    right; cheaper than torch.broadcast_shapes, which the simulators would pay every step)."""
    if len(a) > len(b):
        return False
    return all(x == y or x == 1 for x, y in zip(reversed(a), reversed(b), strict=False))


def _group_stats(lw: torch.Tensor):
    """log w̄ [..., 1], stalled mask [..., 1] and a finite stand-in for log w̄ where stalled."""
    M = lw.shape[-1]
    log_mean = torch.logsumexp(lw, dim=-1, keepdim=True) - math.log(M)
    stalled = torch.isneginf(log_mean)
    log_mean_safe = torch.where(stalled, torch.zeros_like(log_mean), log_mean)
    return log_mean, stalled, log_mean_safe


def _leave_one_out_log_mean(lw: torch.Tensor) -> torch.Tensor:
    """log w̄_¬m = log(Σ_{j≠m} w_j/(M-1)), exactly, from exclusive prefix and suffix logsumexps.

    No log(S - w_m) subtraction, so no cancellation when w_m dominates its group.
    """
    M = lw.shape[-1]
    neg_inf = torch.full_like(lw[..., :1], -math.inf)
    prefix = torch.logcumsumexp(lw, dim=-1)
    suffix = torch.logcumsumexp(lw.flip(-1), dim=-1).flip(-1)
    before = torch.cat([neg_inf, prefix[..., :-1]], dim=-1)  # log Σ_{j<m}
    after = torch.cat([suffix[..., 1:], neg_inf], dim=-1)  # log Σ_{j>m}
    return torch.logaddexp(before, after) - math.log(M - 1)


def _pow_from_log(log_x: torch.Tensor, expo) -> torch.Tensor:
    """x^expo from log x, with 0^expo := 0 for every expo >= 0, 0^0 included.

    For the leave-one-out baseline (w̄_¬m)^(1-q) this is the q -> 1 limit of 0^(1-q); it keeps
    the baseline a function of the other samples only, and zero in a stalled group, so zeroing
    stalled groups leaves E[GARL-RLOO] = E[GARL] exact (Prop. 6.2) in verifier mode as well.
    """
    expo_t = torch.as_tensor(expo, dtype=log_x.dtype, device=log_x.device)
    is_zero = torch.isneginf(log_x)
    safe = torch.where(is_zero, torch.zeros_like(log_x), log_x)
    return torch.where(is_zero, torch.zeros_like(log_x), torch.exp(safe * expo_t))


def _m_pow_q(M: int, q) -> torch.Tensor | float:
    if isinstance(q, torch.Tensor):
        return torch.exp(q * math.log(M))
    return float(M) ** q


def _finish(
    *,
    name: str,
    dtype: torch.dtype,
    coef_z: torch.Tensor,
    coef_y: torch.Tensor,
    log_mean: torch.Tensor,
    stalled: torch.Tensor,
    amplification: torch.Tensor,
    q,
    mode: str,
    paper_normalization: bool,
    normalizable: bool,
    draw_counts: torch.Tensor | None = None,
) -> Coefficients:
    M = coef_z.shape[-1]
    zero = torch.zeros_like(coef_z)
    coef_z = torch.where(stalled, zero, coef_z)
    coef_y = torch.where(stalled, zero, coef_y)
    if mode == "verifier":
        coef_y = coef_z
    m_q = _m_pow_q(M, q)
    monitor = (M * coef_z).amax(dim=-1, keepdim=True) / (m_q if normalizable else 1.0)
    if paper_normalization and normalizable:
        coef_z = coef_z / m_q
        coef_y = coef_y / m_q
    amplification = torch.where(stalled, torch.zeros_like(amplification), amplification)
    q_out = q.squeeze(-1).to(dtype) if isinstance(q, torch.Tensor) else q
    return Coefficients(
        coef_z=coef_z.to(dtype),
        coef_y=coef_y.to(dtype),
        log_w_mean=log_mean.squeeze(-1).to(dtype),
        amplification=amplification.squeeze(-1).to(dtype),
        max_amplified_advantage=monitor.squeeze(-1).to(dtype),
        stalled=stalled.squeeze(-1),
        draw_counts=draw_counts,
        estimator=name,
        q=q_out,
        mode=mode,
    )


# ----------------------------------------------------------------------------- GARL / PAFT


def garl(log_w, q, *, mode: str = "likelihood", paper_normalization: bool = False) -> Coefficients:
    r"""Plug-in GARL (Eq. 9): ĝ = w̄^(-q)·(1/M)·Σ_m [-w_m·∇log p(z_m, y*|x*)].

    coef_z[m] = coef_y[m] = (w_m / w̄^q)/M. Amplified RL gradient; biased for q > 0 by
    O(q/(M P^(q+1))) (Thm 6.1), unbiased at q = 0 (REINFORCE on the likelihood reward).

    >>> c = garl(torch.log(torch.tensor([[1.0, 0.0, 0.0, 0.0]])), 0.5, mode="verifier")
    >>> c.coef_z  # w̄ = 1/4, w̄^(-1/2) = 2: (1·2)/4 for the success
    tensor([[0.5000, 0.0000, 0.0000, 0.0000]])
    """
    lw, q, dtype = _prepare(log_w, q, mode, name="garl")
    M = lw.shape[-1]
    log_mean, stalled, log_mean_safe = _group_stats(lw)
    weight = torch.exp(lw - q * log_mean_safe) / M  # (w_m / w̄^q)/M, in log space
    return _finish(
        name="garl", dtype=dtype, coef_z=weight, coef_y=weight, log_mean=log_mean,
        stalled=stalled, amplification=torch.exp(-q * log_mean_safe), q=q, mode=mode,
        paper_normalization=paper_normalization, normalizable=True,
    )  # fmt: skip


def garl_rloo(
    log_w, q, *, mode: str = "likelihood", paper_normalization: bool = False
) -> Coefficients:
    r"""GARL with the RLOO control variate (Eq. 12), the paper's algorithm:

        c_m = w_m / w̄^q - (w̄_¬m)^(1-q)
        ĝ   = (1/M)·Σ_m [-c_m·∇log p(z_m|x*) - (w_m/w̄^q)·∇log p(y*|x*, z_m)]

    coef_z = c_m/M, coef_y = (w_m/w̄^q)/M (the pathwise term; verifier mode: coef_y = coef_z).
    Same expectation as :func:`garl` for every M (Prop. 6.2). q = 0 is RLOO; q = 1 is the
    self-normalised (IWAE) gradient whose centred weights sum to 0. Needs M >= 2.

    >>> c = garl_rloo(torch.log(torch.tensor([[1.0, 0.0, 0.0, 0.0]])), 0.5, mode="verifier")
    >>> c.coef_z  # success: (2 - 0)/4; failures: (0 - (1/3)^(1/2))/4
    tensor([[ 0.5000, -0.1443, -0.1443, -0.1443]])
    """
    lw, q, dtype = _prepare(log_w, q, mode, min_group=2, name="garl_rloo")
    M = lw.shape[-1]
    log_mean, stalled, log_mean_safe = _group_stats(lw)
    amplified = torch.exp(lw - q * log_mean_safe)  # w_m / w̄^q
    baseline = _pow_from_log(_leave_one_out_log_mean(lw), 1.0 - q)  # (w̄_¬m)^(1-q)
    return _finish(
        name="garl_rloo", dtype=dtype, coef_z=(amplified - baseline) / M, coef_y=amplified / M,
        log_mean=log_mean, stalled=stalled, amplification=torch.exp(-q * log_mean_safe), q=q,
        mode=mode, paper_normalization=paper_normalization, normalizable=True,
    )  # fmt: skip


def paft(
    log_w,
    q,
    *,
    mode: str = "likelihood",
    paper_normalization: bool = False,
    num_draws: int | None = None,
    generator: torch.Generator | None = None,
) -> Coefficients:
    r"""PAFT (Algorithm 2): posterior resampling, then an attenuated SFT step.

    Draw K indices with replacement from Categorical(w/Σw) (K = ``num_draws``, default M), then

        ĝ = -(w̄^(1-q)/K)·Σ_k ∇log p(z_{r_k}, y*|x*),

    i.e. coef_z[m] = coef_y[m] = w̄^(1-q)·n_m/K with n_m the draw count of sample m. E[PAFT | pool]
    equals plug-in GARL exactly (Prop. D.3); its variance is at least GARL's (Prop. D.4).
    q = 1 is SFT on posterior samples (EM/TRICE). Randomness only through ``generator`` (a
    ``torch.Generator`` on log_w's device; None uses torch's global generator).

    >>> g = torch.Generator().manual_seed(0)
    >>> c = paft(torch.log(torch.tensor([[1.0, 0.0, 0.0, 0.0]])), 0.5, mode="verifier", generator=g)
    >>> c.draw_counts, c.coef_z  # every draw lands on the success: (1/4)^(1/2)·4/4
    (tensor([[4, 0, 0, 0]]), tensor([[0.5000, 0.0000, 0.0000, 0.0000]]))
    """
    lw, q, dtype = _prepare(log_w, q, mode, name="paft")
    M = lw.shape[-1]
    K = M if num_draws is None else num_draws
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
        raise ValueError(f"paft: num_draws (K) must be a positive integer, got {num_draws!r}")
    K = int(K)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"paft: generator must be a torch.Generator, got {type(generator).__name__}"
        )
    log_mean, stalled, log_mean_safe = _group_stats(lw)
    flat = lw.reshape(-1, M)
    flat_stalled = stalled.reshape(-1)
    # Stalled rows have no posterior; draw from a uniform stand-in and discard the counts, so
    # the generator advances identically whatever the rewards are.
    logits = torch.where(flat_stalled[:, None], torch.zeros_like(flat), flat)
    probs = torch.softmax(logits, dim=-1)
    idx = torch.multinomial(probs, K, replacement=True, generator=generator)
    counts = torch.zeros_like(flat, dtype=torch.int64).scatter_add_(
        1, idx, torch.ones_like(idx, dtype=torch.int64)
    )
    counts = torch.where(flat_stalled[:, None], torch.zeros_like(counts), counts)
    counts = counts.reshape(lw.shape)
    coef = _pow_from_log(log_mean_safe, 1.0 - q) * counts.to(torch.float64) / K
    return _finish(
        name="paft", dtype=dtype, coef_z=coef, coef_y=coef, log_mean=log_mean, stalled=stalled,
        amplification=torch.exp(-q * log_mean_safe), q=q, mode=mode,
        paper_normalization=paper_normalization, normalizable=True, draw_counts=counts,
    )  # fmt: skip


# ----------------------------------------------------------------------------- baselines
# The baselines ignore q (after validating it) and paper_normalization: they are the q-free RL
# algorithms a user compares GARL/PAFT against. Rewards are w_m = exp(log_w_m). In likelihood
# mode the reward itself depends on θ through the teacher-forced answer, so the exact gradient of
# E[w] also has the pathwise term E[∇w] = E[w·∇log p(y*|z)]: coef_y carries it.


def _rewards(lw):
    return torch.exp(lw)


def reinforce(
    log_w, q=0.0, *, mode: str = "likelihood", paper_normalization: bool = False
) -> Coefficients:
    r"""REINFORCE without a baseline: coef_z = w_m/M, coef_y = w_m/M. Unbiased for -∇P
    (equals GARL at q = 0). ``q`` and ``paper_normalization`` are ignored.

    >>> reinforce(torch.log(torch.tensor([[1.0, 0.0, 0.5, 0.0]])), mode="verifier").coef_z
    tensor([[0.2500, 0.0000, 0.1250, 0.0000]])
    """
    lw, q, dtype = _prepare(log_w, q, mode, name="reinforce")
    M = lw.shape[-1]
    log_mean, stalled, _ = _group_stats(lw)
    w = _rewards(lw)
    return _finish(
        name="reinforce", dtype=dtype, coef_z=w / M, coef_y=w / M, log_mean=log_mean,
        stalled=stalled, amplification=torch.ones_like(log_mean), q=q, mode=mode,
        paper_normalization=False, normalizable=False,
    )  # fmt: skip


def rloo(
    log_w, q=0.0, *, mode: str = "likelihood", paper_normalization: bool = False
) -> Coefficients:
    r"""REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024):
    coef_z = (w_m - w̄_¬m)/M, coef_y = w_m/M (likelihood mode). Unbiased; equals GARL-RLOO at
    q = 0. Needs M >= 2. ``q`` and ``paper_normalization`` are ignored.

    >>> rloo(torch.log(torch.tensor([[1.0, 0.0, 0.0, 0.0]])), mode="verifier").coef_z
    tensor([[ 0.2500, -0.0833, -0.0833, -0.0833]])
    """
    lw, q, dtype = _prepare(log_w, q, mode, min_group=2, name="rloo")
    M = lw.shape[-1]
    log_mean, stalled, _ = _group_stats(lw)
    w = _rewards(lw)
    loo = torch.exp(_leave_one_out_log_mean(lw))
    return _finish(
        name="rloo", dtype=dtype, coef_z=(w - loo) / M, coef_y=w / M, log_mean=log_mean,
        stalled=stalled, amplification=torch.ones_like(log_mean), q=q, mode=mode,
        paper_normalization=False, normalizable=False,
    )  # fmt: skip


def dr_grpo(
    log_w, q=0.0, *, mode: str = "likelihood", paper_normalization: bool = False
) -> Coefficients:
    r"""Dr. GRPO (Liu et al. 2025): mean-centred advantage without the std division,
    coef_z = (w_m - w̄)/M, coef_y = w_m/M (likelihood mode). ``q`` is ignored.

    >>> dr_grpo(torch.log(torch.tensor([[1.0, 0.0, 0.0, 0.0]])), mode="verifier").coef_z
    tensor([[ 0.1875, -0.0625, -0.0625, -0.0625]])
    """
    lw, q, dtype = _prepare(log_w, q, mode, name="dr_grpo")
    M = lw.shape[-1]
    log_mean, stalled, log_mean_safe = _group_stats(lw)
    w = _rewards(lw)
    return _finish(
        name="dr_grpo", dtype=dtype, coef_z=(w - torch.exp(log_mean_safe)) / M, coef_y=w / M,
        log_mean=log_mean, stalled=stalled, amplification=torch.ones_like(log_mean), q=q,
        mode=mode, paper_normalization=False, normalizable=False,
    )  # fmt: skip


def grpo(
    log_w,
    q=0.0,
    *,
    mode: str = "likelihood",
    paper_normalization: bool = False,
    eps: float = 1e-4,
) -> Coefficients:
    r"""GRPO (Shao et al. 2024): A_m = (w_m - w̄)/(s + eps), s the unbiased group std (as TRL);
    coef_z = A_m/M, coef_y = w_m/(M·(s + eps)) in likelihood mode (the pathwise term under the
    same scale). A group of equal rewards has A = 0. With 0/1 rewards and M·P ≫ 1 its expected
    update is ≈ [P(1-P)]^(-1/2)·∇P: about q = 1/2 on the continuum (theory.grpo_update_scale).
    Needs M >= 2. ``q`` is ignored.

    >>> c = grpo(torch.log(torch.tensor([[1.0, 0.0, 0.0, 0.0]])), mode="verifier", eps=0.0)
    >>> c.coef_z  # mean 1/4, std 1/2: (3/4)/(1/2)/4, (-1/4)/(1/2)/4
    tensor([[ 0.3750, -0.1250, -0.1250, -0.1250]])
    """
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps < 0:
        raise ValueError(f"grpo: eps must be a non-negative float, got {eps!r}")
    lw, q, dtype = _prepare(log_w, q, mode, min_group=2, name="grpo")
    M = lw.shape[-1]
    log_mean, stalled, log_mean_safe = _group_stats(lw)
    w = _rewards(lw)
    scale_denominator = w.std(dim=-1, keepdim=True, unbiased=True) + eps
    inv = torch.where(
        scale_denominator > 0,
        1.0 / scale_denominator.clamp_min(1e-300),
        torch.zeros_like(w[..., :1]),
    )
    advantage = (w - torch.exp(log_mean_safe)) * inv
    return _finish(
        name="grpo", dtype=dtype, coef_z=advantage / M, coef_y=w * inv / M, log_mean=log_mean,
        stalled=stalled, amplification=inv, q=q, mode=mode, paper_normalization=False,
        normalizable=False,
    )  # fmt: skip


def sft(
    log_w,
    q=0.0,
    *,
    mode: str = "likelihood",
    paper_normalization: bool = False,
    threshold: float | None = None,
) -> Coefficients:
    r"""Uniform SFT on the successful samples (rejection-sampling fine-tuning, STaR-like):
    coef_z = coef_y = 1[w_m counts as a success]/M.

    A sample succeeds when w_m > 0 (verifier mode) or w_m >= ``threshold`` (likelihood mode,
    default 1/2: the gold answer is the model's majority answer after z_m). ``q`` is ignored.

    >>> sft(torch.log(torch.tensor([[1.0, 0.0, 0.0, 1.0]])), mode="verifier").coef_z
    tensor([[0.2500, 0.0000, 0.0000, 0.2500]])
    """
    lw, q, dtype = _prepare(log_w, q, mode, name="sft")
    M = lw.shape[-1]
    if threshold is None:
        threshold = 0.0 if mode == "verifier" else 0.5
    if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"sft: threshold must lie in [0, 1], got {threshold!r}")
    w = _rewards(lw)
    success = (w > 0) if threshold == 0.0 else (w >= threshold)
    log_mean, stalled, _ = _group_stats(lw)
    coef = success.to(torch.float64) / M
    return _finish(
        name="sft", dtype=dtype, coef_z=coef, coef_y=coef, log_mean=log_mean, stalled=stalled,
        amplification=torch.ones_like(log_mean), q=q, mode=mode, paper_normalization=False,
        normalizable=False,
    )  # fmt: skip


# ----------------------------------------------------------------------------- registry

ESTIMATORS: dict[str, Callable[..., Coefficients]] = {
    "garl": garl,
    "garl_rloo": garl_rloo,
    "paft": paft,
    "grpo": grpo,
    "dr_grpo": dr_grpo,
    "rloo": rloo,
    "reinforce": reinforce,
    "sft": sft,
}

# Estimators that are stochastic given the pool (take ``generator``).
RANDOMIZED = frozenset({"paft"})


def get_estimator(name: str) -> Callable[..., Coefficients]:
    """Look an estimator up by its registry name.

    >>> get_estimator("garl_rloo").__name__
    'garl_rloo'
    """
    if not isinstance(name, str):
        raise TypeError(f"estimator name must be a string, got {type(name).__name__}")
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown estimator {name!r}; expected one of {sorted(ESTIMATORS)}"
        ) from None


def register_estimator(name: str, fn: Callable[..., Coefficients], *, overwrite: bool = False):
    """Add a coefficient rule ``fn(log_w, q, **options) -> Coefficients`` to the registry."""
    if not callable(fn):
        raise TypeError(f"estimator must be callable, got {type(fn).__name__}")
    if name in ESTIMATORS and not overwrite:
        raise ValueError(f"estimator {name!r} is already registered (pass overwrite=True)")
    ESTIMATORS[name] = fn
