"""Token-level work on LLM logits: per-token / per-sequence log-probs, entropy, and the fused
weighted-log-likelihood loss whose gradient is written in the same pass (design, bytes moved
and the variants: kernels/README.md).

This package never imports ``tsallis``: the coefficient rule of an estimator comes in as
tensors or as a callable (see :func:`fused_sequence_loss`). Layout: :mod:`.layout` (which row
is which), :mod:`.ops` (the public autograd ops on logits), :mod:`.linear` (the same from hidden
states and the LM head, never building the logits), :mod:`.reference` (plain torch: the CPU path
and the float64 oracle), :mod:`.triton` (the Triton kernels, imported lazily),
:mod:`.dispatch` (which fused variant runs by default), :mod:`.testing` (test helpers).
"""

from .dispatch import FUSED_VARIANTS, choose_variant
from .layout import (
    ANSWER,
    IGNORED,
    RATIONALE,
    TokenLayout,
    check_logits,
    check_token_ids,
    shift_for_causal_lm,
)
from .linear import (
    FusedLinearLoss,
    fused_linear_sequence_loss,
    gather_lm_head,
    linear_token_logprobs,
)
from .ops import (
    FusedLoss,
    SequenceLogprobs,
    fused_sequence_loss,
    resolve_impl,
    sequence_logprobs,
    token_logprobs,
    triton_available,
)
from .reference import backward_rows as reference_backward_rows
from .reference import forward_rows as reference_forward_rows
from .reference import naive_logp_entropy
from .reference import segment_sums as reference_segment_sums

__all__ = [
    "ANSWER",
    "FUSED_VARIANTS",
    "FusedLinearLoss",
    "FusedLoss",
    "IGNORED",
    "RATIONALE",
    "SequenceLogprobs",
    "TokenLayout",
    "check_logits",
    "check_token_ids",
    "choose_variant",
    "fused_linear_sequence_loss",
    "fused_sequence_loss",
    "gather_lm_head",
    "linear_token_logprobs",
    "naive_logp_entropy",
    "reference_backward_rows",
    "reference_forward_rows",
    "reference_segment_sums",
    "resolve_impl",
    "sequence_logprobs",
    "shift_for_causal_lm",
    "token_logprobs",
    "triton_available",
]
