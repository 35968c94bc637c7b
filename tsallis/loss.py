r"""The J_Q surrogate loss on per-sequence log-probabilities (docs/conventions.md).

    L = -Σ_m [ sg(coef_z[m])·logp_z[m] + sg(coef_y[m])·logp_y[m] ]

with ``logp_z`` the summed token log-probs of each sampled rationale, ``logp_y`` those of the
answer span (teacher-forced gold answer in likelihood mode; the sampled answer in verifier mode)
and detached coefficients from an estimator (GARL Eq. 9, GARL-RLOO Eq. 12, PAFT Algorithm 2,
RL baselines). Its gradient is the estimator's gradient of ℓ_q (Prop. 4.1), so any optimiser
step on it is a J_Q training step. A zero coefficient contributes 0 even against a log-prob of
-inf, and the loss is computed in at least float32 whatever the log-probs' dtype.

Batch layout: B = G·M sequences, the M samples of each prompt contiguous (row b belongs to group
b // M), as TRL and verl lay out their rollouts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._validate import (
    check_group_size,
    check_positive_int,
    check_q,
    check_reduction,
    check_sequence_values,
    log_weights,
    resolve_mode,
)
from .estimators import Coefficients, get_estimator

__all__ = ["sequence_loss", "tsallis_sequence_loss", "TsallisSequenceLoss", "LossInfo"]


def _check_seq(x, name: str, B: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor of shape [B], got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if x.ndim != 1:
        raise ValueError(
            f"{name} must have shape [B] (one value per sequence), got {tuple(x.shape)}"
        )
    if B is not None and x.shape[0] != B:
        raise ValueError(f"{name} must have shape [{B}] like logp_z, got {tuple(x.shape)}")
    return x


def _weighted(coef: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """coef·logp with 0·(-inf) := 0: a zero coefficient contributes nothing, even against a
    gold answer of probability 0 (a valid weight w = 0 in likelihood mode)."""
    zero = torch.zeros((), dtype=coef.dtype, device=coef.device)
    return torch.where(coef == 0, zero, coef * logp)


def sequence_loss(
    logp_z: torch.Tensor,
    logp_y: torch.Tensor | None,
    coef_z: torch.Tensor,
    coef_y: torch.Tensor | None = None,
    *,
    group_size: int | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""-(coef_z·logp_z + coef_y·logp_y) per sequence, coefficients detached.

    The surrogate loss of docs/conventions.md ("Coefficients"); 0·(-inf) := 0, so a sequence
    whose coefficient is 0 contributes 0 whatever its log-prob. Computed in the log-probs' dtype
    promoted to at least float32.

    Args:
        logp_z: [B] summed log-probs of each rationale span.
        logp_y: [B] summed log-probs of each answer span, or None (treated as 0: no answer span,
            e.g. verifier mode with the whole response in ``logp_z``).
        coef_z, coef_y: [G, M] (as an estimator returns them) or [B]; coef_y None means coef_z.
        group_size: M, required when the coefficients are flat [B] and reduction is "mean".
        reduction: "none" -> [B] per-sequence terms; "sum" -> their sum; "mean" -> the sum
            divided by the number of groups G, i.e. the mean over prompts of the per-prompt loss
            (each estimator's coefficients already average over the M samples).

    >>> logp = torch.tensor([-1.0, -2.0, -3.0, -4.0], requires_grad=True)
    >>> loss = sequence_loss(logp, None, torch.tensor([[0.5, 0.0], [0.25, 0.25]]))
    >>> loss, torch.autograd.grad(loss, logp)[0]
    (tensor(1.1250, grad_fn=<DivBackward0>), tensor([-0.2500, -0.0000, -0.1250, -0.1250]))
    """
    check_reduction(reduction)
    logp_z = _check_seq(logp_z, "logp_z")
    B = logp_z.shape[0]
    if logp_y is not None:
        logp_y = _check_seq(logp_y, "logp_y", B)
    if not isinstance(coef_z, torch.Tensor):
        raise TypeError(f"coef_z must be a tensor, got {type(coef_z).__name__}")
    if coef_y is None:
        coef_y = coef_z
    if coef_z.shape != coef_y.shape:
        raise ValueError(
            f"coef_z and coef_y must have the same shape, got {tuple(coef_z.shape)} and "
            f"{tuple(coef_y.shape)}"
        )
    if coef_z.ndim == 2:
        if group_size is not None and group_size != coef_z.shape[1]:
            raise ValueError(
                f"group_size={group_size} disagrees with coefficients of shape "
                f"{tuple(coef_z.shape)}"
            )
        group_size = coef_z.shape[1]
    elif coef_z.ndim != 1:
        raise ValueError(f"coefficients must have shape [G, M] or [B], got {tuple(coef_z.shape)}")
    if coef_z.numel() != B:
        raise ValueError(
            f"coefficients hold {coef_z.numel()} values (shape {tuple(coef_z.shape)}) but there "
            f"are B = {B} sequences"
        )
    ct = torch.promote_types(logp_z.dtype, torch.float32)
    if logp_y is not None:
        ct = torch.promote_types(ct, logp_y.dtype)
    per_seq = _weighted(coef_z.detach().reshape(B).to(ct), logp_z.to(ct))
    if logp_y is not None:
        per_seq = per_seq + _weighted(coef_y.detach().reshape(B).to(ct), logp_y.to(ct))
    per_seq = -per_seq
    if reduction == "none":
        return per_seq
    if reduction == "sum":
        return per_seq.sum()
    if group_size is None:
        raise ValueError('reduction="mean" with flat [B] coefficients needs group_size (M)')
    num_groups = B // check_group_size(B, group_size)
    return per_seq.sum() / num_groups


