r"""The J_Q loss on LLM logits: token log-probs, estimator coefficients and the gradient.

    L = -Σ_b [ sg(a_b) · log p(z_b | x*) + sg(b_b) · log p(y* | x*, z_b) ] / G

(docs/conventions.md, "Coefficients"), where log p(z_b | x*) and log p(y* | x*, z_b) are the sums
of token log-probs of sequence b over its rationale span and its answer span, computed from the
logits by :mod:`kernels`, and (a, b) are the per-sequence coefficients of an estimator of
:mod:`tsallis.estimators` (GARL Eq. 9, GARL-RLOO Eq. 12, PAFT Alg. 2, and the RL baselines).
This is exactly :func:`tsallis.loss.tsallis_sequence_loss` applied to those per-sequence
log-probs; the fused path computes the same value and gradient without ever materialising an
fp32 ``[N, V]`` tensor, and writes dL/dlogits during the forward pass.

Aligning logits and ids for a Hugging Face causal LM
----------------------------------------------------
``model(input_ids).logits[:, t]`` is the distribution of token ``input_ids[:, t+1]``. Either
pass ``logits[:, :-1]`` (a view; strides are handled, no copy in the forward) with
``input_ids[:, 1:]`` and masks ``[:, 1:]``, or pass the full logits with the labels and masks
returned by :func:`kernels.shift_for_causal_lm` (the last position is ignored) - the second
form lets the kernel write the gradient straight into a full-size buffer. With TRL's
``logits_to_keep = K`` the model returns ``K + 1`` positions; ``logits[:, :-1]`` then lines up
with the ``K`` completion ids. Temperature as in TRL: the logits are divided by it.
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
    log_weights,
    resolve_mode,
)
from .estimators import Coefficients, get_estimator
from .loss import sequence_loss

__all__ = ["LogitsLossInfo", "TsallisLoss", "shift_for_causal_lm", "tsallis_logits_loss"]


def shift_for_causal_lm(input_ids, *masks):
    """Labels and masks aligned with a causal LM's full logits (see :mod:`kernels.layout`).

    >>> import torch
    >>> shift_for_causal_lm(torch.tensor([[5, 6, 7]]), torch.tensor([[0, 1, 1]]))
    (tensor([[6, 7, 0]]), tensor([[ True,  True, False]]))
    """
    from kernels import shift_for_causal_lm as _shift

    return _shift(input_ids, *masks)


@dataclass(frozen=True)
class LogitsLossInfo:
    """What one call of :func:`tsallis_logits_loss` computed (all detached).

    Attributes:
        logp_z: [B] rationale-span log-probs log p(z_b | x*).
        logp_y: [B] answer-span log-probs log p(y | x*, z_b) (0 without an answer span).
        log_w: [G, M] log-weights the estimator saw (logp_y in likelihood mode, log rewards in
            verifier mode).
        coefficients: the estimator's :class:`~tsallis.estimators.Coefficients` (coef_z, coef_y
            [G, M], log_w_mean, amplification, max_amplified_advantage, stalled [G], ...).
        mean_entropy: mean per-token entropy over the rationale and answer tokens (nan when not
            computed, i.e. ``track_entropy=False``).
    """

    logp_z: torch.Tensor
    logp_y: torch.Tensor
    log_w: torch.Tensor
    coefficients: Coefficients
    mean_entropy: torch.Tensor

    @property
    def coef_z(self) -> torch.Tensor:
        return self.coefficients.coef_z

    @property
    def coef_y(self) -> torch.Tensor:
        return self.coefficients.coef_y

    @property
    def log_w_mean(self) -> torch.Tensor:
        return self.coefficients.log_w_mean

    @property
    def max_amplified_advantage(self) -> torch.Tensor:
        return self.coefficients.max_amplified_advantage

    @property
    def stalled(self) -> torch.Tensor:
        return self.coefficients.stalled

    @property
    def num_stalled(self) -> int:
        return int(self.coefficients.stalled.sum())


def _layout(logits, rationale_mask, answer_mask, cu_seqlens, what="logits"):
    """The :class:`kernels.TokenLayout` of padded ``[B, T, .]`` or packed ``[N, .]`` rows
    (``what`` names the tensor in the messages: the logits, or the hidden states)."""
    from kernels import TokenLayout

    if rationale_mask is None:
        raise ValueError("rationale_mask is required (which tokens are the sampled rationale)")
    if cu_seqlens is None:
        if logits.dim() != 3:
            raise ValueError(
                f"padded [B, T] masks need {what} of shape [B, T, .]; for packed [N, .] {what} "
                f"pass cu_seqlens. Got {what} of shape {tuple(logits.shape)}"
            )
        if tuple(rationale_mask.shape) != tuple(logits.shape[:2]):
            raise ValueError(
                f"rationale_mask must have shape [B, T] = {tuple(logits.shape[:2])}, got "
                f"{tuple(rationale_mask.shape)}"
            )
        return TokenLayout.from_masks(rationale_mask, answer_mask)
    if logits.dim() != 2:
        raise ValueError(
            f"with cu_seqlens the {what} must be packed [N, .], got {tuple(logits.shape)}"
        )
    if rationale_mask.numel() != logits.shape[0]:
        raise ValueError(
            f"rationale_mask must have N = {logits.shape[0]} entries, got "
            f"{tuple(rationale_mask.shape)}"
        )
    return TokenLayout.from_varlen(cu_seqlens, rationale_mask, answer_mask)


def _check_answers_present(layout) -> None:
    """Likelihood mode: every sequence needs an answer token, else log w = log 1 = 0 (one
    cumulative sum over the span codes and one device sync)."""
    from kernels.layout import ANSWER

    is_answer = (layout.span == ANSWER).to(torch.int64)
    csum = torch.cat([is_answer.new_zeros(1), is_answer.cumsum(0)])
    cu = layout.cu_seqlens.to(csum.device)
    empty = (csum[cu[1:]] - csum[cu[:-1]]) == 0
    if bool(empty.any()):
        bad = torch.nonzero(empty).reshape(-1).tolist()
        shown = ", ".join(map(str, bad[:8])) + (", ..." if len(bad) > 8 else "")
        raise ValueError(
            f"likelihood mode: sequence(s) {shown} of {layout.num_sequences} have no answer "
            "token in answer_mask; the weight w = p(y* | x*, z) needs the gold answer's tokens "
            "(an empty answer would count as w = 1)"
        )


def _check_loss_scale(loss_scale) -> float:
    import math

    s = float(loss_scale)
    if not (math.isfinite(s) and s > 0):
        raise ValueError(f"loss_scale must be a finite positive number, got {loss_scale!r}")
    return s


class _CoefficientRule:
    """The estimator as the kernels' coefficient rule, shared by the logits and hidden-state
    losses: validates the mode and the batch once, and keeps the last call's log-weights and
    :class:`~tsallis.estimators.Coefficients` for the info record.

    Likelihood mode needs an answer span in every sequence (an empty one would be w = 1);
    verifier mode takes ``rewards [B]`` (moved to ``device``, where the coefficients live).
    """

    def __init__(self, layout, q, group_size, estimator, rewards, answer_mask, device, options):
        self.B = layout.num_sequences
        self.M = check_group_size(self.B, group_size)
        self.G = self.B // self.M
        self.est = get_estimator(estimator)  # a clear error on a typo before any work
        self.q = q
        self.mode = resolve_mode(options.pop("mode", None), rewards, self.B)
        if self.mode == "likelihood":
            if answer_mask is None:
                raise ValueError(
                    "likelihood mode (no rewards) needs answer_mask: the gold answer's tokens "
                    "whose log-prob is the weight w = p(y* | x*, z)"
                )
            _check_answers_present(layout)
        self.rewards = None if rewards is None else rewards.to(device)
        self.options = options
        self.log_w = self.coefficients = None

    def __call__(self, logp_y: torch.Tensor | None):
        self.log_w = log_weights(self.mode, logp_y, self.rewards, self.M)
        self.coefficients = self.est(self.log_w, self.q, mode=self.mode, **self.options)
        return self.coefficients.coef_z.reshape(self.B), self.coefficients.coef_y.reshape(self.B)

    def for_kernel(self):
        """What a fused kernel takes: the coefficients up front in verifier mode, or the rule
        itself, which the kernel calls between scoring the answer rows and its single pass."""
        return self(None) if self.mode == "verifier" else self


def _mean_entropy(ent, span):
    if ent is None:
        return torch.tensor(float("nan"))
    active = span != 0
    n = active.sum()
    return (torch.where(active, ent, ent.new_zeros(())).sum() / n.clamp(min=1)).detach()


def tsallis_logits_loss(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    q: float,
    *,
    group_size: int,
    rationale_mask: torch.Tensor,
    answer_mask: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    estimator: str = "garl_rloo",
    rewards: torch.Tensor | None = None,
    temperature: float = 1.0,
    reduction: str = "mean",
    fused: bool = True,
    inplace_grad: bool = False,
    track_entropy: bool = True,
    impl: str = "auto",
    return_info: bool = False,
    loss_scale: float = 1.0,
    **estimator_options,
):
    r"""J_Q loss of G·M sampled sequences straight from the logits (docs/conventions.md).

    Likelihood mode (``rewards`` None): log w_b = log p(y* | x*, z_b), the answer span's summed
    log-probs (detached), so ``answer_mask`` is required and every sequence must have at least
    one answer token (an empty answer would have log w = 0, the largest weight of its group:
    a ValueError names the sequence). A gold token of probability 0 (a -inf logit) is a valid
    weight w = 0: the loss and its gradient stay finite. Verifier mode: ``rewards [B]`` in
    [0, 1], log w_b = log r_b; the answer mask is optional (without it the whole response is
    the rationale span). The M samples of each prompt are contiguous (sequence b is in group
    b // M), as in TRL.

    Args:
        logits: ``[B, T, V]`` with ``[B, T]`` masks, or packed ``[N, V]`` with ``[N]`` masks and
            ``cu_seqlens [B+1]``. Any float dtype and strides. See the module docstring for
            the causal-LM shift.
        token_ids: ids with the logits' leading shape; ignored positions may hold anything
            (e.g. -100).
        q: Tsallis index in [0, 1].
        group_size: M, samples per prompt; B must be a multiple of it.
        rationale_mask, answer_mask: which tokens are rationale z / answer y* (bool or 0/1).
        cu_seqlens: sequence boundaries for packed logits.
        estimator: a name of :data:`tsallis.ESTIMATORS` ("garl_rloo" is the paper's algorithm).
        rewards: verifier rewards [B] (verifier mode).
        temperature: logits are divided by it (TRL convention).
        reduction: "mean" (sum / G, the mean over prompts), "sum", or "none" ([B]).
        fused: compute the gradient in the forward pass (Triton on CUDA; two chunked passes on
            CPU). "none" reductions always use the unfused path.
        inplace_grad: (fused only) write the gradient into the logits' storage - no gradient
            buffer, but the logits are destroyed.
        track_entropy: compute the mean token entropy for the info record.
        impl: "auto" | "triton" | "torch" (see :func:`kernels.token_logprobs`).
        return_info: also return a :class:`LogitsLossInfo`.
        loss_scale: multiplies the loss (e.g. ``1 / gradient_accumulation_steps``). On the
            fused path it is folded into the kernel's normaliser, so the gradient comes out
            scaled at no cost; ``tsallis_logits_loss(...) / GA`` instead costs one more pass
            over the ``[N, V]`` gradient in the backward (docs/kernels.md).
        **estimator_options: passed to the estimator (``paper_normalization``, ``generator``
            and ``num_draws`` for PAFT, ...).

    Returns:
        the loss (scalar, or [B] for ``reduction="none"``), and the info when requested.

    Example (likelihood mode, 2 prompts x 2 samples, 3 positions: 2 rationale + 1 answer):
        >>> import torch
        >>> torch.manual_seed(0) and None
        >>> logits = torch.randn(4, 3, 11, requires_grad=True)
        >>> ids = torch.randint(0, 11, (4, 3))
        >>> rat = torch.tensor([[1, 1, 0]] * 4)
        >>> ans = torch.tensor([[0, 0, 1]] * 4)
        >>> loss, info = tsallis_logits_loss(logits, ids, 0.5, group_size=2, rationale_mask=rat,
        ...                                  answer_mask=ans, return_info=True)
        >>> loss.backward()
        >>> tuple(logits.grad.shape), tuple(info.coef_z.shape), info.num_stalled
        ((4, 3, 11), (2, 2), 0)
    """
    check_reduction(reduction)
    scale = _check_loss_scale(loss_scale)
    from kernels import check_logits

    check_logits(logits)
    layout = _layout(logits, rationale_mask, answer_mask, cu_seqlens)
    rule = _CoefficientRule(layout, q, group_size, estimator, rewards, answer_mask,
                            logits.device, estimator_options)  # fmt: skip
    M, G = rule.M, rule.G

    if not fused or reduction == "none":
        from kernels import sequence_logprobs

        out = sequence_logprobs(
            logits, token_ids, layout, temperature=temperature,
            return_entropy=track_entropy and return_info, impl=impl,
        )  # fmt: skip
        coef_z, coef_y = rule(out.logp_y)
        loss = sequence_loss(
            out.logp_z, out.logp_y, coef_z, coef_y, group_size=M, reduction=reduction
        )
        if scale != 1.0:
            loss = loss * scale
        logp_z, logp_y = out.logp_z.detach(), out.logp_y.detach()
        entropy = None if out.entropy is None else out.entropy.detach()
    else:
        from kernels import fused_sequence_loss

        res = fused_sequence_loss(
            logits, token_ids, layout, rule.for_kernel(),
            normalizer=(float(G) if reduction == "mean" else 1.0) / scale,
            temperature=temperature,
            return_entropy=track_entropy and return_info, inplace_grad=inplace_grad, impl=impl,
        )  # fmt: skip
        loss, logp_z, logp_y, entropy = res.loss, res.logp_z, res.logp_y, res.entropy
    if not return_info:
        return loss
    return loss, LogitsLossInfo(
        logp_z,
        logp_y,
        rule.log_w,
        rule.coefficients,
        _mean_entropy(entropy, layout.span.to(logits.device)),
    )


class TsallisLoss(nn.Module):
    r"""Module form of :func:`tsallis_logits_loss` for trainers: stores q, M and the options.

    ``forward(logits, token_ids, rationale_mask, answer_mask=None, *, cu_seqlens=None,
    rewards=None)`` returns the loss; the call's :class:`LogitsLossInfo` is kept in
    ``self.last_info`` (log ``last_info.max_amplified_advantage``, ``num_stalled``,
    ``mean_entropy``).

    >>> import torch
    >>> loss_fn = TsallisLoss(q=0.75, group_size=2)
    >>> logits = torch.zeros(2, 3, 5, requires_grad=True)
    >>> ids = torch.zeros(2, 3, dtype=torch.long)
    >>> loss = loss_fn(logits, ids, torch.tensor([[1, 1, 0]] * 2), torch.tensor([[0, 0, 1]] * 2))
    >>> loss_fn.last_info.stalled
    tensor([False])
    """

    def __init__(
        self,
        q: float,
        *,
        group_size: int,
        estimator: str = "garl_rloo",
        temperature: float = 1.0,
        reduction: str = "mean",
        fused: bool = True,
        inplace_grad: bool = False,
        track_entropy: bool = True,
        impl: str = "auto",
        **estimator_options,
    ):
        super().__init__()
        self.q = check_q(q)
        get_estimator(estimator)
        self.reduction = check_reduction(reduction)
        self.group_size = check_positive_int(group_size, name="group_size (M)")
        self.estimator = estimator
        self.temperature = float(temperature)
        self.fused = bool(fused)
        self.inplace_grad = bool(inplace_grad)
        self.track_entropy = bool(track_entropy)
        self.impl = impl
        self.estimator_options = dict(estimator_options)
        self.last_info: LogitsLossInfo | None = None

    def forward(
        self, logits, token_ids, rationale_mask, answer_mask=None, *, cu_seqlens=None, rewards=None
    ):
        loss, info = tsallis_logits_loss(
            logits, token_ids, self.q, group_size=self.group_size,
            rationale_mask=rationale_mask, answer_mask=answer_mask, cu_seqlens=cu_seqlens,
            estimator=self.estimator, rewards=rewards, temperature=self.temperature,
            reduction=self.reduction, fused=self.fused, inplace_grad=self.inplace_grad,
            track_entropy=self.track_entropy, impl=self.impl, return_info=True,
            **self.estimator_options,
        )  # fmt: skip
        self.last_info = info
        return loss

    def extra_repr(self) -> str:
        return (
            f"q={self.q}, group_size={self.group_size}, estimator={self.estimator!r}, "
            f"temperature={self.temperature}, fused={self.fused}"
        )
