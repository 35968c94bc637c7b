r"""The J_Q loss from hidden states and the LM head: the logits are never built.

    L = -Σ_b [ sg(a_b) · log p(z_b | x*) + sg(b_b) · log p(y* | x*, z_b) ] / G

exactly as :func:`tsallis.tsallis_logits_loss` (docs/conventions.md, "Coefficients"; the
estimators of :mod:`tsallis.estimators`: GARL Eq. 9, GARL-RLOO Eq. 12, PAFT Alg. 2, the RL
baselines), with the token log-probs taken under the logits
``u = softcap(logit_scale · (hidden Wᵀ + b)) / τ`` that :func:`kernels.fused_linear_sequence_loss`
forms one row chunk at a time (docs/kernels.md). The gradient with respect to the hidden
states, the LM-head weight and its bias is finished in the forward pass.

Aligning hidden states and ids for a Hugging Face causal LM: ``hidden[:, t]`` (the last hidden
state, before the LM head) predicts ``input_ids[:, t+1]``, as the logits do: pass
``hidden[:, :-1]`` with ``input_ids[:, 1:]``, or the full hidden states with the labels and
masks of :func:`kernels.shift_for_causal_lm`.
"""

from __future__ import annotations

import torch
from torch import nn

from ._validate import (
    check_positive_int,
    check_q,
    check_reduction,
)
from .estimators import get_estimator
from .logits_loss import (
    LogitsLossInfo,
    _check_loss_scale,
    _CoefficientRule,
    _layout,
    _mean_entropy,
)
from .loss import sequence_loss

__all__ = ["TsallisLinearLoss", "tsallis_linear_loss"]


def tsallis_linear_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    q: float,
    *,
    group_size: int,
    rationale_mask: torch.Tensor,
    answer_mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    estimator: str = "garl_rloo",
    rewards: torch.Tensor | None = None,
    temperature: float = 1.0,
    logit_scale: float = 1.0,
    final_logit_softcapping: float | None = None,
    reduction: str = "mean",
    track_entropy: bool = True,
    return_info: bool = False,
    impl: str = "auto",
    chunk_size: int | None = None,
    loss_scale: float = 1.0,
    **estimator_options,
):
    r"""J_Q loss of G·M sampled sequences from the last hidden states and the LM head.

    The modes, checks and info record are those of :func:`tsallis.tsallis_logits_loss`:
    likelihood mode (``rewards`` None) takes log w_b = log p(y* | x*, z_b), so ``answer_mask``
    is required and every sequence needs an answer token; verifier mode takes ``rewards [B]``
    in [0, 1]. The M samples of each prompt are contiguous (sequence b is in group b // M).

    Args:
        hidden: ``[B, T, H]`` with ``[B, T]`` masks, or packed ``[N, H]`` with ``[N]`` masks and
            ``cu_seqlens [B+1]``; any float dtype.
        weight: ``[V, H]`` LM-head weight (frozen, tied to the embedding, or an FSDP2 DTensor:
            see :func:`kernels.gather_lm_head`).
        token_ids: ids with hidden's leading shape; ignored positions may hold anything.
        q: Tsallis index in [0, 1].
        group_size: M, samples per prompt; B must be a multiple of it.
        rationale_mask, answer_mask: which tokens are rationale z / answer y* (bool or 0/1).
        bias: ``[V]`` LM-head bias or None.
        cu_seqlens: sequence boundaries for packed hidden states.
        estimator: a name of :data:`tsallis.ESTIMATORS`.
        rewards: verifier rewards [B] (verifier mode).
        temperature, logit_scale, final_logit_softcapping: the logit transform, in TRL's order
            (``softcap(scale · z) / τ``).
        reduction: "mean" (sum / G), "sum", or "none" ([B]; then the per-token log-probs are
            differentiable, :func:`kernels.linear_token_logprobs`, and the backward recomputes
            the logits chunk by chunk).
        track_entropy: compute the mean token entropy for the info record.
        return_info: also return a :class:`~tsallis.LogitsLossInfo`.
        impl: "auto" | "triton" | "torch".
        chunk_size: rows per chunk (default: sized from TRL's tile memory, see
            :func:`kernels.linear.chunk_rows`).
        loss_scale: multiplies the loss (e.g. ``1 / gradient_accumulation_steps``), folded into
            the normaliser of the fused pass.
        **estimator_options: passed to the estimator.

    Returns:
        the loss (scalar, or [B] for ``reduction="none"``), and the info when requested.

    Example (likelihood mode, 2 prompts x 2 samples, 3 positions: 2 rationale + 1 answer):
        >>> import torch, tsallis
        >>> g = torch.Generator().manual_seed(0)
        >>> hidden = torch.randn(4, 3, 8, generator=g, requires_grad=True)
        >>> weight = torch.randn(11, 8, generator=g, requires_grad=True)
        >>> ids = torch.randint(0, 11, (4, 3), generator=g)
        >>> rat, ans = torch.tensor([[1, 1, 0]] * 4), torch.tensor([[0, 0, 1]] * 4)
        >>> loss, info = tsallis_linear_loss(hidden, weight, ids, 0.5, group_size=2,
        ...                                  rationale_mask=rat, answer_mask=ans, return_info=True)
        >>> want = tsallis.tsallis_logits_loss(hidden @ weight.T, ids, 0.5, group_size=2,
        ...                                    rationale_mask=rat, answer_mask=ans)
        >>> bool(torch.isclose(loss, want))
        True
        >>> loss.backward(); tuple(weight.grad.shape), info.num_stalled
        ((11, 8), 0)
    """
    from kernels import linear_token_logprobs
    from kernels.linear import fused_linear_sequence_loss, gather_lm_head

    check_reduction(reduction)
    scale = _check_loss_scale(loss_scale)
    if not isinstance(hidden, torch.Tensor) or hidden.dim() not in (2, 3):
        got = tuple(hidden.shape) if isinstance(hidden, torch.Tensor) else type(hidden).__name__
        raise ValueError(f"hidden must be a tensor of shape [B, T, H] or [N, H], got {got}")
    layout = _layout(hidden, rationale_mask, answer_mask, cu_seqlens, what="hidden states")
    rule = _CoefficientRule(layout, q, group_size, estimator, rewards, answer_mask,
                            hidden.device, estimator_options)  # fmt: skip
    M, G = rule.M, rule.G
    weight, bias = gather_lm_head(weight, bias)
    head = {"temperature": temperature, "logit_scale": logit_scale,
            "final_logit_softcapping": final_logit_softcapping}  # fmt: skip
    with_entropy = track_entropy and return_info
    span = layout.span.to(hidden.device)
    if reduction == "none":
        from kernels.ops import _SegSumFn

        tok = linear_token_logprobs(hidden, weight, token_ids, bias=bias, impl=impl,
                                    return_entropy=with_entropy, chunk_size=chunk_size,
                                    **head)  # fmt: skip
        tok, ent = tok if with_entropy else (tok, None)
        tok = tok.reshape(-1)
        logp_z, logp_y = _SegSumFn.apply(tok, span, layout.cu_seqlens.to(hidden.device), "torch")
        coef_z, coef_y = rule(logp_y)
        loss = sequence_loss(logp_z, logp_y, coef_z, coef_y, group_size=M, reduction="none")
        if scale != 1.0:
            loss = loss * scale
        logp_z, logp_y = logp_z.detach(), logp_y.detach()
        entropy = None if ent is None else ent.detach().reshape(-1)
        entropy = None if entropy is None else torch.where(span != 0, entropy, 0.0)
    else:
        res = fused_linear_sequence_loss(
            hidden, weight, token_ids, layout,
            rule.for_kernel(),
            bias=bias, normalizer=(float(G) if reduction == "mean" else 1.0) / scale,
            return_entropy=with_entropy, impl=impl, chunk_size=chunk_size, **head,
        )  # fmt: skip
        loss, logp_z, logp_y, entropy = res.loss, res.logp_z, res.logp_y, res.entropy
    if not return_info:
        return loss
    return loss, LogitsLossInfo(
        logp_z, logp_y, rule.log_w, rule.coefficients, _mean_entropy(entropy, span)
    )


