r"""GARL, GARL-RLOO and PAFT as verl advantage estimators (verl >= 0.9.1, < 0.10).

Install with ``pip install 'tsallis-continuum[verl]'``. The package declares an entry point in
verl's ``verl.plugins`` group, so ``import verl`` imports this module, which registers three named
estimators with ``verl.trainer.ppo.core_algos.register_adv_est``:

===================== ============================================================
``tsallis_garl``      plug-in GARL (Eq. 9)
``tsallis_garl_rloo`` GARL with the RLOO control variate (Eq. 12), the paper's algorithm
``tsallis_paft``      PAFT, posterior resampling then attenuated SFT (Algorithm 2)
===================== ============================================================

Every process that imports verl (the driver, its ``TaskRunner`` actor, the Ray workers) gets
them; nothing else is needed. Registration is idempotent.

Configuration (the one way)
---------------------------
The named estimators read their settings from the ``tsallis`` block of verl's ``algorithm``
config, which verl's PPO trainers (legacy and v1) hand to the advantage estimator as ``config``
on the process that computes advantages::

    algorithm.adv_estimator=tsallis_garl_rloo \
    +algorithm.tsallis.q=0.5 \
    actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum

Keys of ``algorithm.tsallis``: ``q`` (required, a real number in [0, 1]; a missing, ``None`` or
out-of-range q is an error at the first advantage computation, there is no default),
``paper_normalization`` (bool, default false: multiply the coefficients by M^(-q), the paper's
q-dependent learning-rate rescale), ``seed`` (int >= 0, default 0) and ``num_draws`` (int, PAFT's
K, default M); ``seed`` and ``num_draws`` are accepted by ``tsallis_paft`` only (for
``tsallis_garl`` and ``tsallis_garl_rloo`` they are an error). Any other key is an error (a typo
must not pass silently). The ``+`` is Hydra's syntax for a key that verl's own
config schema does not declare. A typed ``AlgoConfig`` cannot carry the block (it rejects unknown
fields); verl's trainers pass the raw ``DictConfig``, which can.

PAFT's randomness: the draws come from a ``torch.Generator`` seeded with ``seed`` when the
estimator first runs in a process and continued on each later call, so a run from the same seed
that sees the same batches makes the same draws. A resumed run restarts the stream.

Verifier mode only
------------------
The sequence reward r_b is the sum of row b of ``token_level_rewards`` (verl puts the scalar
reward on the last response token), and must lie in [0, 1]: GARL's weights are probabilities
(Eq. 9). A reward outside [0, 1] (a reward function on another scale, or
``algorithm.use_kl_in_reward=true``, which subtracts a KL penalty from the token rewards) is an
error. The log-weights log r_b go through :mod:`tsallis.estimators` with ``mode="verifier"``.

Groups
------
A group is the set of rows that share a uid in ``index`` (``data.non_tensor_batch["uid"]``).
Rows of a group need not be contiguous. Groups may differ in size (verl's multi-trajectory agent
loops and filtered batches can produce that): the estimator runs once per distinct size, over all
groups of that size (sizes ascending, groups in order of first appearance), so every coefficient
uses its own group's M. ``tsallis_garl_rloo`` needs M >= 2 (a leave-one-out baseline); a group
of one response is an error that names its uid. A group whose rewards are all 0 is stalled: its
advantages are 0, never NaN.

Scale convention
----------------
The estimators return per-sequence coefficients c_b that already average over the M samples of
a group (:class:`tsallis.estimators.Coefficients`: ``coef_z = c_m/M`` for GARL-RLOO). verl's
advantages carry no 1/M (its ``rloo`` advantage is r_m - mean_{j != m} r_j). This module
therefore returns, for row b of a group of size M_b,

    A_b = M_b · coef_z[b],    broadcast over the response tokens (times ``response_mask``),

so that at q = 0 ``tsallis_garl_rloo`` equals verl's ``rloo`` (to float32 rounding) and GARL at
q = 0 equals REINFORCE. With ``loss_agg_mode="seq-mean-token-sum"`` verl's on-policy policy loss
is L = -(1/B)·Σ_b A_b·Σ_t log π(y_bt), whose gradient with B = G·M rows in G groups of M is
exactly that of the package's surrogate -(1/G)·Σ_b coef_z[b]·log π(y_b | x_b)
(:func:`tsallis.sequence_loss` with ``num_groups=G``).

That holds on-policy: one optimiser step per rollout batch, i.e.
``actor_rollout_ref.actor.ppo_mini_batch_size`` equal to ``data.train_batch_size`` and
``actor_rollout_ref.actor.ppo_epochs=1``. With smaller mini-batches or more epochs, every update
after the first uses responses sampled from an older policy: the advantages are those of the old
policy and PPO's ratio clipping applies, as for any verl estimator.

Which ``loss_agg_mode``
-----------------------
The estimator's direction is Σ_b coef_b ∇log π(y_b), a sum over each sequence's tokens.
``seq-mean-token-sum`` reproduces it with the scale above; ``seq-mean-token-sum-norm`` (factor
1/``loss_scale_factor``, or 1/the padded response length when that is unset), ``token-sum``
(factor B) and ``token-mean`` (factor B/N_tokens, N_tokens the mini-batch's response tokens, so a
step-dependent learning rate) keep the direction and change only the scale.
``seq-mean-token-mean`` divides each sequence's term by its own length: it changes the direction
whenever lengths differ and is not the estimator. Use ``seq-mean-token-sum``.

Likelihood mode
---------------
The paper's likelihood mode needs, per sequence, log w_b = log p(y* | x*, z_b), the
teacher-forced log-probability of the gold answer after the sampled rationale under the current
policy, and per-token coefficients (``coef_z`` on rationale tokens, ``coef_y`` on answer tokens).
A named advantage estimator cannot do it (verl's ``compute_advantage`` never passes it
``old_log_probs``, and no reward function sees the policy). :func:`likelihood_advantages` computes
the per-token advantages from ``old_log_probs`` and an answer-span mask, and
:mod:`tsallis.integrations.verl_likelihood` uses it through verl's other plug-in points: the agent
loop ``tsallis_likelihood`` (appends the gold answer) and the trainer mode ``tsallis_sync``
(its advantage step), registered by this module on ``import verl`` (docs/trainers/verl.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .. import estimators as _est
from .._validate import check_q
from ..rollouts import RowCoefficients, reward_log_w, row_coefficients

__all__ = [
    "CONFIG_KEY",
    "NAMED_ESTIMATORS",
    "advantage_estimator",
    "likelihood_advantages",
    "register",
    "verifier_advantages",
]

CONFIG_KEY = "tsallis"
"""Name of the block of verl's ``algorithm`` config the named estimators read."""

