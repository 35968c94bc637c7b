"""The tensors of a workload, built once and shared by every case of that workload.

Logits workloads (:class:`Data`): ``[B, T + 1, V]`` logits as a causal LM's shifted logits (the
last position ignored), the last ``masked_tail`` tokens of each sequence ignored, the
``answer_len`` tokens before them the answer span, the rest rationale. Hidden-state workloads
(:class:`LinearData`): ``hidden [B * T, H]`` and an LM head ``weight [V, H]`` with the same
spans over ``[B, T]``.

The loss is GRPO's on-policy loss with per-sequence coefficients ``c_b = advantage_b / n_b``
(``n_b`` scored tokens) and normaliser ``B``: what Liger's ``triton_grpo_loss`` and
``LigerFusedLinearGRPOLoss`` (beta 0, ``loss_type="grpo"``) compute, so every implementation of
a case computes the same loss and gradient. Likelihood mode replaces the constant coefficients
with :func:`make_rule` of the answer log-probs.
"""

from __future__ import annotations

from dataclasses import dataclass

from .registry import LinearWorkload, Workload


@dataclass
class Data:
    """Tensors of one logits workload."""

    w: Workload
    logits: object  # [B, T+1, V] leaf, requires grad
    ids: object  # [B, T+1] int64 (the last position and the masked tail hold random ids)
    rat: object  # [B, T+1] bool
    ans: object  # [B, T+1] bool
    active: object  # [B, T+1] bool
    layout: object
    c: object  # [B] fp32 per-sequence coefficient (GRPO: advantage / scored tokens)
    adv: object  # [B] fp32 advantages (Liger)
    norm: float  # normaliser (B: the mean over sequences)
    scratch: object = None  # [B, T+1, V] leaf for in-place cases

    @property
    def logits_bytes(self) -> int:
        return self.logits.numel() * self.logits.element_size()


def _spans(B: int, T: int, masked_tail: int, answer_len: int, dev):
    """(active, answer, rationale) masks ``[B, T]``: the tail ignored, the answer before it."""
    import torch

    t = torch.arange(T, device=dev)
    end = T - masked_tail
    active = (t < end).expand(B, -1).contiguous()
    ans = ((t >= end - answer_len) & (t < end)).expand(B, -1).contiguous()
    return active, ans, active & ~ans


def _grpo_coefficients(active, dev):
    """(advantages [B], c_b = advantage_b / n_b): GRPO's per-sequence token weight."""
    import torch

    B = active.shape[0]
    adv = torch.linspace(-1.0, 1.0, B, device=dev) + 0.05
    return adv, adv / active.sum(1).clamp(min=1).float()


def make_data(w: Workload, dev) -> Data:
    import torch

    from kernels import TokenLayout

    dtype = getattr(torch, w.dtype)
    g = torch.Generator(device=dev).manual_seed(1000 + w.V)
    logits = torch.empty(w.B, w.T + 1, w.V, dtype=dtype, device=dev)
    logits.normal_(0.0, 2.0, generator=g)
    ids = torch.randint(0, w.V, (w.B, w.T + 1), generator=g, device=dev)
    # T + 1 positions with masked_tail + 1 ignored: the shifted logits' last row is ignored
    active, ans, rat = _spans(w.B, w.T + 1, w.masked_tail + 1, w.answer_len, dev)
    layout = TokenLayout.from_masks(rat, ans)
    adv, c = _grpo_coefficients(active, dev)
    return Data(w, logits.requires_grad_(True), ids, rat, ans, active, layout, c, adv, float(w.B))


@dataclass
class LinearData:
    """Tensors of one hidden-state workload (rows ``b * T + t``)."""

    w: LinearWorkload
    hidden: object  # [B*T, H] leaf, requires grad
    weight: object  # [V, H] leaf, requires grad
    ids: object  # [B*T] int64
    rat: object  # [B, T] bool
    ans: object  # [B, T] bool
    active: object  # [B, T] bool
    layout: object
    c: object  # [B] fp32
    adv: object  # [B] fp32
    norm: float

    @property
    def coef_tok(self):
        """``[B*T]`` fp32: each token's coefficient (0 on ignored rows)."""
        return (self.c[:, None] * self.active).reshape(-1).float()

    @property
    def logits_bytes(self) -> int:
        """Bytes of the ``[B*T, V]`` logits a logits-path loss would materialise (the
        hidden-state losses never hold them): the unit of their peak extra memory."""
        return self.hidden.shape[0] * self.weight.shape[0] * self.hidden.element_size()


def make_linear_data(w: LinearWorkload, dev) -> LinearData:
    """Hidden states ~ N(0, 1) and an LM head ~ N(0, 2 / H) in ``w.dtype``: logits of standard
    deviation about 1.4, the regime of a trained model's LM head."""
    import torch

    from kernels import TokenLayout

    dtype = getattr(torch, w.dtype)
    g = torch.Generator(device=dev).manual_seed(2000 + w.H)
    hidden = torch.randn(w.B * w.T, w.H, generator=g, device=dev).to(dtype)
    weight = (torch.randn(w.V, w.H, generator=g, device=dev) * (2.0 / w.H) ** 0.5).to(dtype)
    ids = torch.randint(0, w.V, (w.B * w.T,), generator=g, device=dev)
    active, ans, rat = _spans(w.B, w.T, w.masked_tail, w.answer_len, dev)
    layout = TokenLayout.from_masks(rat, ans)
    adv, c = _grpo_coefficients(active, dev)
    return LinearData(w, hidden.requires_grad_(True), weight.requires_grad_(True), ids, rat, ans,
                      active, layout, c, adv, float(w.B))  # fmt: skip


def make_rule(c, answer_len: int):
    """Likelihood-mode coefficient rule of the answer log-probs y: smooth, O(1) in y,
    ``(c (1 + tanh(y / s) / 4), c (1 - tanh(y / s) / 4))`` with ``s = 16 * answer_len``."""
    import torch

    s = 16.0 * max(answer_len, 1)

    def rule(y):
        t = torch.tanh(y.float() / s)
        return c * (1 + 0.25 * t), c * (1 - 0.25 * t)

    return rule


def sub_layout(d: Data, b0: int, b1: int):
    from kernels import TokenLayout

    return TokenLayout.from_masks(d.rat[b0:b1], d.ans[b0:b1])
