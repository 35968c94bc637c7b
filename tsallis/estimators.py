r"""Monte Carlo estimators of the J_Q gradient as per-sequence coefficients (Section 6, App. D).

Every estimator here turns the M per-sample log-weights of a group into two detached
coefficients per sample, one for the rationale span and one for the answer span, so that the
surrogate loss

    L = -Σ_m [ coef_z[m]·log p(z_m | x*)  +  coef_y[m]·log p(y | x*, z_m) ]

has the estimator's gradient. One kernel therefore serves GARL, PAFT and the RL baselines.
``docs/conventions.md`` states the conventions in full; in short:

``log_w`` has shape ``[..., M]``: any leading dims (groups, seeds, settings) and the group of M
samples last. In **likelihood mode** (the paper's main setting) ``log_w[m] = log p(y*|x*, z_m)``,
the teacher-forced log-probability of the gold answer, and ``coef_y`` is the pathwise coefficient
of that answer span. In **verifier mode** ``log_w[m] = log r_m`` for a reward r_m ∈ [0, 1]
(``-inf`` for 0, see :func:`rewards_to_log_w`); the whole response was sampled, so
``coef_y == coef_z``.

Numerics: all arithmetic is in float64 and in log space (w̄, w̄_¬m, w̄^(-q) come from
logsumexp), so ``log_w = -1000`` gives finite, correct coefficients. The coefficients are
returned in ``log_w``'s dtype promoted to at least float32 (bf16/fp16 in -> float32 out); the
group diagnostics (``log_w_mean``, ``amplification``, ``max_amplified_advantage``) are always
float64, so no monitor overflows or rounds because the input was low precision.

A group whose weights are all zero has w̄ = 0: it carries no signal, its coefficients are 0
(0/0 := 0), it is reported in ``stalled``, and no NaN appears.

``paper_normalization=True`` multiplies the GARL and PAFT coefficients by M^(-q), the paper's
q-dependent learning-rate rescale (its algorithms divide by M^q so that the effective reward
w_m/(M·w̄)^q lies in [0, 1]). It changes the step size, not the direction: compare q values at
matched effective step size.

Writing an estimator
--------------------
Each estimator below is a formula of a prepared :class:`Group` (float64 log-weights, log w̄,
stalled mask, q) returning :class:`Terms`; the :func:`estimator` decorator owns the rest:
input validation, zeroing stalled groups, ``coef_y = coef_z`` in verifier mode, the monitor,
``paper_normalization``, the output dtypes and the registry entry.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from ._validate import MODES, check_positive_int, check_q

__all__ = [
    "Coefficients",
    "ESTIMATORS",
    "Group",
    "RANDOMIZED",
    "Terms",
    "estimator",
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

# Tolerance on log_w > 0: a sum of token log-probs is <= 0 mathematically, but a kernel that
# gathers u[id] and computes lse(u) in different orders can round a confident answer a few ulps
# of |u| above 0. Within the tolerance log_w is clamped to 0; beyond it, it is an input error.
_LOG_W_POSITIVE_TOL = {torch.float64: 1e-6}
_LOG_W_POSITIVE_TOL_LOW_PRECISION = 1e-3


@dataclass(frozen=True)
class Coefficients:
    """Per-sequence coefficients of one estimator plus group diagnostics (all detached).

    Attributes:
        coef_z: [..., M] coefficient of log p(z_m | x*) (rationale span); dtype of log_w
            promoted to at least float32.
        coef_y: [..., M] coefficient of log p(y | x*, z_m) (answer span); same dtype.
        log_w_mean: [...] float64, log w̄, the log of the group's mean weight (-inf when
            stalled).
        amplification: [...] float64, the group multiplier actually applied: w̄^(-q) for GARL
            and PAFT (its log is -q·log_w_mean), 1/(σ + eps) for GRPO, 1 for the other
            baselines; 0 for stalled groups.
        max_amplified_advantage: [...] float64, max_m M·coef_z[m]/M^q, the monitor of the
            paper's Fig. 3 (for GARL-RLOO: max_m c_m/M^q, which lies in [0, 1] for weights in
            [0, 1]); computed without ``paper_normalization`` so it reads the same either way.
        stalled: [...] bool, groups with no positive weight (no signal; coefficients 0).
        draw_counts: [..., M] int64 PAFT resampling counts n_m (Σ_m n_m = K); None otherwise.
        estimator: registry name of the estimator.
        q: the Tsallis index used (a float, or a float64 tensor over the leading dims).
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