NAMED_ESTIMATORS: dict[str, str] = {
    "tsallis_garl": "garl",
    "tsallis_garl_rloo": "garl_rloo",
    "tsallis_paft": "paft",
}
"""verl name -> :data:`tsallis.estimators.ESTIMATORS` name, registered on ``import verl``."""

_CONFIG_KEYS = ("q", "paper_normalization", "seed", "num_draws")
_MARK = "_tsallis_verl_estimator"


# ----------------------------------------------------------------------------- checks


def _check_rewards_2d(token_level_rewards, response_mask, name="token_level_rewards") -> None:
    if not isinstance(token_level_rewards, torch.Tensor) or token_level_rewards.ndim != 2:
        raise TypeError(
            f"{name} must be a torch tensor of shape (bs, response_length), got "
            + (
                f"shape {tuple(token_level_rewards.shape)}"
                if isinstance(token_level_rewards, torch.Tensor)
                else type(token_level_rewards).__name__
            )
        )
    if not token_level_rewards.is_floating_point():
        raise TypeError(
            f"{name} must be floating point, got dtype {token_level_rewards.dtype}"
        )
    shape = token_level_rewards.shape
    if not isinstance(response_mask, torch.Tensor) or response_mask.shape != shape:
        raise ValueError(
            f"response_mask must be a tensor shaped like {name} "
            f"{tuple(token_level_rewards.shape)}, got "
            + (
                f"shape {tuple(response_mask.shape)}"
                if isinstance(response_mask, torch.Tensor)
                else type(response_mask).__name__
            )
        )


