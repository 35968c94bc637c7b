"""Which logits row belongs to which sequence and span, and input validation.

A batch of ``B`` sequences is laid out as ``N`` logits rows (``[N, V]``, or ``[B, T, V]`` read
row-major as ``N = B*T`` rows). :class:`TokenLayout` says, for every row, which sequence it
belongs to (``cu_seqlens``, packed-varlen style: sequence ``b`` owns rows
``cu_seqlens[b]:cu_seqlens[b+1]``) and which span it is in (``span``: :data:`IGNORED`,
:data:`RATIONALE` z or :data:`ANSWER` y*). Padded ``[B, T]`` masks are the special case
``cu_seqlens = arange(B+1)*T``.

Per-sequence sums are taken over each sequence's own rows in a fixed order that starts at the
sequence's first row, so they do not depend on what else is in the batch (kernels/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: span codes of a logits row: not scored (padding, prompt, last position), rationale z, answer y*
IGNORED, RATIONALE, ANSWER = 0, 1, 2

__all__ = [
    "ANSWER",
    "IGNORED",
    "RATIONALE",
    "TokenLayout",
    "check_logits",
    "check_token_ids",
    "shift_for_causal_lm",
]


def check_logits(logits: torch.Tensor) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``logits`` is float ``[N, V]`` or ``[B, T, V]``."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(
            "logits must be a floating-point tensor (bf16/fp16/fp32/fp64), got dtype "
            f"{logits.dtype}"
        )
    if logits.dim() not in (2, 3):
        raise ValueError(
            f"logits must have shape [N, V] or [B, T, V], got shape {tuple(logits.shape)}"
        )
    if logits.shape[-1] < 1:
        raise ValueError(f"logits need a vocabulary of at least 1, got shape {tuple(logits.shape)}")


def check_token_ids(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    active: torch.Tensor | None = None,
    *,
    check_range: bool = True,
) -> None:
    """Check ``token_ids`` has the logits' leading shape, an integer dtype and values in [0, V).

    Only positions where ``active`` is true are range-checked (ignored positions may hold any
    id, e.g. Hugging Face's -100). The range check reads the ids on the host (one device sync
    for CUDA tensors); ``check_range=False`` checks only shape, dtype and device.
    """
    if not isinstance(token_ids, torch.Tensor):
        raise TypeError(f"token_ids must be a torch.Tensor, got {type(token_ids).__name__}")
    if token_ids.is_floating_point() or token_ids.is_complex() or token_ids.dtype == torch.bool:
        raise TypeError(f"token_ids must be an integer tensor, got dtype {token_ids.dtype}")
    if tuple(token_ids.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"token_ids must have the logits' leading shape {tuple(logits.shape[:-1])}, "
            f"got {tuple(token_ids.shape)} (logits shape {tuple(logits.shape)})"
        )
    if token_ids.device != logits.device:
        raise ValueError(f"token_ids are on {token_ids.device} but logits are on {logits.device}")
    if not check_range:
        return
    V = logits.shape[-1]
    ids = token_ids.reshape(-1)
    bad = (ids < 0) | (ids >= V)
    if active is not None:
        bad = bad & active.reshape(-1)
    if ids.numel() and bool(bad.any()):
        idx = int(torch.nonzero(bad)[0, 0])
        raise ValueError(
            f"token ids must lie in [0, V) = [0, {V}); found {int(ids[idx])} at flat position "
            f"{idx} ({int(bad.sum())} out-of-range ids in total)"
        )


def _as_bool_mask(mask: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype == torch.bool:
        return mask
    if mask.is_floating_point():
        ok = bool(((mask == 0) | (mask == 1)).all()) if mask.numel() else True
        if not ok:
            raise ValueError(f"{name} must hold only 0 and 1, got other values")
    return mask != 0


@dataclass(frozen=True)
class TokenLayout:
    """Sequence boundaries and span codes of the ``N`` logits rows.

    Attributes:
        cu_seqlens: ``[B+1]`` int64, ``cu_seqlens[0] = 0``, ``cu_seqlens[-1] = N``, non-decreasing.
        span: ``[N]`` int8 codes :data:`IGNORED` (padding, prompt, last position),
            :data:`RATIONALE` (z) or :data:`ANSWER` (y*).

    Example:
        >>> import torch
        >>> lay = TokenLayout.from_masks(torch.tensor([[1, 1, 0, 0]]), torch.tensor([[0, 0, 1, 0]]))
        >>> lay.span.tolist(), lay.cu_seqlens.tolist()
        ([1, 1, 2, 0], [0, 4])
    """

    cu_seqlens: torch.Tensor
    span: torch.Tensor

    @property
    def num_sequences(self) -> int:
        return self.cu_seqlens.numel() - 1

    @property
    def num_tokens(self) -> int:
        return self.span.numel()

    def seq_index(self) -> torch.Tensor:
        """``[N]`` int64: the sequence each row belongs to."""
        lengths = self.cu_seqlens[1:] - self.cu_seqlens[:-1]
        return torch.repeat_interleave(
            torch.arange(self.num_sequences, device=self.span.device),
            lengths,
            output_size=self.num_tokens,
        )

    @staticmethod
    def from_masks(
        rationale_mask: torch.Tensor, answer_mask: torch.Tensor | None = None
    ) -> TokenLayout:
        """Padded layout: masks of shape ``[B, T]`` (bool or 0/1), one row of logits per position.

        A position in neither mask is ignored; a position in both is an error.
        """
        rat = _as_bool_mask(rationale_mask, "rationale_mask")
        if rat.dim() != 2:
            raise ValueError(f"rationale_mask must have shape [B, T], got {tuple(rat.shape)}")
        ans = None
        if answer_mask is not None:
            ans = _as_bool_mask(answer_mask, "answer_mask")
            if ans.shape != rat.shape:
                raise ValueError(
                    f"answer_mask shape {tuple(ans.shape)} differs from rationale_mask shape "
                    f"{tuple(rat.shape)}"
                )
        B, T = rat.shape
        cu = torch.arange(B + 1, device=rat.device, dtype=torch.int64) * T
        return TokenLayout._build(cu, rat.reshape(-1), None if ans is None else ans.reshape(-1))

    @staticmethod
    def from_varlen(
        cu_seqlens: torch.Tensor,
        rationale_mask: torch.Tensor,
        answer_mask: torch.Tensor | None = None,
    ) -> TokenLayout:
        """Packed layout: ``cu_seqlens [B+1]`` over ``N`` rows, masks of shape ``[N]``."""
        if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1:
            raise ValueError("cu_seqlens must be a 1-D integer tensor [B+1]")
        if cu_seqlens.is_floating_point() or cu_seqlens.numel() < 2:
            raise ValueError(
                f"cu_seqlens must be an integer tensor with at least 2 entries, got dtype "
                f"{cu_seqlens.dtype} and shape {tuple(cu_seqlens.shape)}"
            )
        rat = _as_bool_mask(rationale_mask, "rationale_mask").reshape(-1)
        ans = None
        if answer_mask is not None:
            ans = _as_bool_mask(answer_mask, "answer_mask").reshape(-1)
            if ans.shape != rat.shape:
                raise ValueError(
                    f"answer_mask has {ans.numel()} entries, rationale_mask {rat.numel()}"
                )
        cu = cu_seqlens.to(device=rat.device, dtype=torch.int64)
        if int(cu[0]) != 0 or int(cu[-1]) != rat.numel() or bool((cu[1:] < cu[:-1]).any()):
            raise ValueError(
                f"cu_seqlens must start at 0, be non-decreasing and end at N = {rat.numel()} "
                f"(the number of rows); got {cu.tolist() if cu.numel() <= 16 else '...'}"
            )
        return TokenLayout._build(cu, rat, ans)

    @staticmethod
    def _build(cu: torch.Tensor, rat: torch.Tensor, ans: torch.Tensor | None) -> TokenLayout:
        code = torch.full(rat.shape, IGNORED, dtype=torch.int8, device=rat.device)
        span = torch.where(rat, torch.tensor(RATIONALE, dtype=torch.int8), code)
        if ans is not None:
            if bool((rat & ans).any()):
                raise ValueError("a token is marked as both rationale and answer")
            span = torch.where(ans, torch.tensor(ANSWER, dtype=torch.int8), span)
        return TokenLayout(cu_seqlens=cu, span=span.contiguous())

    def check_against(self, num_rows: int) -> None:
        if self.num_tokens != num_rows:
            raise ValueError(
                f"the layout describes {self.num_tokens} tokens but the logits have {num_rows} rows"
            )


def shift_for_causal_lm(input_ids: torch.Tensor, *masks: torch.Tensor | None):
    """Align ``input_ids`` (and per-position masks) with a causal LM's full logits.

    A Hugging Face causal LM returns ``logits [B, T, V]`` where ``logits[:, t]`` predicts token
    ``input_ids[:, t+1]``. This returns ``labels[:, t] = input_ids[:, t+1]`` and each mask
    shifted the same way, with the last position (which predicts nothing) set to id 0 and masked
    out. Passing the *full* logits with these labels avoids slicing ``logits[:, :-1]`` (whose
    gradient autograd would copy into a fresh full-size buffer).

    Example:
        >>> import torch
        >>> ids = torch.tensor([[5, 6, 7, 8]])
        >>> lab, m = shift_for_causal_lm(ids, torch.tensor([[0, 1, 1, 1]]))
        >>> lab.tolist(), m.tolist()
        ([[6, 7, 8, 0]], [[True, True, True, False]])
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape [B, T], got {tuple(input_ids.shape)}")
    labels = torch.zeros_like(input_ids)
    labels[:, :-1] = input_ids[:, 1:]
    out = [labels]
    for i, m in enumerate(masks):
        if m is None:
            out.append(None)
            continue
        mb = _as_bool_mask(m, f"mask {i}")
        if mb.shape != input_ids.shape:
            raise ValueError(
                f"mask {i} has shape {tuple(mb.shape)}, input_ids {tuple(input_ids.shape)}"
            )
        s = torch.zeros_like(mb)
        s[:, :-1] = mb[:, 1:]
        out.append(s)
    return tuple(out)