# ----------------------------------------------------------------------------- inputs


def rewards_to_log_w(rewards) -> torch.Tensor:
    """Verifier rewards r ∈ [0, 1] -> log-weights log r (-inf for r = 0).

    float64 unless given a floating tensor, whose dtype is kept but promoted to at least
    float32 (the log of bf16 rewards is computed in float64 and returned as float32: the log of
    exactly those rewards, not a bf16 rounding of it).

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
    if r.dtype in (torch.float32, torch.float64):
        return torch.log(r)
    return torch.log(r.to(torch.float64)).to(torch.promote_types(r.dtype, torch.float32))


def _broadcastable(a: tuple, b: tuple) -> bool:
    """Whether shape a broadcasts onto shape b without growing it (numpy's rule, from the
    right; cheaper than torch.broadcast_shapes, which the simulators would pay every step)."""
    if len(a) > len(b):
        return False
    return all(x == y or x == 1 for x, y in zip(reversed(a), reversed(b), strict=False))


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


@dataclass(frozen=True)
class Group:
    """A validated group of log-weights, as an estimator's formula sees it (float64).

    Attributes:
        log_w: [..., M] float64 log-weights, clamped to <= 0.
        q: a float, or a float64 tensor [..., 1] broadcasting over the leading dims.
        mode: "likelihood" or "verifier".
        log_mean: [..., 1] log w̄ = logsumexp(log_w) - log M (-inf for a stalled group).
        stalled: [..., 1] bool, w̄ = 0.
        log_mean_safe: [..., 1] log w̄ with 0 in place of -inf (stalled groups are zeroed after
            the formula, so any finite stand-in is correct and keeps NaN out).
    """

    log_w: torch.Tensor
    q: float | torch.Tensor
    mode: str
    log_mean: torch.Tensor
    stalled: torch.Tensor
    log_mean_safe: torch.Tensor

    @property
    def M(self) -> int:
        return self.log_w.shape[-1]

    @property
    def w(self) -> torch.Tensor:
        """w_m = exp(log w_m), [..., M]."""
        return torch.exp(self.log_w)

    @property
    def mean(self) -> torch.Tensor:
        """w̄, [..., 1] (0 stand-in: 1 where stalled)."""
        return torch.exp(self.log_mean_safe)

    def amplified(self) -> torch.Tensor:
        """w_m / w̄^q, [..., M], formed in log space (never exp(log w) first)."""
        return torch.exp(self.log_w - self.q * self.log_mean_safe)

    def amplification(self) -> torch.Tensor:
        """w̄^(-q), [..., 1]."""
        return torch.exp(-self.q * self.log_mean_safe)

    def pow_mean(self, expo) -> torch.Tensor:
        """w̄^expo, [..., 1], with 0^expo := 0."""
        return _pow_from_log(self.log_mean, expo)

    def loo_log_mean(self) -> torch.Tensor:
        """log w̄_¬m, [..., M] (see :func:`_leave_one_out_log_mean`)."""
        return _leave_one_out_log_mean(self.log_w)


class Terms(NamedTuple):
    """What an estimator's formula returns (float64, before the decorator's bookkeeping).

    coef_z, coef_y: [..., M]; amplification: [..., 1] the group multiplier applied;
    draw_counts: [..., M] int64 for resampling estimators, else None.
    """

    coef_z: torch.Tensor
    coef_y: torch.Tensor
    amplification: torch.Tensor
    draw_counts: torch.Tensor | None = None


def _prepare(log_w, q, mode: str, *, min_group: int, name: str) -> tuple[Group, torch.dtype]:
    """Validate inputs; return the float64 :class:`Group` and the input dtype."""
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
    if mode not in MODES:
        raise ValueError(f"{name}: mode must be one of {MODES}, got {mode!r}")
    tol = _LOG_W_POSITIVE_TOL.get(log_w.dtype, _LOG_W_POSITIVE_TOL_LOW_PRECISION)
    if bool((torch.isnan(log_w) | (log_w > tol)).any()):  # one device sync for both checks
        if bool(torch.isnan(log_w).any()):
            raise ValueError(f"{name}: log_w contains NaN (shape {tuple(log_w.shape)})")
        raise ValueError(
            f"{name}: log_w must be <= 0 (weights are probabilities or rewards in [0, 1]; "
            f"{tol:g} of rounding is tolerated for {log_w.dtype}), got a maximum of "
            f"{float(log_w.max())}"
        )
    q = check_q(q)
    lw = log_w.detach().to(torch.float64).clamp(max=0.0)
    if isinstance(q, (torch.Tensor, np.ndarray)):
        q = torch.as_tensor(q, dtype=torch.float64, device=lw.device)
        if not _broadcastable(tuple(q.shape), tuple(lw.shape[:-1])):
            raise ValueError(
                f"{name}: a tensor q must broadcast against log_w's leading dims "
                f"{tuple(lw.shape[:-1])}, got shape {tuple(q.shape)}"
            )
        q = q[..., None]
    log_mean = torch.logsumexp(lw, dim=-1, keepdim=True) - math.log(M)
    stalled = torch.isneginf(log_mean)
    log_mean_safe = torch.where(stalled, torch.zeros_like(log_mean), log_mean)
    return Group(lw, q, mode, log_mean, stalled, log_mean_safe), log_w.dtype


def _finish(name: str, g: Group, t: Terms, dtype, *, normalizable: bool, normalize: bool):
    """Zero stalled groups, tie coef_y to coef_z in verifier mode, compute the monitor, apply
    the paper's M^(-q) and cast: coefficients to ``dtype`` promoted to at least float32, the
    diagnostics float64."""
    M, q, stalled = g.M, g.q, g.stalled
    zero = torch.zeros((), dtype=torch.float64, device=g.log_w.device)
    coef_z = torch.where(stalled, zero, t.coef_z)
    coef_y = coef_z if g.mode == "verifier" else torch.where(stalled, zero, t.coef_y)
    amplification = torch.where(stalled, zero, t.amplification)
    monitor = (M * coef_z).amax(dim=-1, keepdim=True)
    if normalizable:
        m_q = torch.exp(q * math.log(M)) if isinstance(q, torch.Tensor) else float(M) ** q
        monitor = monitor / m_q
        if normalize:
            coef_z, coef_y = coef_z / m_q, coef_y / m_q
    out = torch.promote_types(dtype, torch.float32)
    return Coefficients(
        coef_z=coef_z.to(out),
        coef_y=coef_y.to(out),
        log_w_mean=g.log_mean.squeeze(-1),
        amplification=amplification.squeeze(-1),
        max_amplified_advantage=monitor.squeeze(-1),
        stalled=stalled.squeeze(-1),
        draw_counts=t.draw_counts,
        estimator=name,
        q=q.squeeze(-1) if isinstance(q, torch.Tensor) else q,
        mode=g.mode,
    )


# ----------------------------------------------------------------------------- registry

ESTIMATORS: dict[str, Callable[..., Coefficients]] = {}

# Estimators that are stochastic given the pool (take ``generator``).
RANDOMIZED: set[str] = set()

_NO_DEFAULT = inspect.Parameter.empty


def estimator(
    name: str,
    *,
    min_group: int = 1,
    q_free: bool = False,
    randomized: bool = False,
):
    """Decorator: turn ``formula(g: Group, **options) -> Terms`` into a registered estimator

        fn(log_w, q, *, mode="likelihood", paper_normalization=False, **options) -> Coefficients

    It validates ``log_w`` and ``q`` (at least ``min_group`` samples per group), builds the
    float64 :class:`Group`, calls the formula once for all groups (no Python loop), then zeroes
    stalled groups (0/0 := 0), sets ``coef_y = coef_z`` in verifier mode, computes the Fig. 3
    monitor, applies ``paper_normalization`` (GARL/PAFT only: ``q_free=False``) and casts.
    ``q_free`` estimators (the RL baselines) take q = 0.0 by default and ignore it and
    ``paper_normalization`` (after validating them). ``randomized`` ones (PAFT) are listed in
    :data:`RANDOMIZED`. The public function keeps the formula's name and docstring and is
    entered in :data:`ESTIMATORS` under ``name``.
    """

    def wrap(formula: Callable[..., Terms]) -> Callable[..., Coefficients]:
        options = list(inspect.signature(formula).parameters.values())[1:]
        for p in options:
            if p.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(f"estimator {name!r}: options after the group must be keyword-only")
        normalizable = not q_free

        def fn(log_w, q=0.0 if q_free else None, *, mode="likelihood",
               paper_normalization=False, **opts):  # fmt: skip
            if q is None:
                raise TypeError(f"{name}() missing required argument: 'q' (the Tsallis index)")
            if not isinstance(paper_normalization, (bool, np.bool_)):
                raise TypeError(
                    f"{name}: paper_normalization must be a bool, got {paper_normalization!r}"
                )
            g, dtype = _prepare(log_w, q, mode, min_group=min_group, name=name)
            terms = formula(g, **opts)
            return _finish(
                name, g, terms, dtype, normalizable=normalizable,
                normalize=bool(paper_normalization) and normalizable,
            )  # fmt: skip

        P = inspect.Parameter
        fn.__signature__ = inspect.Signature(
            [
                P("log_w", P.POSITIONAL_OR_KEYWORD),
                P("q", P.POSITIONAL_OR_KEYWORD, default=0.0 if q_free else _NO_DEFAULT),
                P("mode", P.KEYWORD_ONLY, default="likelihood"),
                P("paper_normalization", P.KEYWORD_ONLY, default=False),
                *options,
            ],
            return_annotation="Coefficients",
        )
        fn.__name__ = fn.__qualname__ = formula.__name__
        fn.__doc__ = formula.__doc__
        fn.__module__ = formula.__module__
        fn.formula = formula  # the bare formula, for reading and testing
        ESTIMATORS[name] = fn
        if randomized:
            RANDOMIZED.add(name)
        return fn

    return wrap


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
    """Add a ready coefficient rule ``fn(log_w, q, **options) -> Coefficients`` to the registry
    (to write one from a formula instead, use the :func:`estimator` decorator)."""
    if not callable(fn):
        raise TypeError(f"estimator must be callable, got {type(fn).__name__}")
    if name in ESTIMATORS and not overwrite:
        raise ValueError(f"estimator {name!r} is already registered (pass overwrite=True)")
    ESTIMATORS[name] = fn


# ----------------------------------------------------------------------------- GARL / PAFT


@estimator("garl")
def garl(g: Group) -> Terms:
    r"""Plug-in GARL (Eq. 9): ĝ = w̄^(-q)·(1/M)·Σ_m [-w_m·∇log p(z_m, y*|x*)].

    coef_z[m] = coef_y[m] = (w_m / w̄^q)/M. Amplified RL gradient; biased for q > 0 by
    O(q/(M P^(q+1))) (Thm 6.1), unbiased at q = 0 (REINFORCE on the likelihood reward).

    >>> c = garl(torch.log(torch.tensor([[1.0, 0.0, 0.0, 0.0]])), 0.5, mode="verifier")
    >>> c.coef_z  # w̄ = 1/4, w̄^(-1/2) = 2: (1·2)/4 for the success
    tensor([[0.5000, 0.0000, 0.0000, 0.0000]])
    """
    weight = g.amplified() / g.M
    return Terms(weight, weight, g.amplification())


@estimator("garl_rloo", min_group=2)
def garl_rloo(g: Group) -> Terms:
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
    amplified = g.amplified()
    baseline = _pow_from_log(g.loo_log_mean(), 1.0 - g.q)  # (w̄_¬m)^(1-q)
    return Terms((amplified - baseline) / g.M, amplified / g.M, g.amplification())


@estimator("paft", randomized=True)
def paft(g: Group, *, num_draws: int | None = None, generator: torch.Generator | None = None):
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
    M = g.M
    K = M if num_draws is None else check_positive_int(num_draws, name="paft: num_draws (K)")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"paft: generator must be a torch.Generator, got {type(generator).__name__}"
        )
    flat = g.log_w.reshape(-1, M)
    flat_stalled = g.stalled.reshape(-1, 1)
    # Stalled rows have no posterior; draw from a uniform stand-in and discard the counts, so
    # the generator advances identically whatever the rewards are.
    probs = torch.softmax(torch.where(flat_stalled, torch.zeros_like(flat), flat), dim=-1)
    idx = torch.multinomial(probs, K, replacement=True, generator=generator)
    counts = torch.zeros_like(flat, dtype=torch.int64).scatter_add_(
        1, idx, torch.ones_like(idx, dtype=torch.int64)
    )
    counts = torch.where(flat_stalled, torch.zeros_like(counts), counts).reshape(g.log_w.shape)
    coef = g.pow_mean(1.0 - g.q) * counts.to(torch.float64) / K
    return Terms(coef, coef, g.amplification(), counts)


# ----------------------------------------------------------------------------- baselines
# The baselines ignore q (after validating it) and paper_normalization: they are the q-free RL
# algorithms a user compares GARL/PAFT against. Rewards are w_m = exp(log_w_m). In likelihood
# mode the reward itself depends on θ through the teacher-forced answer, so the exact gradient of
# E[w] also has the pathwise term E[∇w] = E[w·∇log p(y*|z)]: coef_y carries it.


def _ones(g: Group) -> torch.Tensor:
    return torch.ones_like(g.log_mean_safe)


@estimator("reinforce", q_free=True)
def reinforce(g: Group) -> Terms:
    r"""REINFORCE without a baseline: coef_z = w_m/M, coef_y = w_m/M. Unbiased for -∇P
    (equals GARL at q = 0). ``q`` and ``paper_normalization`` are ignored.

    >>> reinforce(torch.log(torch.tensor([[1.0, 0.0, 0.5, 0.0]])), mode="verifier").coef_z
    tensor([[0.2500, 0.0000, 0.1250, 0.0000]])
    """
    w = g.w / g.M
    return Terms(w, w, _ones(g))


@estimator("rloo", min_group=2, q_free=True)
def rloo(g: Group) -> Terms:
    r"""REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024):
    coef_z = (w_m - w̄_¬m)/M, coef_y = w_m/M (likelihood mode). Unbiased; equals GARL-RLOO at
    q = 0. Needs M >= 2. ``q`` and ``paper_normalization`` are ignored.

    >>> rloo(torch.log(torch.tensor([[1.0, 0.0, 0.0, 0.0]])), mode="verifier").coef_z
    tensor([[ 0.2500, -0.0833, -0.0833, -0.0833]])
    """
    w = g.w
    return Terms((w - torch.exp(g.loo_log_mean())) / g.M, w / g.M, _ones(g))


@estimator("dr_grpo", q_free=True)
def dr_grpo(g: Group) -> Terms:
    r"""Dr. GRPO (Liu et al. 2025): mean-centred advantage without the std division,
    coef_z = (w_m - w̄)/M, coef_y = w_m/M (likelihood mode). ``q`` is ignored.

    >>> dr_grpo(torch.log(torch.tensor([[1.0, 0.0, 0.0, 0.0]])), mode="verifier").coef_z
    tensor([[ 0.1875, -0.0625, -0.0625, -0.0625]])
    """
    w = g.w
    return Terms((w - g.mean) / g.M, w / g.M, _ones(g))


@estimator("grpo", min_group=2, q_free=True)
def grpo(g: Group, *, eps: float = 1e-4) -> Terms:
    r"""GRPO (Shao et al. 2024): A_m = (w_m - w̄)/(σ + eps), coef_z = A_m/M,
    coef_y = w_m/(M·(σ + eps)) (likelihood mode), with σ the group's reward scale:

    - verifier mode: σ = s, the unbiased sample std of the rewards (as TRL);
    - likelihood mode: σ = sqrt(M/(M-1)·w̄(1-w̄)), the Bernoulli std of the verifier reward that
      w Rao-Blackwellises.

    Derivation of the likelihood-mode scale. A verifier reward r_m ~ Bernoulli(w_m) given z_m
    has E[r_m | z_m] = w_m; likelihood mode replaces r_m by w_m (its conditional mean) and adds
    the pathwise term ∇w_m, so that (1/M)·Σ_m [(w_m - w̄)·∇log p(z_m) + ∇w_m] estimates ∇P.
    GRPO divides that update by the group's estimate of std(r). The law of total variance gives
    Var(r) = E[w](1 - E[w]) = P(1-P) whatever the spread of w over z, and its group estimate
    with GRPO's unbiased correction is σ² = M/(M-1)·w̄(1-w̄); for 0/1 weights σ equals verifier
    GRPO's s exactly, so the two modes agree there. Both terms share the scale 1/(σ + eps), so
    E[ĝ] ≈ -∇P/sqrt(P(1-P)) (GRPO's q ≈ 1/2 amplification, :func:`tsallis.theory.grpo_update_scale`)
    in either mode. The sample std of w instead (Var_z(w), which goes to 0 when the rationales
    barely change the answer's likelihood) would divide the un-centred pathwise term by ~0 and
    amplify it up to 1/eps. ``q`` is ignored. Needs M >= 2.

    >>> c = grpo(torch.log(torch.tensor([[1.0, 0.0, 0.0, 0.0]])), mode="verifier", eps=0.0)
    >>> c.coef_z  # mean 1/4, std 1/2: (3/4)/(1/2)/4, (-1/4)/(1/2)/4
    tensor([[ 0.3750, -0.1250, -0.1250, -0.1250]])
    >>> c = grpo(torch.log(torch.tensor([[0.3, 0.3, 0.3, 0.3]])), eps=0.0)
    >>> c.coef_y  # σ² = (4/3)·0.3·0.7 = 0.28: 0.3/(4·0.5292)
    tensor([[0.1417, 0.1417, 0.1417, 0.1417]])
    """
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"grpo: eps must be a non-negative float, got {eps!r}")
    w, M = g.w, g.M
    if g.mode == "verifier":
        sigma = w.std(dim=-1, keepdim=True, unbiased=True)
    else:  # 1 - w̄ as -expm1(log w̄): exact when w̄ is close to 1
        sigma = torch.sqrt(M / (M - 1) * g.mean * -torch.expm1(g.log_mean_safe))
    denominator = sigma + eps
    inv = torch.where(
        denominator > 0, 1.0 / denominator.clamp_min(1e-300), torch.zeros_like(denominator)
    )
    return Terms((w - g.mean) * inv / M, w * inv / M, inv)


@estimator("sft", q_free=True)
def sft(g: Group, *, threshold: float | None = None) -> Terms:
    r"""Uniform SFT on the successful samples (rejection-sampling fine-tuning, STaR-like):
    coef_z = coef_y = 1[w_m counts as a success]/M.

    A sample succeeds when w_m > 0 (verifier mode) or w_m >= ``threshold`` (likelihood mode,
    default 1/2: the gold answer is the model's majority answer after z_m). ``q`` is ignored.

    >>> sft(torch.log(torch.tensor([[1.0, 0.0, 0.0, 1.0]])), mode="verifier").coef_z
    tensor([[0.2500, 0.0000, 0.0000, 0.2500]])
    """
    if threshold is None:
        threshold = 0.0 if g.mode == "verifier" else 0.5
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not 0.0 <= threshold <= 1.0
    ):
        raise ValueError(f"sft: threshold must lie in [0, 1], got {threshold!r}")
    w = g.w
    success = (w > 0) if threshold == 0.0 else (w >= threshold)
    coef = success.to(torch.float64) / g.M
    return Terms(coef, coef, _ones(g))