@dataclass(frozen=True)
class LossInfo:
    """What :func:`tsallis_sequence_loss` saw and computed (all detached).

    log_w: [G, M] the log-weights the estimator used; coefficients: the estimator's output (its
    log_w_mean, amplification, max_amplified_advantage, stalled, draw_counts are the monitors).
    """

    log_w: torch.Tensor
    coefficients: Coefficients

    @property
    def num_stalled(self) -> int:
        return int(self.coefficients.stalled.sum())


def tsallis_sequence_loss(
    logp_z: torch.Tensor,
    logp_y: torch.Tensor | None,
    q: float,
    *,
    group_size: int,
    estimator: str = "garl_rloo",
    rewards: torch.Tensor | None = None,
    reduction: str = "mean",
    return_info: bool = False,
    **estimator_options,
):
    r"""J_Q loss of a batch of G·M sampled sequences, from their per-sequence log-probs.

    Likelihood mode (``rewards`` None): log w_m = logp_y[m] (detached), the teacher-forced
    gold-answer log-prob after rationale z_m. Verifier mode (``rewards`` given, [B] in [0, 1]):
    log w_m = log r_m; ``logp_y`` may then be None (the whole response in ``logp_z``).
    The coefficients come from ``estimator`` (see :mod:`tsallis.estimators`), the loss from
    :func:`sequence_loss`.

    Values are checked: ``logp_z`` must be finite and <= 0 (a sampled rationale has positive
    probability); ``logp_y`` likewise, except that in likelihood mode -inf is allowed (a gold
    answer of probability 0 is a weight w = 0, and the loss stays finite). NaN, +inf or a
    positive log-prob (beyond rounding: 1e-6 in float64, 1e-3 otherwise) is a ValueError naming
    the sequence.

    >>> logp_z = torch.tensor([-3.0, -5.0, -4.0, -6.0], requires_grad=True)
    >>> logp_y = torch.log(torch.tensor([0.5, 0.1, 0.2, 0.2])).requires_grad_()
    >>> loss = tsallis_sequence_loss(logp_z, logp_y, 1.0, group_size=2, estimator="garl")
    >>> torch.autograd.grad(loss, logp_z)[0]  # q = 1: posterior weights w_m/Σw, per group
    tensor([-0.4167, -0.0833, -0.2500, -0.2500])
    """
    logp_z = _check_seq(logp_z, "logp_z")
    B = logp_z.shape[0]
    M = check_group_size(B, group_size)
    mode = resolve_mode(estimator_options.pop("mode", None), rewards, B)
    if mode == "likelihood" and logp_y is None:
        raise ValueError("likelihood mode needs logp_y (the gold answer's log-probs)")
    check_sequence_values(logp_z.detach(), "logp_z", allow_neg_inf=False)
    if logp_y is not None:
        _check_seq(logp_y, "logp_y", B)
        # likelihood mode: the gold answer may have probability 0 (w = 0, log w = -inf); in
        # verifier mode the answer was sampled, so its log-prob is finite
        check_sequence_values(logp_y.detach(), "logp_y", allow_neg_inf=mode == "likelihood")
    log_w = log_weights(mode, logp_y, rewards, M)
    coefs = get_estimator(estimator)(log_w, q, mode=mode, **estimator_options)
    loss = sequence_loss(logp_z, logp_y, coefs.coef_z, coefs.coef_y, reduction=reduction)
    if return_info:
        return loss, LossInfo(log_w=log_w, coefficients=coefs)
    return loss


class TsallisSequenceLoss(nn.Module):
    r"""Module form of :func:`tsallis_sequence_loss`: stores q, the estimator and its options.

    ``forward(logp_z, logp_y, rewards=None)`` returns the loss; the last call's
    :class:`LossInfo` is kept in ``self.last_info`` for logging.

    >>> loss_fn = TsallisSequenceLoss(q=0.75, group_size=2, estimator="garl_rloo")
    >>> logp_z = torch.tensor([-3.0, -5.0], requires_grad=True)
    >>> loss = loss_fn(logp_z, torch.log(torch.tensor([0.5, 0.1])))
    >>> loss_fn.last_info.coefficients.stalled
    tensor([False])
    """

    def __init__(
        self,
        q: float,
        *,
        group_size: int,
        estimator: str = "garl_rloo",
        reduction: str = "mean",
        **estimator_options,
    ):
        super().__init__()
        self.q = check_q(q)
        get_estimator(estimator)  # fail early on a typo
        self.reduction = check_reduction(reduction)
        self.group_size = check_positive_int(group_size, name="group_size (M)")
        self.estimator = estimator
        self.estimator_options = dict(estimator_options)
        self.last_info: LossInfo | None = None

    def forward(self, logp_z, logp_y=None, rewards=None):
        loss, info = tsallis_sequence_loss(
            logp_z, logp_y, self.q, group_size=self.group_size, estimator=self.estimator,
            rewards=rewards, reduction=self.reduction, return_info=True,
            **self.estimator_options,
        )  # fmt: skip
        self.last_info = info
        return loss

    def extra_repr(self) -> str:
        return f"q={self.q}, group_size={self.group_size}, estimator={self.estimator!r}"