def _check_index(index, bs: int) -> None:
    if index is None:
        raise ValueError(
            "a tsallis advantage estimator needs index (the uid of each row's prompt, verl's "
            "data.non_tensor_batch['uid']) to form groups; got index=None"
        )


def _sequence_log_w(token_level_rewards: torch.Tensor) -> torch.Tensor:
    """log r_b with r_b = Σ_t token_level_rewards[b, t] (float64), checked to lie in [0, 1]
    up to float32 round-off (:func:`tsallis.rollouts.check_rewards`)."""
    r = token_level_rewards.detach().to(torch.float64).sum(dim=-1)
    try:
        return reward_log_w(r)
    except ValueError as e:
        raise ValueError(
            f"tsallis estimators in verl run in verifier mode: each sequence reward (the sum of "
            f"its token_level_rewards) must lie in [0, 1]: {e}; rescale the reward function "
            "to [0, 1] and keep algorithm.use_kl_in_reward=false (use the actor's KL loss "
            "instead)"
        ) from None


def _rows(log_w, index, q, estimator, mode, options, generator) -> RowCoefficients:
    """The seam (:func:`tsallis.rollouts.row_coefficients`) on verl's uid groups."""
    kwargs = dict(options)
    if estimator in _est.RANDOMIZED:
        kwargs["generator"] = generator
    return row_coefficients(log_w, q, groups=index, estimator=estimator, mode=mode, **kwargs)


