"""Token-level work on LLM logits: per-token / per-sequence log-probs, entropy, and the fused
weighted-log-likelihood loss whose gradient is written in the same pass (see kernel.md).

This package never imports ``tsallis``: the coefficient rule of an estimator comes in as
tensors or as a callable (see :func:`fused_sequence_loss`).
"""

from .layout import (
    ANSWER,
    IGNORED,
    RATIONALE,
    TokenLayout,
    check_logits,
    check_token_ids,
    shift_for_causal_lm,
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
from .reference import segment_sums as reference_segment_sums

__all__ = [
    "ANSWER",
    "FusedLoss",
    "IGNORED",
    "RATIONALE",
    "SequenceLogprobs",
    "TokenLayout",
    "check_logits",
    "check_token_ids",
    "fused_sequence_loss",
    "reference_backward_rows",
    "reference_forward_rows",
    "reference_segment_sums",
    "resolve_impl",
    "sequence_logprobs",
    "shift_for_causal_lm",
    "token_logprobs",
    "triton_available",
]
