"""tsallis-continuum: the Tsallis loss continuum J_Q for training reasoning models.

Reference implementation of Lin & Ie (2026), arXiv 2604.25907:
J_Q = E[-log_q P] interpolates between RLVR (q = 0) and the log marginal likelihood over latent
rationales (q = 1); every member has the gradient direction of RLVR, amplified by P^(-q).

Submodules: :mod:`tsallis.qlog` (the q-log family), :mod:`tsallis.theory` (closed-form theory),
:mod:`tsallis.estimators` (GARL, GARL-RLOO, PAFT and RL baselines as per-sequence coefficients),
:mod:`tsallis.loss` (the surrogate loss on per-sequence log-probs) and :mod:`tsallis.logits_loss`
(the same loss straight from LLM logits, through the fused kernels of the ``kernels`` package)
and :mod:`tsallis.linear_loss` (from the hidden states and the LM head, never building logits).
"""

from . import estimators, theory
from .estimators import ESTIMATORS, Coefficients, get_estimator, rewards_to_log_w
from .linear_loss import TsallisLinearLoss, tsallis_linear_loss
from .logits_loss import LogitsLossInfo, TsallisLoss, shift_for_causal_lm, tsallis_logits_loss
from .loss import LossInfo, TsallisSequenceLoss, sequence_loss, tsallis_sequence_loss
from .qlog import amplification, exp_q, log_q, loss_q

__version__ = "0.1.0"

__all__ = [
    "ESTIMATORS",
    "Coefficients",
    "LogitsLossInfo",
    "LossInfo",
    "TsallisLinearLoss",
    "TsallisLoss",
    "TsallisSequenceLoss",
    "__version__",
    "amplification",
    "estimators",
    "exp_q",
    "get_estimator",
    "log_q",
    "loss_q",
    "rewards_to_log_w",
    "sequence_loss",
    "shift_for_causal_lm",
    "theory",
    "tsallis_linear_loss",
    "tsallis_logits_loss",
    "tsallis_sequence_loss",
]
