"""Token log-probs and the fused J_Q loss from hidden states: the LM head inside the loss.

The logits of an LM head are ``u = softcap(logit_scale * (h W^T + b)) / tau`` with
``softcap(x) = c tanh(x / c)`` (applied only when ``final_logit_softcapping = c`` is given), the
order of TRL's ``ChunkedLogProbFunction``. Everything else is the logits path of
:mod:`kernels.ops` (kernels/README.md, docs/kernels.md): per token ``logp_t = u_t[id_t] -
logsumexp(u_t)`` (and the entropy), per sequence the span sums ``logp_z[b]``, ``logp_y[b]``, and
the loss ``L = -sum_b (a_b logp_z[b] + b_b logp_y[b]) / normaliser`` with detached
coefficients. The difference is that the ``[N, V]`` logits never exist: the scored rows are
visited in row chunks of one fixed shape ``[C, V]``,

    Z_c = H_c W^T (+ b),   u_c = transform(Z_c),   (lse, logp, entropy) of u_c,
    G_c = dL/dZ_c = -coef (onehot - softmax(u_c)) * transform'(Z_c) / normaliser   (in place)
    dH_c = G_c W,          dW += G_c^T H_c,        db += sum_rows G_c

so the gradient is finished in the forward pass: 6 N H V flops (peers that recompute the
logits in the backward spend 8), the chunks in a fixed order (deterministic, no atomics).
Only the rows that are scored (rationale and answer) are multiplied; ignored rows (prompt,
padding) cost nothing and get a zero gradient. In likelihood mode the coefficients depend on
the answer log-probs: the (short) answer rows are scored first in a forward-only pass, the
coefficient rule runs, then the pass above covers every scored row.

Chunk shape: ``C`` rows from a byte budget, never from a fixed row count: the per-chunk work
buffers together hold at most half as many elements as one tile of TRL's chunked head at the
same number of rows (``min(N, 4096) x 32768``), so this head never needs more working memory
than the one it replaces (:func:`chunk_rows`). The last chunk is padded with zero rows to the same
``C``: every GEMM of a call has one shape (BLAS libraries choose code paths by the row count,
and on CPU a product of fewer than 64 rows rounds differently), so a row's results do not
depend on where in the chunk it lands. A fixed ``chunk_size`` makes per-row results bitwise
independent of the batch; the default ``C`` follows ``N`` (to stay within TRL's memory at
small ``N``), so across batches of different sizes they agree to rounding only.

Backends: ``impl="torch"`` (CPU default) computes the row statistics and the gradient of each
chunk with in-place torch ops; ``impl="triton"`` (CUDA default) hands each chunk to the fused
Triton kernel of the logits path (``kernels.triton.fused_rows``, in place: the chunk's logits
become its gradient in the same visit that computes the log-sum-exp). The GEMMs are torch
(cuBLAS / the CPU BLAS) in both.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .layout import ANSWER, IGNORED, TokenLayout
from .ops import (
    _as_coefs,
    _backend,
    _check_temperature,
    _on,
    _per_token,
    _weighted_sum,
    resolve_impl,
)
from .reference import acc_dtype, segment_sums

__all__ = [
    "FusedLinearLoss",
    "TRL_TILE",
    "chunk_rows",
    "fused_linear_sequence_loss",
    "gather_lm_head",
    "linear_token_logprobs",
]

#: (rows, columns) of one tile of TRL's ``ChunkedLogProbFunction`` (trl.kernels.chunked_logprob:
#: ``TOKEN_CHUNK_SIZE`` and the trainer's vocabulary chunk): the memory yardstick of the chunks
TRL_TILE = (4096, 32768)
#: the chunk work buffers hold at most 1 / WORK_FRACTION of one TRL tile (:func:`chunk_rows`)
WORK_FRACTION = 2


# --------------------------------------------------------------------------------------------
# input checks and the LM head's weight
# --------------------------------------------------------------------------------------------
def gather_lm_head(weight: torch.Tensor, bias: torch.Tensor | None = None):
    """``(weight, bias)`` as full local tensors, the way TRL hands an LM head to its kernel.

    An FSDP2 ``DTensor`` is gathered with ``full_tensor()`` (differentiable: its backward
    reduce-scatters the gradient, one all-gather per call however many chunks use it). A
    DeepSpeed ZeRO-3 parameter that is still partitioned (it has ``ds_id``; its local tensor
    is empty or its ``ds_status`` is not ``AVAILABLE``) cannot be gathered here without its
    engine's hooks: a ``ValueError`` says how to gather it first.
    """
    out = []
    for name, p in (("weight", weight), ("bias", bias)):
        if p is None:
            out.append(None)
            continue
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"LM-head {name} must be a torch.Tensor, got {type(p).__name__}")
        if hasattr(p, "ds_id"):
            status = getattr(getattr(p, "ds_status", None), "name", None)
            if p.numel() == 0 or status not in (None, "AVAILABLE"):
                raise ValueError(
                    f"the LM-head {name} is a DeepSpeed ZeRO-3 partitioned parameter (ds_id "
                    f"{p.ds_id}, status {status}, local shape {tuple(p.shape)}); gather it "
                    "around the loss call, e.g. `with deepspeed.zero.GatheredParameters("
                    "[lm_head.weight, lm_head.bias]):` (TRL: trl.trainer.utils."
                    "maybe_gather_lm_head_ctx), inside the model's forward so that ZeRO-3 "
                    "reduces the gradient"
                )
        full = getattr(p, "full_tensor", None)
        if full is not None and type(p).__name__ == "DTensor":
            p = full()
        out.append(p)
    return out[0], out[1]


def _check_head(hidden, weight, bias):
    if not isinstance(hidden, torch.Tensor):
        raise TypeError(f"hidden must be a torch.Tensor, got {type(hidden).__name__}")
    if not hidden.is_floating_point():
        raise TypeError(f"hidden must be a floating-point tensor, got dtype {hidden.dtype}")
    if hidden.dim() not in (2, 3):
        raise ValueError(f"hidden must have shape [N, H] or [B, T, H], got {tuple(hidden.shape)}")
    if not weight.is_floating_point():
        raise TypeError(f"weight must be a floating-point tensor, got dtype {weight.dtype}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1] or weight.shape[0] < 1:
        raise ValueError(
            f"weight must have shape [V, H] = [V, {hidden.shape[-1]}] with V >= 1 (hidden has "
            f"shape {tuple(hidden.shape)}), got {tuple(weight.shape)}"
        )
    if weight.device != hidden.device:
        raise ValueError(f"weight is on {weight.device} but hidden is on {hidden.device}")
    if bias is not None:
        if tuple(bias.shape) != (weight.shape[0],) or not bias.is_floating_point():
            raise ValueError(
                f"bias must be a float tensor of shape [V] = [{weight.shape[0]}], got "
                f"{tuple(bias.shape)} {bias.dtype}"
            )
        if bias.device != hidden.device:
            raise ValueError(f"bias is on {bias.device} but hidden is on {hidden.device}")


class _Head(NamedTuple):
    """The logit transform ``u = softcap(scale * z) / tau``."""

    scale: float
    softcap: float | None
    inv_temp: float


def _check_transform(temperature, logit_scale, final_logit_softcapping) -> _Head:
    inv_temp = _check_temperature(temperature)
    scale = float(logit_scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"logit_scale must be a finite positive number, got {logit_scale!r}")
    cap = final_logit_softcapping
    if cap is not None:
        cap = float(cap)
        if not (math.isfinite(cap) and cap > 0):
            raise ValueError(
                f"final_logit_softcapping must be None or a finite positive number, got "
                f"{final_logit_softcapping!r}"
            )
    return _Head(scale, cap, inv_temp)


def chunk_rows(num_rows: int, V: int, buffers: int = 2, chunk_size: int | None = None) -> int:
    """Rows ``C`` of one chunk: ``chunk_size`` when given, else the most rows whose ``buffers``
    work buffers of ``[C, V]`` hold no more elements than half of one TRL tile at ``num_rows``
    rows, ``min(num_rows, 4096) * 32768 / 2`` (:data:`TRL_TILE`; TRL's own temporaries come on
    top of its tile, so this head stays well below it); at least 1, at most ``num_rows``.
    At V = 151936 and N >= 2048 rows that is C = 110 (GEMMs with 110-row operands: the
    ``dW += G^T H`` update still runs near the BLAS peak).

    >>> chunk_rows(2048, 151936), chunk_rows(512, 151936, buffers=1), chunk_rows(3, 151936)
    (110, 55, 1)
    """
    if chunk_size is not None:
        c = int(chunk_size)
        if c < 1 or c != chunk_size:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        return c
    budget = min(int(num_rows), TRL_TILE[0]) * TRL_TILE[1] // WORK_FRACTION
    return max(1, min(int(num_rows), budget // (max(1, buffers) * int(V))))


# --------------------------------------------------------------------------------------------
# one chunk: logits, transform, row statistics, gradient
# --------------------------------------------------------------------------------------------
def _mm_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``out = a @ b`` (``out`` may have a wider dtype than ``a``, ``b``)."""
    if a.dtype == out.dtype and b.dtype == out.dtype:
        return torch.mm(a, b, out=out)
    return out.copy_(torch.mm(a, b))