class TsallisLinearLoss(nn.Module):
    r"""Module form of :func:`tsallis_linear_loss` (as :class:`tsallis.TsallisLoss` is of
    :func:`tsallis.tsallis_logits_loss`): stores q, M and the options.

    ``forward(hidden, weight, token_ids, rationale_mask, answer_mask=None, *, bias=None,
    cu_seqlens=None, rewards=None)`` returns the loss; the call's
    :class:`~tsallis.LogitsLossInfo` is kept in ``self.last_info``.

    >>> import torch
    >>> loss_fn = TsallisLinearLoss(q=0.75, group_size=2)
    >>> hidden, weight = torch.zeros(2, 3, 4, requires_grad=True), torch.zeros(5, 4)
    >>> ids = torch.zeros(2, 3, dtype=torch.long)
    >>> loss = loss_fn(hidden, weight, ids, torch.tensor([[1, 1, 0]] * 2),
    ...                torch.tensor([[0, 0, 1]] * 2))
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
        logit_scale: float = 1.0,
        final_logit_softcapping: float | None = None,
        reduction: str = "mean",
        track_entropy: bool = True,
        impl: str = "auto",
        chunk_size: int | None = None,
        **estimator_options,
    ):
        super().__init__()
        self.q = check_q(q)
        get_estimator(estimator)
        self.reduction = check_reduction(reduction)
        self.group_size = check_positive_int(group_size, name="group_size (M)")
        self.estimator = estimator
        self.temperature = float(temperature)
        self.logit_scale = float(logit_scale)
        self.final_logit_softcapping = final_logit_softcapping
        self.track_entropy = bool(track_entropy)
        self.impl = impl
        self.chunk_size = chunk_size
        self.estimator_options = dict(estimator_options)
        self.last_info: LogitsLossInfo | None = None

    def forward(self, hidden, weight, token_ids, rationale_mask, answer_mask=None, *, bias=None,
                cu_seqlens=None, rewards=None):  # fmt: skip
        loss, info = tsallis_linear_loss(
            hidden, weight, token_ids, self.q, group_size=self.group_size,
            rationale_mask=rationale_mask, answer_mask=answer_mask, bias=bias,
            cu_seqlens=cu_seqlens, estimator=self.estimator, rewards=rewards,
            temperature=self.temperature, logit_scale=self.logit_scale,
            final_logit_softcapping=self.final_logit_softcapping, reduction=self.reduction,
            track_entropy=self.track_entropy, return_info=True, impl=self.impl,
            chunk_size=self.chunk_size, **self.estimator_options,
        )  # fmt: skip
        self.last_info = info
        return loss

    def extra_repr(self) -> str:
        return (
            f"q={self.q}, group_size={self.group_size}, estimator={self.estimator!r}, "
            f"temperature={self.temperature}, logit_scale={self.logit_scale}, "
            f"final_logit_softcapping={self.final_logit_softcapping}"
        )