def verifier_advantages(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index,
    q: float,
    estimator: str = "garl_rloo",
    *,
    generator: torch.Generator | None = None,
    **options,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    r"""Verifier-mode advantages in verl's convention.

    r_b = Σ_t token_level_rewards[b, t] ∈ [0, 1]; log w_b = log r_b; per group of size M (rows
    sharing a uid) the estimator gives coef_z (Eq. 9, Eq. 12 or Algorithm 2), and

        A[b, t] = M · coef_z[b] · response_mask[b, t].

    Shapes: token_level_rewards, response_mask (bs, T); index: bs uids. Returns
    (advantages (bs, T) in token_level_rewards' dtype, the same values as returns, stats), stats
    the batch's :class:`tsallis.rollouts.RolloutStats` (q, number of groups, frac_stalled,
    log_w_mean, w_mean, max_amplified_advantage: the names every host logs,
    ``stats.as_metrics()``). A reward within float32 round-off of [0, 1] is clamped.

    >>> r = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    >>> adv, _, stats = verifier_advantages(r, torch.ones(4, 2), ["a"] * 4, q=0.5)
    >>> adv[:, 0]  # M·coef_z: success 2 - 0, failures 0 - (1/3)^(1/2)
    tensor([ 2.0000, -0.5774, -0.5774, -0.5774])
    """
    _check_rewards_2d(token_level_rewards, response_mask)
    q = check_q(q)
    if not isinstance(q, float):
        raise TypeError(f"q must be a real number in [0, 1], got {type(q).__name__}")
    mode = options.pop("mode", "verifier")
    if mode != "verifier":
        raise ValueError(
            "verl advantage estimators run in verifier mode only (the estimator never sees the "
            f"policy's log-probs); got mode={mode!r}. See likelihood_advantages, or TRL's "
            "tsallis.integrations.trl.TsallisGRPOTrainer with mode='likelihood'"
        )
    _check_index(index, token_level_rewards.shape[0])
    rows = _rows(_sequence_log_w(token_level_rewards), index, q, estimator, "verifier", options,
                 generator)  # fmt: skip
    dtype = token_level_rewards.dtype
    mask = response_mask.to(dtype)
    advantages = rows.adv_z.to(device=mask.device, dtype=dtype)[:, None] * mask
    return advantages, advantages.clone(), rows.stats


def likelihood_advantages(
    old_log_probs: torch.Tensor,
    answer_mask: torch.Tensor,
    response_mask: torch.Tensor,
    index,
    q: float,
    estimator: str = "garl_rloo",
    *,
    generator: torch.Generator | None = None,
    **options,
) -> tuple[torch.Tensor, dict]:
    r"""Likelihood-mode per-token advantages, for a verl trainer whose responses are
    rationale z_b + answer marker + gold answer y* (teacher-forced).

    log w_b = Σ_t old_log_probs[b, t]·answer_mask[b, t] = log p(y* | x*, z_b) (Eq. 12's weights);
    per group of size M the estimator (``mode="likelihood"``) gives coef_z and coef_y, and

        A[b, t] = M·coef_z[b]  on rationale tokens (response_mask and not answer_mask),
        A[b, t] = M·coef_y[b]  on answer tokens (answer_mask), 0 elsewhere,

    so that verl's on-policy loss with ``seq-mean-token-sum`` has the gradient of
    -(1/G)·Σ_b [coef_z·log p(z_b|x*) + coef_y·log p(y*|x*, z_b)].

    Shapes: old_log_probs, answer_mask, response_mask (bs, T). answer_mask must lie inside
    response_mask and be non-empty in every row. Returns (advantages (bs, T), stats), stats a
    :class:`tsallis.rollouts.RolloutStats`.
    """
    _check_rewards_2d(old_log_probs, response_mask, name="old_log_probs")
    if not isinstance(answer_mask, torch.Tensor) or answer_mask.shape != old_log_probs.shape:
        raise ValueError(
            f"answer_mask must be a tensor shaped like old_log_probs {tuple(old_log_probs.shape)}"
        )
    q = check_q(q)
    if not isinstance(q, float):
        raise TypeError(f"q must be a real number in [0, 1], got {type(q).__name__}")
    resp = response_mask.to(torch.bool)
    ans = answer_mask.to(torch.bool)
    if bool((ans & ~resp).any()):
        raise ValueError("answer_mask marks tokens outside response_mask")
    if not bool(ans.any(dim=-1).all()):
        row = int(torch.nonzero(~ans.any(dim=-1))[0])
        raise ValueError(f"answer_mask is empty in row {row}: every response needs its answer span")
    _check_index(index, old_log_probs.shape[0])
    lp = old_log_probs.detach().to(torch.float64)
    log_w = torch.where(ans, lp, torch.zeros_like(lp)).sum(dim=-1)
    rows = _rows(log_w, index, q, estimator, "likelihood", options, generator)
    ans, resp = ans.cpu(), resp.cpu()
    adv = torch.where(ans, rows.adv_y[:, None], torch.where(resp, rows.adv_z[:, None], 0.0))
    return adv.to(device=old_log_probs.device, dtype=old_log_probs.dtype), rows.stats


# ----------------------------------------------------------------------------- verl signature


def _check_options(estimator: str, options: dict) -> None:
    """Fail at construction on an unknown estimator or option (a dry run on a tiny group)."""
    fn = _est.get_estimator(estimator)
    probe = dict(options)
    if estimator in _est.RANDOMIZED:
        probe["generator"] = torch.Generator()
    try:
        fn(torch.zeros(1, 2, dtype=torch.float64), 0.0, mode="verifier", **probe)
    except TypeError as e:
        raise TypeError(f"bad options {sorted(options)} for estimator {estimator!r}: {e}") from e


def advantage_estimator(q: float, estimator: str = "garl_rloo", **options) -> Callable:
    r"""A verl advantage estimator with a fixed q.

    Returns ``fn(token_level_rewards, response_mask, config=None, index=None, **kwargs) ->
    (advantages, returns)``, both (bs, response_length), the signature verl's
    ``compute_advantage`` calls; register it under a name of your choice with
    ``verl.trainer.ppo.core_algos.register_adv_est(name)(fn)``. ``config`` is ignored (q and the
    options are fixed here). The advantages are :func:`verifier_advantages`:
    A[b, t] = M·coef_z[b]·response_mask[b, t].

    ``estimator``: any name of :data:`tsallis.estimators.ESTIMATORS`. ``options`` go to the
    estimator (``paper_normalization``, ``num_draws``, ``eps``, ``threshold``), plus, for the
    randomised PAFT, ``seed`` (int, default 0: a ``torch.Generator`` seeded once and continued
    over calls) or ``generator`` (a ``torch.Generator``). The last call's statistics are in
    ``fn.last_stats``.

    >>> fn = advantage_estimator(0.0, "garl_rloo")
    >>> r = torch.tensor([[1.0], [0.0], [0.0], [1.0]])
    >>> fn(r, torch.ones(4, 1), index=["a", "b", "b", "a"])[0].squeeze(-1)
    tensor([0., 0., 0., 0.])
    """
    q = check_q(q)
    if not isinstance(q, float):
        raise TypeError(f"q must be a real number in [0, 1], got {type(q).__name__}")
    options = dict(options)
    if options.get("mode", "verifier") != "verifier":
        raise ValueError(
            "verl advantage estimators run in verifier mode only; got "
            f"mode={options['mode']!r}. For likelihood mode use likelihood_advantages in a "
            "trainer subclass, or tsallis.integrations.trl.TsallisGRPOTrainer(mode='likelihood')"
        )
    options.pop("mode", None)
    seed = options.pop("seed", None)
    generator = options.pop("generator", None)
    randomized = estimator in _est.RANDOMIZED
    if not randomized and (seed is not None or generator is not None):
        raise ValueError(f"seed/generator apply to randomised estimators only, not {estimator!r}")
    if randomized:
        if generator is not None and seed is not None:
            raise ValueError("pass either seed or generator, not both")
        if generator is None:
            generator = torch.Generator().manual_seed(_check_seed(0 if seed is None else seed))
        elif not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    _check_options(estimator, options)

    def tsallis_advantage(
        token_level_rewards: torch.Tensor,
        response_mask: torch.Tensor,
        config=None,
        index=None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        adv, ret, stats = verifier_advantages(
            token_level_rewards, response_mask, index, q, estimator, generator=generator,
            **options,
        )  # fmt: skip
        tsallis_advantage.last_stats = stats
        return adv, ret

    tsallis_advantage.q = q
    tsallis_advantage.estimator = estimator
    tsallis_advantage.last_stats = None
    tsallis_advantage.__qualname__ = tsallis_advantage.__name__ = f"tsallis_{estimator}_q{q:g}"
    return tsallis_advantage


# ----------------------------------------------------------------------------- named estimators


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{CONFIG_KEY}.seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _settings(config, name: str) -> tuple[float, dict, int]:
    """(q, estimator options, seed) from ``config[CONFIG_KEY]``, validated."""
    hint = (
        f"{name} reads q from verl's algorithm config: add +algorithm.{CONFIG_KEY}.q=<q in "
        "[0, 1]> to the command line (or algorithm.tsallis.q in the YAML)"
    )
    if config is None or not hasattr(config, "get"):
        raise ValueError(f"{hint}; the estimator received config={type(config).__name__}")
    section = config.get(CONFIG_KEY, None)
    if section is None:
        raise ValueError(
            f"{hint}; config has no '{CONFIG_KEY}' block"
            + (
                " (a typed AlgoConfig cannot carry one: pass the algorithm DictConfig, as "
                "verl's trainers do)"
                if type(config).__name__ == "AlgoConfig"
                else ""
            )
        )
    if not hasattr(section, "keys") or not hasattr(section, "get"):
        raise TypeError(
            f"algorithm.{CONFIG_KEY} must be a mapping with key q (e.g. "
            f"+algorithm.{CONFIG_KEY}.q=0.5), got {type(section).__name__}"
        )
    unknown = sorted(str(k) for k in section.keys() if k not in _CONFIG_KEYS)
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in algorithm.{CONFIG_KEY}; expected some of {_CONFIG_KEYS}"
        )
    q = section.get("q", None)
    if q is None:
        raise ValueError(f"{hint}; algorithm.{CONFIG_KEY}.q is missing")
    try:
        q = check_q(q, name=f"algorithm.{CONFIG_KEY}.q")
    except (TypeError, ValueError) as e:
        raise type(e)(f"{e} ({name})") from None
    if not isinstance(q, float):
        raise TypeError(f"algorithm.{CONFIG_KEY}.q must be a real number, got {type(q).__name__}")
    options: dict[str, Any] = {}
    pn = section.get("paper_normalization", False)
    if not isinstance(pn, bool):
        raise TypeError(f"algorithm.{CONFIG_KEY}.paper_normalization must be a bool, got {pn!r}")
    options["paper_normalization"] = pn
    if NAMED_ESTIMATORS[name] not in _est.RANDOMIZED:
        extra = sorted(str(k) for k in ("seed", "num_draws") if k in section.keys())
        if extra:
            raise ValueError(
                f"algorithm.{CONFIG_KEY}.{extra[0]} is a setting of PAFT's resampling "
                f"(adv_estimator=tsallis_paft); {name} is deterministic and takes only q and "
                f"paper_normalization, got {extra}"
            )
    seed = _check_seed(section.get("seed", 0))
    num_draws = section.get("num_draws", None)
    if NAMED_ESTIMATORS[name] in _est.RANDOMIZED and num_draws is not None:
        options["num_draws"] = num_draws
    return q, options, seed


def _make_named(name: str) -> Callable:
    estimator = NAMED_ESTIMATORS[name]
    generators: dict[int, torch.Generator] = {}

    def named_estimator(
        token_level_rewards: torch.Tensor,
        response_mask: torch.Tensor,
        config=None,
        index=None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        q, options, seed = _settings(config, name)
        generator = None
        if estimator in _est.RANDOMIZED:
            generator = generators.setdefault(seed, torch.Generator().manual_seed(seed))
        adv, ret, stats = verifier_advantages(
            token_level_rewards, response_mask, index, q, estimator, generator=generator,
            **options,
        )  # fmt: skip
        named_estimator.last_stats = stats
        return adv, ret

    named_estimator.__name__ = named_estimator.__qualname__ = name
    named_estimator.__doc__ = (
        f"verl advantage estimator '{name}': tsallis.estimators.{estimator} in verifier mode, "
        f"q from algorithm.{CONFIG_KEY}.q; A = M·coef_z broadcast over the response tokens."
    )
    named_estimator.last_stats = None
    named_estimator.generators = generators
    setattr(named_estimator, _MARK, name)
    return named_estimator


_NAMED_FUNCTIONS: dict[str, Callable] = {name: _make_named(name) for name in NAMED_ESTIMATORS}


def register() -> dict[str, Callable]:
    """Register ``tsallis_garl``, ``tsallis_garl_rloo`` and ``tsallis_paft`` with verl.

    Idempotent: a name already holding this module's function (from this or an earlier import
    of the module) is (re)pointed at the current one; a name held by someone else's function is
    a ValueError. Returns {name: function}. Called when the module is imported.
    """
    from verl.trainer.ppo import core_algos

    registry = core_algos.ADV_ESTIMATOR_REGISTRY
    for name, fn in _NAMED_FUNCTIONS.items():
        held = registry.get(name)
        if held is not None and held is not fn:
            if getattr(held, _MARK, None) != name:
                raise ValueError(
                    f"verl advantage estimator {name!r} is already registered by "
                    f"{getattr(held, '__module__', '?')}.{getattr(held, '__qualname__', held)}"
                )
            registry.pop(name)
        core_algos.register_adv_est(name)(fn)
    return dict(_NAMED_FUNCTIONS)


register()


def _register_likelihood_mode() -> None:
    """Register likelihood mode's agent loop and trainer (:mod:`.verl_likelihood`). They need
    verl's v1 trainer, whose dependencies (TransferQueue, ...) the ``verl`` extra installs;
    without them verifier mode still registers and a warning names the missing module."""
    try:
        from . import verl_likelihood
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] in ("tsallis", "verl"):
            raise
        import warnings

        warnings.warn(
            f"tsallis: verl likelihood mode (tsallis_likelihood, tsallis_sync) not registered: "
            f"{e} (pip install 'tsallis-continuum[verl]')",
            stacklevel=2,
        )
        return
    verl_likelihood.register()


_register_likelihood_mode()