def _addmm_acc(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b`` in ``acc``'s (wider) dtype, without rounding ``a @ b`` first."""
    if a.dtype == acc.dtype and b.dtype == acc.dtype:
        acc.addmm_(a, b)
    elif acc.device.type == "cuda" and a.dtype in (torch.float16, torch.bfloat16):
        torch.addmm(acc, a, b, out_dtype=acc.dtype, out=acc)
    else:
        acc.addmm_(a.to(acc.dtype), b.to(acc.dtype))


class _Chunks:
    """The scored rows, cut into chunks of ``C`` rows (the last padded with zero rows)."""

    def __init__(self, h2, rows, C, acc, with_softcap, V, with_work=True):
        self.h2, self.rows, self.C = h2, rows, C
        self.hbuf = h2.new_zeros((C, h2.shape[1]))
        self.z = torch.empty((C, V), dtype=acc, device=h2.device)
        self.work = torch.empty((C, V), dtype=acc, device=h2.device) if with_work else None
        self.tanh = torch.empty((C, V), dtype=acc, device=h2.device) if with_softcap else None

    def __iter__(self):
        n_all = self.rows.numel()
        for c0 in range(0, n_all, self.C):
            idx = self.rows[c0 : c0 + self.C]
            n = idx.numel()
            torch.index_select(self.h2, 0, idx, out=self.hbuf[:n])
            if n < self.C:
                self.hbuf[n:].zero_()
            yield c0, idx, n


def _logits_(ch: _Chunks, weight, bias, head: _Head):
    """``ch.z = softcap(scale (H_c W^T + b))`` (``/ tau`` is left to the row pass); with a
    softcap, ``ch.tanh`` keeps ``tanh(.)`` for the chain rule."""
    z = _mm_into(ch.z, ch.hbuf, weight.t())
    if bias is not None:
        z.add_(bias.to(z.dtype))
    if head.softcap is not None:
        z.mul_(head.scale / head.softcap)
        torch.tanh(z, out=ch.tanh)
        z.copy_(ch.tanh).mul_(head.softcap)
    elif head.scale != 1.0:
        z.mul_(head.scale)
    return z


def _torch_rows_(z, ids, g, inv_temp, with_entropy, work):
    """Row statistics of ``u = z * inv_temp`` and, when ``g`` is given, ``z <- g (onehot - p)
    * inv_temp`` in place (rows with ``g = 0`` exactly 0). Shift invariant (kernels.reference).

    Returns ``(logp, m, log_s, entropy or None)``.
    """
    from .reference import shifted_row_stats_

    if inv_temp != 1.0:
        z.mul_(inv_temp)
    logp, m, log_s, ent = shifted_row_stats_(z, ids, with_entropy, work)
    if g is not None:
        gc = g[:, None].to(z.dtype)
        z.sub_(log_s[:, None]).exp_().mul_(-gc)  # -g p
        z.scatter_add_(1, ids[:, None], gc)
        if inv_temp != 1.0:
            z.mul_(inv_temp)
        z.masked_fill_(gc == 0, 0.0)  # padding / zero-coefficient rows: exactly 0, never NaN
    return logp, m, log_s, ent


def _chain_softcap_(z, ch: _Chunks, head: _Head):
    """``dL/dZ = dL/du_pre * scale * (1 - tanh^2)`` (``u_pre = c tanh(scale Z / c)``)."""
    if head.softcap is not None:
        t = ch.tanh
        z.mul_(t.mul_(t).neg_().add_(1.0)).mul_(head.scale)
    elif head.scale != 1.0:
        z.mul_(head.scale)


def _triton_rows_(z, ids, span, g, inv_temp, with_entropy, variant):
    """The logits path's fused Triton kernel on one chunk, in place (``g`` None: forward only)."""
    kt = _backend("triton")
    z3 = z.unsqueeze(0)
    if g is None:
        logp, _, ent = kt.forward_rows(z3, ids, inv_temp, with_entropy, span, kt.SELECT_ACTIVE)
        return logp, ent
    logp, ent, _ = kt.fused_rows(z3, ids, span, g, inv_temp, with_entropy, z3, variant=variant)
    return logp, ent


# --------------------------------------------------------------------------------------------
# the fused loss
# --------------------------------------------------------------------------------------------
class FusedLinearLoss(NamedTuple):
    """Output of :func:`fused_linear_sequence_loss` (all but ``loss`` detached)."""

    loss: torch.Tensor  # scalar, differentiable w.r.t. hidden, weight, bias
    logp_z: torch.Tensor  # [B]
    logp_y: torch.Tensor  # [B]
    coef_z: torch.Tensor  # [B]
    coef_y: torch.Tensor  # [B]
    token_logp: torch.Tensor  # [N] (0 at ignored rows)
    entropy: torch.Tensor | None  # [N] (0 at ignored rows), when asked for


def _scored_pass(h2, weight, bias, ids, span, rows, g_tok, head, C, acc, impl, with_entropy,
                 variant, need):  # fmt: skip
    """Visit ``rows`` in chunks; returns per-row ``(logp [n], entropy [n] or None)`` and, when
    ``g_tok`` is given, the gradients ``(dH [N, H] acc, dW [V, H] acc or None, db or None)``."""
    V, H = weight.shape
    dev = h2.device
    n_rows = rows.numel()
    logp = torch.zeros(n_rows, dtype=acc, device=dev)
    ent = torch.zeros(n_rows, dtype=acc, device=dev) if with_entropy else None
    grads = None
    if g_tok is not None:
        need_h, need_w, need_b = need
        grads = (
            torch.zeros(h2.shape, dtype=acc, device=dev) if need_h else None,
            torch.zeros((V, H), dtype=acc, device=dev) if need_w else None,
            torch.zeros(V, dtype=acc, device=dev) if need_b else None,
        )
    if n_rows == 0:
        return logp, ent, grads
    ch = _Chunks(h2, rows, C, acc, head.softcap is not None, V, with_work=impl == "torch")
    ids_buf = torch.zeros(C, dtype=torch.int64, device=dev)
    g_buf = torch.zeros(C, dtype=acc, device=dev)
    span_buf = torch.full((C,), IGNORED, dtype=torch.int8, device=dev)
    for c0, idx, n in ch:
        ids_buf.zero_()
        ids_buf[:n] = ids[idx]
        z = _logits_(ch, weight, bias, head)
        g = None
        if g_tok is not None:
            g_buf.zero_()
            g_buf[:n] = g_tok[idx]
            g = g_buf
        if impl == "triton":
            span_buf.fill_(IGNORED)
            span_buf[:n] = span[idx]
            c_lp, c_ent = _triton_rows_(z, ids_buf, span_buf, g, head.inv_temp, with_entropy,
                                        variant)  # fmt: skip
        else:
            c_lp, _, _, c_ent = _torch_rows_(z, ids_buf, g, head.inv_temp, with_entropy,
                                             ch.work)  # fmt: skip
        logp[c0 : c0 + n] = c_lp[:n].to(acc)
        if with_entropy:
            ent[c0 : c0 + n] = c_ent[:n].to(acc)
        if g is None:
            continue
        _chain_softcap_(z, ch, head)
        d_h, d_w, d_b = grads
        gz = z if z.dtype == weight.dtype else z.to(weight.dtype)
        if d_h is not None:
            d_h.index_copy_(0, idx, torch.mm(gz, weight)[:n].to(acc))
        if d_w is not None:
            _addmm_acc(d_w, gz.t(), ch.hbuf.to(gz.dtype))
        if d_b is not None:
            d_b.add_(z.sum(0))
    return logp, ent, grads


class _FusedLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, ids, span, cu, coefficients, normalizer, head,
                chunk_size, impl, with_entropy, variant):  # fmt: skip
        h2, w, b = _compute_inputs(hidden, weight, bias)
        layout = TokenLayout(cu_seqlens=cu, span=span)
        B, N = layout.num_sequences, layout.num_tokens
        acc = acc_dtype(torch.promote_types(hidden.dtype, weight.dtype))
        dev = hidden.device
        rule = coefficients if callable(coefficients) else None
        rows = torch.nonzero(span != IGNORED).reshape(-1)  # one host sync: the scored rows
        n_buf = (1 if impl == "triton" else 2) + (head.softcap is not None)
        C = chunk_rows(max(rows.numel(), 1), w.shape[0], n_buf, chunk_size)
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                bias is not None and ctx.needs_input_grad[2])  # fmt: skip
        if rule is not None:
            # likelihood mode: the answer rows first (forward only), then the coefficients
            a_rows = torch.nonzero(span == ANSWER).reshape(-1)
            a_lp, _, _ = _scored_pass(h2, w, b, ids, span, a_rows, None, head, C, acc, impl,
                                      False, variant, need)  # fmt: skip
            lp_a = torch.zeros(N, dtype=acc, device=dev).index_copy_(0, a_rows, a_lp)
            _, y_first = segment_sums(lp_a, layout)
            with torch.no_grad():
                cz, cy = _as_coefs(rule(y_first), B, dev, acc)
        else:
            cz, cy = _as_coefs(coefficients, B, dev, acc)
        seq = layout.seq_index()
        g_tok = _per_token(cz, cy, span, seq, -1.0 / normalizer)
        if not any(need):
            g_tok = None  # nothing to differentiate: a forward-only pass
        lp_rows, ent_rows, grads = _scored_pass(h2, w, b, ids, span, rows, g_tok, head, C, acc,
                                                impl, with_entropy, variant, need)  # fmt: skip
        token_logp = torch.zeros(N, dtype=acc, device=dev).index_copy_(0, rows, lp_rows)
        z, y = segment_sums(token_logp, layout)
        if rule is not None:
            y = y_first  # the coefficients were computed from these (same value up to rounding)
        ent = None
        if with_entropy:
            ent = torch.zeros(N, dtype=acc, device=dev).index_copy_(0, rows, ent_rows)
        loss = -(_weighted_sum(cz, z) + _weighted_sum(cy, y)) / normalizer
        ctx.grads = grads if grads is not None else False
        ctx.meta = (hidden.shape, hidden.dtype, weight.dtype,
                    None if bias is None else bias.dtype)  # fmt: skip
        outs = [z, y, cz, cy, token_logp, ent if ent is not None else z.new_zeros(0)]
        ctx.mark_non_differentiable(*outs)
        return (loss.to(acc), *outs)

    @staticmethod
    def backward(ctx, g_loss, *unused):
        if ctx.grads is None:
            raise RuntimeError(
                "fused_linear_sequence_loss computes its gradient in the forward pass and can "
                "be back-propagated only once; use linear_token_logprobs for retain_graph"
            )
        if ctx.grads is False:
            raise RuntimeError("fused_linear_sequence_loss: no input required a gradient")
        d_h, d_w, d_b = ctx.grads
        ctx.grads = None  # release: autograd may then take these buffers as the .grad
        shape, h_dtype, w_dtype, b_dtype = ctx.meta
        scale = g_loss
        if scale is not None and scale.device.type == "cpu" and float(scale) == 1.0:
            scale = None

        def fin(d, dtype):
            if d is None:
                return None
            if scale is not None:
                # the upstream gradient of the scalar loss (loss / GA, loss scaling) scales the
                # [N, H] / [V, H] results: never an [N, V] pass
                d = d.mul_(scale.to(d.dtype))
            return d.to(dtype)

        dh = fin(d_h, h_dtype)
        return (None if dh is None else dh.view(shape), fin(d_w, w_dtype), fin(d_b, b_dtype),
                *(None,) * 10)  # fmt: skip


def _compute_inputs(hidden, weight, bias):
    """``(hidden [N, H], weight, bias)`` detached, in the promoted compute dtype (TRL casts its
    tiles the same way); no copy when the dtypes already agree."""
    dt = torch.promote_types(hidden.dtype, weight.dtype)
    h2 = hidden.detach().reshape(-1, hidden.shape[-1]).to(dt)
    b = None if bias is None else bias.detach()
    return h2, weight.detach().to(dt), b


def _padded(x: torch.Tensor, idx: torch.Tensor, C: int) -> torch.Tensor:
    """``x[idx]`` padded with zeros to ``C`` entries."""
    out = x.new_zeros(C)
    out[: idx.numel()] = x[idx]
    return out


def _prepare(hidden, weight, bias, token_ids, span, impl, check_ids):
    from .ops import _prepare_ids

    _check_head(hidden, weight, bias)
    name = resolve_impl(impl, hidden.device)
    V = weight.shape[0]
    # _prepare_ids reads only the leading shape, V and the device of its first argument
    probe = hidden.new_zeros(()).expand(*hidden.shape[:-1], V)
    active = None if span is None else span != IGNORED
    ids = _prepare_ids(probe, token_ids, active, name, check_ids)
    return name, ids


def fused_linear_sequence_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    layout: TokenLayout,
    coefficients,
    *,
    bias: torch.Tensor | None = None,
    normalizer: float = 1.0,
    temperature: float = 1.0,
    logit_scale: float = 1.0,
    final_logit_softcapping: float | None = None,
    return_entropy: bool = False,
    impl: str = "auto",
    chunk_size: int | None = None,
    check_ids: bool | None = None,
    variant: str | None = None,
) -> FusedLinearLoss:
    """The weighted sequence log-likelihood loss of :func:`kernels.fused_sequence_loss`, from
    the hidden states and the LM head instead of the logits (module docstring).

    ``L = -sum_b (a_b logp_z[b] + b_b logp_y[b]) / normalizer``, ``(a, b)`` detached, where
    the token log-probs are those of ``u = softcap(logit_scale (hidden W^T + bias)) / tau``.
    The backward gives ``d hidden``, ``d weight`` (skipped for a frozen weight; a weight tied
    to the embedding accumulates as usual) and ``d bias``, computed during the forward pass
    in row chunks: no ``[N, V]`` tensor ever exists. The upstream gradient of the loss (e.g.
    ``loss / GA``) scales the ``[N, H]`` and ``[V, H]`` results in the backward (cheap); passing
    ``normalizer = G * GA`` instead folds it into the pass for free.

    Args:
        hidden: ``[N, H]`` or ``[B, T, H]``, any float dtype.
        weight: ``[V, H]`` LM-head weight (an FSDP2 DTensor is gathered with ``full_tensor()``;
            a partitioned ZeRO-3 parameter is an error, see :func:`gather_lm_head`).
        token_ids: ids with hidden's leading shape; ignored rows may hold anything.
        layout: rationale / answer / ignored rows and the sequence boundaries.
        coefficients: ``(coef_z [B], coef_y [B])`` or a callable ``rule(logp_y [B]) -> pair``
            (likelihood mode: the answer rows are scored first). The rule runs under no_grad.
        bias: ``[V]`` LM-head bias or None.
        normalizer, temperature: as in :func:`kernels.fused_sequence_loss`.
        logit_scale, final_logit_softcapping: the logit transforms of TRL's chunked head.
        return_entropy: also return the per-token entropy (detached).
        impl: ``"auto" | "triton" | "torch"``.
        chunk_size: rows per chunk (default :func:`chunk_rows`); fix it for bitwise batch
            invariance across batch sizes.
        check_ids: as in :func:`kernels.token_logprobs`.
        variant: the fused Triton variant per chunk (default: the dispatch table).

    Returns:
        :class:`FusedLinearLoss`; ``loss`` back-propagates once.

    Example:
        >>> import torch
        >>> from kernels import TokenLayout
        >>> g = torch.Generator().manual_seed(0)
        >>> h = torch.randn(2, 3, 4, generator=g, requires_grad=True)
        >>> w = torch.randn(7, 4, generator=g, requires_grad=True)
        >>> rat, ans = torch.tensor([[1, 1, 0]] * 2), torch.tensor([[0, 0, 1]] * 2)
        >>> lay = TokenLayout.from_masks(rat, ans)
        >>> ids = torch.randint(0, 7, (2, 3), generator=g)
        >>> out = fused_linear_sequence_loss(h, w, ids, lay, (torch.ones(2), torch.ones(2)))
        >>> ref = -(h @ w.T).log_softmax(-1).gather(-1, ids[..., None])[..., 0].sum()
        >>> bool(torch.isclose(out.loss, ref))
        True
        >>> out.loss.backward(); tuple(h.grad.shape), tuple(w.grad.shape)
        ((2, 3, 4), (7, 4))
    """
    weight, bias = gather_lm_head(weight, bias)
    head = _check_transform(temperature, logit_scale, final_logit_softcapping)
    norm = float(normalizer)
    if not (math.isfinite(norm) and norm > 0):
        raise ValueError(f"normalizer must be a finite positive number, got {normalizer!r}")
    if not isinstance(layout, TokenLayout):
        raise TypeError(f"layout must be a kernels.TokenLayout, got {type(layout).__name__}")
    _check_head(hidden, weight, bias)
    layout.check_against(math.prod(hidden.shape[:-1]))
    span = _on(layout.span, hidden.device)
    name, ids = _prepare(hidden, weight, bias, token_ids, span, impl, check_ids)
    V = weight.shape[0]
    if name == "triton":
        from .dispatch import FUSED_VARIANTS, choose_variant

        variant = choose_variant(V) if variant is None else variant
        if variant not in FUSED_VARIANTS:
            raise ValueError(f"variant must be one of {FUSED_VARIANTS} or None, got {variant!r}")
    if chunk_size is not None:
        chunk_rows(1, V, 1, chunk_size)  # validate before any work
    loss, z, y, cz, cy, tok, ent = _FusedLinearFn.apply(
        hidden, weight, bias, ids, span, _on(layout.cu_seqlens, hidden.device), coefficients,
        norm, head, chunk_size, name, bool(return_entropy), variant,
    )  # fmt: skip
    return FusedLinearLoss(loss, z, y, cz, cy, tok, ent if return_entropy else None)


# --------------------------------------------------------------------------------------------
# per-token log-probs (differentiable, recomputing backward)
# --------------------------------------------------------------------------------------------
class _LinearRowsFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, ids, head, C, with_entropy):
        h2, w, b = _compute_inputs(hidden, weight, bias)
        N = h2.shape[0]
        acc = acc_dtype(h2.dtype)
        rows = torch.arange(N, device=hidden.device)
        logp = torch.zeros(N, dtype=acc, device=hidden.device)
        norm = torch.zeros(2, N, dtype=acc, device=hidden.device)
        ent = torch.zeros(N, dtype=acc, device=hidden.device) if with_entropy else None
        if N:
            ch = _Chunks(h2, rows, C, acc, head.softcap is not None, weight.shape[0])
            for c0, idx, n in ch:
                z = _logits_(ch, w, b, head)
                c_lp, c_m, c_ls, c_ent = _torch_rows_(z, _padded(ids, idx, C), None,
                                                      head.inv_temp, with_entropy, ch.work)
                logp[c0 : c0 + n] = c_lp[:n]
                norm[0, c0 : c0 + n] = c_m[:n]
                norm[1, c0 : c0 + n] = c_ls[:n]
                if with_entropy:
                    ent[c0 : c0 + n] = c_ent[:n]
        ctx.save_for_backward(hidden, weight, bias, ids, norm, ent)
        ctx.cfg = (head, C)
        if ent is None:
            ent = logp.new_zeros(0)
            ctx.mark_non_differentiable(ent)
        return logp, ent

    @staticmethod
    def backward(ctx, g_lp, g_ent):
        hidden, weight, bias, ids, norm, ent = ctx.saved_tensors
        head, C = ctx.cfg
        h2, w, b = _compute_inputs(hidden, weight, bias)
        N, H = h2.shape
        V = weight.shape[0]
        acc = norm.dtype
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        d_h = torch.zeros(h2.shape, dtype=acc, device=h2.device) if need_h else None
        d_w = torch.zeros((V, H), dtype=acc, device=h2.device) if need_w else None
        d_b = torch.zeros(V, dtype=acc, device=h2.device) if need_b else None
        if g_lp is None:
            g_lp = norm.new_zeros(N)
        if ent is None or g_ent is None or g_ent.numel() == 0:
            g_ent = None
        rows = torch.arange(N, device=h2.device)
        if N:
            ch = _Chunks(h2, rows, C, acc, head.softcap is not None, V)
            for c0, _, n in ch:
                sl = slice(c0, c0 + n)
                pad = C - n
                z = _logits_(ch, w, b, head)
                if head.inv_temp != 1.0:
                    z.mul_(head.inv_temp)
                m = torch.nn.functional.pad(norm[0, sl], (0, pad))
                ls = torch.nn.functional.pad(norm[1, sl], (0, pad))
                g = torch.nn.functional.pad(g_lp[sl].to(acc), (0, pad))
                z.sub_(m[:, None]).sub_(ls[:, None])  # log p
                p = torch.exp(z, out=ch.work)
                if g_ent is not None:
                    ge = torch.nn.functional.pad(g_ent[sl].to(acc), (0, pad))
                    h_t = torch.nn.functional.pad(ent[sl], (0, pad))
                    # dH/du = -p (log p + H); p = 0 terms count 0
                    z.add_(h_t[:, None]).mul_(p).nan_to_num_(nan=0.0).mul_(-ge[:, None])
                else:
                    z.zero_()
                z.sub_(p.mul_(g[:, None]))
                tgt = torch.nn.functional.pad(ids[sl], (0, pad))
                z.scatter_add_(1, tgt[:, None], g[:, None])
                if head.inv_temp != 1.0:
                    z.mul_(head.inv_temp)
                _chain_softcap_(z, ch, head)
                gz = z if z.dtype == w.dtype else z.to(w.dtype)
                if d_h is not None:
                    d_h[sl] = torch.mm(gz, w)[:n].to(acc)
                if d_w is not None:
                    _addmm_acc(d_w, gz.t(), ch.hbuf.to(gz.dtype))
                if d_b is not None:
                    d_b.add_(z.sum(0))
        return (
            None if d_h is None else d_h.to(hidden.dtype).view(hidden.shape),
            None if d_w is None else d_w.to(weight.dtype),
            None if d_b is None else d_b.to(bias.dtype),
            None, None, None, None,
        )  # fmt: skip


def linear_token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    logit_scale: float = 1.0,
    final_logit_softcapping: float | None = None,
    return_entropy: bool = False,
    impl: str = "auto",
    chunk_size: int | None = None,
):
    """Per-token log-probs (and entropy) of ``token_ids`` under the LM head, chunked: never
    ``[N, V]``.

    ``logp_t = log_softmax(u_t)[id_t]`` with ``u = softcap(logit_scale (hidden W^T + bias)) /
    tau`` (module docstring), ``H_t = -sum_v p_tv log p_tv``; both differentiable w.r.t.
    hidden, weight and bias. The backward recomputes each chunk's logits (8 N H V flops in all,
    like TRL's chunked head: the upstream gradients arrive only then); for the J_Q loss use
    :func:`fused_linear_sequence_loss` (6 N H V). Rows are chunked as there; ``impl`` is
    accepted for symmetry and runs the torch row ops on every device.

    Returns ``logp`` (and ``entropy``) of shape ``hidden.shape[:-1]``, float32 (float64 for
    float64 inputs).

    Example:
        >>> import torch
        >>> h, w = torch.eye(2), torch.tensor([[1.0, 0.0], [0.0, 0.0]])
        >>> linear_token_logprobs(h, w, torch.tensor([0, 1]))
        tensor([-0.3133, -0.6931])
    """
    weight, bias = gather_lm_head(weight, bias)
    head = _check_transform(temperature, logit_scale, final_logit_softcapping)
    _, ids = _prepare(hidden, weight, bias, token_ids, None, impl, None)
    V = weight.shape[0]
    N = math.prod(hidden.shape[:-1])
    n_buf = 2 + (final_logit_softcapping is not None)
    C = chunk_rows(max(N, 1), V, n_buf, chunk_size)
    logp, ent = _LinearRowsFn.apply(hidden, weight, bias, ids, head, C, bool(return_entropy))
    shape = hidden.shape[:-1]
    if return_entropy:
        return logp.view(shape), ent.view(shape)
    return logp.view(shape)

