"""Public token-level ops on logits: autograd Functions and the ``impl`` dispatcher.

Three entry points, all on logits of shape ``[N, V]`` or ``[B, T, V]`` (any float dtype, any
strides; the ``[B, T, V]`` case is read as ``N = B*T`` rows without a copy):

* :func:`token_logprobs` - per-token log-probs (and entropy) of given ids, differentiable.
* :func:`sequence_logprobs` - per-sequence sums over the rationale and answer spans
  (:class:`~kernels.layout.TokenLayout`), differentiable.
* :func:`fused_sequence_loss` - the weighted sequence log-likelihood loss
  ``L = -sum_b (a_b logp_z[b] + b_b logp_y[b]) / normalizer`` with detached per-sequence
  coefficients, whose gradient is computed in the same pass as the forward (the surrogate
  loss of docs/conventions.md; design in kernels/README.md). The coefficient rule enters as
  tensors (known before the kernel: verifier mode) or as a callable of the answer log-probs
  (likelihood mode).

``impl``: ``"auto"`` (Triton for CUDA tensors when Triton is importable, torch otherwise),
``"triton"`` (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``) or ``"torch"``.

On the Triton path the three entry points never synchronise with the host (no ``.item()``, no
data-dependent Python branch): token ids are range-checked on the device (``check_ids``), and
the fused loss scales its precomputed gradient by the upstream gradient in a kernel.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable
from typing import NamedTuple

import torch

from . import reference
from .dispatch import FUSED_VARIANTS, choose_variant
from .layout import ANSWER, IGNORED, RATIONALE, TokenLayout, check_logits, check_token_ids

__all__ = [
    "FUSED_VARIANTS",
    "FusedLoss",
    "SequenceLogprobs",
    "fused_sequence_loss",
    "resolve_impl",
    "sequence_logprobs",
    "token_logprobs",
    "triton_available",
]

_IMPLS = ("auto", "triton", "torch")


def triton_available() -> bool:
    """True when the ``triton`` package can be imported."""
    return importlib.util.find_spec("triton") is not None


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_impl(impl: str, device: torch.device) -> str:
    """Map ``impl`` to ``"triton"`` or ``"torch"`` for tensors on ``device`` (or raise)."""
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
    if impl == "torch":
        return "torch"
    on_cuda = device.type == "cuda"
    if impl == "auto":
        return "triton" if (on_cuda and triton_available()) else "torch"
    if not triton_available():
        raise ValueError("impl='triton' needs the triton package, which is not importable")
    if not on_cuda and not _interpret():
        raise ValueError(
            f"impl='triton' needs CUDA tensors (got {device}); on CPU set TRITON_INTERPRET=1 "
            "before the first Triton call to use the interpreter, or use impl='torch'"
        )
    return "triton"


def _backend(name: str):
    if name == "torch":
        return reference
    from . import triton as kt  # lazy: decides compiled vs interpreted at first import

    return kt


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a finite positive number, got {temperature!r}")
    return 1.0 / t


def _on(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``: unchanged when already there; else an asynchronous copy
    (``non_blocking``), so a CPU layout or coefficient tensor given with CUDA logits costs a
    host-to-device copy but no host synchronisation. The copy reads pageable host memory
    before returning; a *pinned* source must not be modified until the stream has run it."""
    return t if t.device == device else t.to(device, non_blocking=True)


def _prepare_ids(logits, token_ids, active, impl, check_ids):
    """Validate ``token_ids`` and return them flat, int64, contiguous, in [0, V).

    Shape, dtype and device are checked on the host (metadata only). The range [0, V) is
    checked at positions where ``active`` (all when None): on the torch path, and whenever
    ``check_ids=True``, on the host with a ``ValueError`` naming the first bad id (one sync);
    on the Triton path by default on the device (``torch._assert_async``: no host sync; a
    device-side assert on CUDA, a ``RuntimeError`` on CPU); with ``check_ids=False`` not at
    all. Out-of-range and inactive ids are then replaced by 0, so no kernel reads out of bounds.
    """
    if check_ids is not None and not isinstance(check_ids, bool):
        raise TypeError(f"check_ids must be None, True or False, got {check_ids!r}")
    on_host = check_ids is True or (check_ids is None and impl == "torch")
    check_token_ids(logits, token_ids, active, check_range=on_host)
    V = logits.shape[-1]
    ids = token_ids.reshape(-1)
    if on_host:
        keep = active
    else:
        ok = (ids >= 0) & (ids < V)
        if check_ids is None and ids.numel():
            valid = ok.all() if active is None else (ok | ~active).all()
            torch._assert_async(valid, f"token ids must lie in [0, V) = [0, {V})")
        keep = ok if active is None else ok & active
    ids = ids.to(torch.int64)
    if keep is not None:
        ids = torch.where(keep, ids, torch.zeros((), dtype=torch.int64, device=ids.device))
    return ids.contiguous()


def _check_inplace_target(logits: torch.Tensor, flag: str) -> None:
    """An in-place gradient needs every logit in its own memory (no stride-0 / expanded view)."""
    probe = getattr(torch, "_debug_has_internal_overlap", None)
    if probe is not None:
        overlap = probe(logits) == 1  # 0: none, 1: yes, 2: too complex to tell
    else:  # pragma: no cover - every supported torch has the probe
        dims = zip(logits.stride(), logits.shape, strict=True)
        overlap = any(st == 0 and n > 1 for st, n in dims)
    if overlap:
        raise ValueError(
            f"{flag}=True writes the gradient into the logits' storage, but these logits "
            f"(shape {tuple(logits.shape)}, strides {logits.stride()}) share memory between "
            "elements (an expanded / stride-0 view); pass a materialised tensor or use "
            f"{flag}=False"
        )


def _bump_version(t: torch.Tensor) -> None:
    """Tell autograd that ``t`` was modified in place (so stale saved copies raise)."""
    inc = getattr(torch.autograd.graph, "increment_version", None)
    if inc is not None:
        inc(t)


# --------------------------------------------------------------------------------------------
# per-row log-probs / entropy
# --------------------------------------------------------------------------------------------
class _RowsFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, ids, span, inv_temp, with_entropy, impl, inplace):
        be = _backend(impl)
        x3 = reference.as_rows(logits)
        active = None if span is None else span != IGNORED
        if impl == "triton":
            select = be.SELECT_ALL if span is None else be.SELECT_ACTIVE
            logp, norm, ent = be.forward_rows(x3, ids, inv_temp, with_entropy, span, select)
        else:
            logp, norm, ent = be.forward_rows(x3, ids, inv_temp, with_entropy, active)
        ctx.save_for_backward(logits, ids, norm, ent if with_entropy else None, active)
        ctx.cfg = (inv_temp, impl, inplace)
        if ent is None:
            ent = logp.new_zeros(0)
            ctx.mark_non_differentiable(ent)
        return logp, ent

    @staticmethod
    def backward(ctx, g_lp, g_ent):
        logits, ids, norm, ent, active = ctx.saved_tensors
        inv_temp, impl, inplace = ctx.cfg
        x3 = reference.as_rows(logits)
        if g_lp is None:
            g_lp = torch.zeros_like(norm[0])
        if ent is None or g_ent is None or g_ent.numel() == 0:
            g_ent = None
        if active is not None:
            g_lp = torch.where(active, g_lp, torch.zeros_like(g_lp))
            if g_ent is not None:
                g_ent = torch.where(active, g_ent, torch.zeros_like(g_ent))
        if inplace:
            out3 = x3
        else:
            out3 = torch.empty(x3.shape, dtype=x3.dtype, device=x3.device)
        _backend(impl).backward_rows(x3, ids, norm, ent, g_lp, g_ent, inv_temp, out3)
        if inplace:
            _bump_version(logits)
        return out3.view(logits.shape), None, None, None, None, None, None


def token_logprobs(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    *,
    temperature: float = 1.0,
    return_entropy: bool = False,
    impl: str = "auto",
    inplace_backward: bool = False,
    check_ids: bool | None = None,
):
    """Per-token log-probabilities of ``token_ids`` under ``softmax(logits / temperature)``.

    Formula (per row t, u = z_t / tau): ``logp_t = u[id_t] - logsumexp(u)``; with
    ``return_entropy`` also ``H_t = logsumexp(u) - sum_v softmax(u)_v u_v`` from the same pass.
    Both are differentiable: ``dlogp_t/dz_tv = (1[v = id_t] - p_v) / tau`` and
    ``dH_t/dz_tv = -p_v (log p_v + H_t) / tau``. Temperature as in TRL (logits divided by tau).

    Args:
        logits: ``[N, V]`` or ``[B, T, V]``, any float dtype, any strides. For a Hugging Face
            causal LM, ``logits[:, t]`` predicts ``input_ids[:, t+1]``: pass
            ``logits[:, :-1]`` with ``input_ids[:, 1:]``, or the full logits with
            :func:`~kernels.layout.shift_for_causal_lm`'s labels.
        token_ids: integer ids in ``[0, V)``, shape ``logits.shape[:-1]``.
        temperature: tau > 0.
        return_entropy: also return the per-token entropy.
        impl: ``"auto" | "triton" | "torch"``.
        inplace_backward: write the gradient into the logits' storage (destroys the logits;
            only when nothing else needs them).
        check_ids: range check of the ids: None (default) on the host for ``impl="torch"``
            (``ValueError``) and on the device for Triton (no host sync; a device-side assert
            on CUDA); True always on the host (one sync, clear message); False never.

    Returns:
        ``logp`` of shape ``logits.shape[:-1]``, float32 (float64 for float64 logits on the
        torch path), and ``entropy`` of the same shape when ``return_entropy``.

    Example:
        >>> import torch
        >>> z = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
        >>> token_logprobs(z, torch.tensor([0, 1]))
        tensor([-0.6931, -2.1269])
    """
    check_logits(logits)
    inv_temp = _check_temperature(temperature)
    name = resolve_impl(impl, logits.device)
    ids = _prepare_ids(logits, token_ids, None, name, check_ids)
    if inplace_backward:
        _check_inplace_target(logits, "inplace_backward")
    logp, ent = _RowsFn.apply(
        logits, ids, None, inv_temp, bool(return_entropy), name, bool(inplace_backward)
    )
    shape = logits.shape[:-1]
    if return_entropy:
        return logp.view(shape), ent.view(shape)
    return logp.view(shape)


# --------------------------------------------------------------------------------------------
# per-sequence span sums
# --------------------------------------------------------------------------------------------
class _SegSumFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, span, cu_seqlens, impl):
        layout = TokenLayout(cu_seqlens=cu_seqlens, span=span)
        if impl == "triton" and values.dtype != torch.float64:
            z, y = _backend("triton").segment_sums(values, layout)
        else:
            z, y = reference.segment_sums(values.detach(), layout)
        ctx.save_for_backward(span, cu_seqlens)
        return z, y

    @staticmethod
    def backward(ctx, gz, gy):
        span, cu = ctx.saved_tensors
        seq = TokenLayout(cu_seqlens=cu, span=span).seq_index()
        zero = gz.new_zeros(()) if gz is not None else gy.new_zeros(())
        g = torch.zeros(span.shape, dtype=zero.dtype, device=span.device)
        if gz is not None:
            g = torch.where(span == RATIONALE, gz[seq], g)
        if gy is not None:
            g = torch.where(span == ANSWER, gy[seq], g)
        return g, None, None, None


class SequenceLogprobs(NamedTuple):
    """Per-sequence span log-probs (``[B]``) and, optionally, per-token values (``[N]``)."""

    logp_z: torch.Tensor
    logp_y: torch.Tensor
    token_logp: torch.Tensor
    entropy: torch.Tensor | None


def sequence_logprobs(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    layout: TokenLayout,
    *,
    temperature: float = 1.0,
    return_entropy: bool = False,
    impl: str = "auto",
    inplace_backward: bool = False,
    check_ids: bool | None = None,
) -> SequenceLogprobs:
    """Per-sequence sums of token log-probs over the rationale and the answer span.

    ``logp_z[b] = sum_{t in b, span_t = RATIONALE} logp_t``, ``logp_y[b] = sum_{t in b,
    span_t = ANSWER} logp_t`` (log p(z|x*) and log p(y*|x*, z) of docs/conventions.md);
    ignored rows never affect the result: they may hold any id and any logits (also inf/NaN),
    and their gradient rows are exactly 0. Sums run in a fixed order per sequence, so a
    sequence's values (and gradient) do not depend on the rest of the batch. An all-masked
    sequence gives 0.

    Returns a :class:`SequenceLogprobs` (``logp_z [B]``, ``logp_y [B]``, ``token_logp [N]``,
    ``entropy [N]`` or None), differentiable w.r.t. the logits. ``check_ids``: as in
    :func:`token_logprobs` (checked at non-ignored rows only).

    Example:
        >>> import torch
        >>> z = torch.zeros(1, 3, 4)  # uniform over 4 tokens
        >>> lay = TokenLayout.from_masks(torch.tensor([[1, 1, 0]]), torch.tensor([[0, 0, 1]]))
        >>> out = sequence_logprobs(z, torch.tensor([[0, 1, 2]]), lay)
        >>> out.logp_z, out.logp_y
        (tensor([-2.7726]), tensor([-1.3863]))
    """
    check_logits(logits)
    x_rows = logits.shape[0] * logits.shape[1] if logits.dim() == 3 else logits.shape[0]
    layout.check_against(x_rows)
    span = _on(layout.span, logits.device)
    active = span != IGNORED
    inv_temp = _check_temperature(temperature)
    name = resolve_impl(impl, logits.device)
    ids = _prepare_ids(logits, token_ids, active, name, check_ids)
    if inplace_backward:
        _check_inplace_target(logits, "inplace_backward")
    logp, ent = _RowsFn.apply(
        logits, ids, span, inv_temp, bool(return_entropy), name, bool(inplace_backward)
    )
    z, y = _SegSumFn.apply(logp, span, _on(layout.cu_seqlens, logits.device), name)
    return SequenceLogprobs(z, y, logp, ent if return_entropy else None)


# --------------------------------------------------------------------------------------------
# fused loss: forward and gradient in one pass
# --------------------------------------------------------------------------------------------
CoefficientRule = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class FusedLoss(NamedTuple):
    """Output of :func:`fused_sequence_loss` (all but ``loss`` detached)."""

    loss: torch.Tensor  # scalar, differentiable w.r.t. the logits
    logp_z: torch.Tensor  # [B]
    logp_y: torch.Tensor  # [B]
    coef_z: torch.Tensor  # [B]
    coef_y: torch.Tensor  # [B]
    entropy: torch.Tensor | None  # [N], 0 at ignored rows
    #: [1] int32 (Triton only): how many programs of a multi-program variant (split, multi)
    #: timed out waiting for their row's siblings. Such a program recomputes its row's partial
    #: statistics itself, which gives the same bits: the results are unaffected (in place a
    #: timeout raises instead). None on the torch path.
    timeouts: torch.Tensor | None


def _per_token(coef_z, coef_y, span, seq, scale):
    """``g_t = scale * coef(t)``: ``coef_z[b]`` on rationale rows, ``coef_y[b]`` on answer rows of
    sequence ``b``, 0 on ignored rows."""
    zero = coef_z.new_zeros(())
    g = torch.where(span == RATIONALE, coef_z[seq], zero)
    g = torch.where(span == ANSWER, coef_y[seq], g)
    return g * scale


def _weighted_sum(coef, logp):
    """``sum_b coef_b logp_b`` where a zero coefficient contributes exactly 0, also against a
    log-prob of -inf (a token of probability 0 is valid input; its weight may be zero)."""
    return torch.where(coef == 0, torch.zeros((), dtype=logp.dtype, device=logp.device),
                       coef * logp).sum()  # fmt: skip


def _as_coefs(pair, B, device, dtype):
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise TypeError(
            "coefficients must be a pair (coef_z [B], coef_y [B]) or a callable returning one, "
            f"got {type(pair).__name__}"
        )
    out = []
    for name, c in zip(("coef_z", "coef_y"), pair, strict=True):
        c = _on(torch.as_tensor(c), device).detach()
        if c.shape != (B,):
            raise ValueError(f"{name} must have shape [B] = [{B}], got {tuple(c.shape)}")
        if not c.is_floating_point():
            raise TypeError(f"{name} must be a float tensor, got {c.dtype}")
        out.append(c.to(dtype))
    return out[0], out[1]


class _FusedFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        logits,
        ids,
        span,
        cu,
        coefficients,
        normalizer,
        inv_temp,
        with_entropy,
        impl,
        inplace,
        variant,
    ):
        x3 = reference.as_rows(logits)
        layout = TokenLayout(cu_seqlens=cu, span=span)
        B = layout.num_sequences
        seq = layout.seq_index()
        acc = reference.acc_dtype(logits.dtype) if impl == "torch" else torch.float32
        out3 = x3 if inplace else torch.empty(x3.shape, dtype=x3.dtype, device=x3.device)
        timeouts = None
        rule = coefficients if callable(coefficients) else None
        if impl == "torch":
            logp, norm, ent = reference.forward_rows(
                x3, ids, inv_temp, with_entropy, span != IGNORED
            )
            z, y = reference.segment_sums(logp, layout)
            with torch.no_grad():
                cz, cy = _as_coefs(rule(y) if rule else coefficients, B, x3.device, acc)
            g = _per_token(cz, cy, span, seq, -1.0 / normalizer)
            reference.backward_rows(x3, ids, norm, None, g, None, inv_temp, out3)
        else:
            kt = _backend("triton")
            norm_a = ent_a = None
            logp_a = None
            if rule is not None:
                # likelihood mode: score the (short) answer span first
                logp_a, norm_a, ent_a = kt.forward_rows(
                    x3, ids, inv_temp, with_entropy, span, kt.SELECT_ANSWER
                )
                _, y = kt.segment_sums(logp_a, layout)
                with torch.no_grad():
                    cz, cy = _as_coefs(rule(y), B, x3.device, acc)
            else:
                cz, cy = _as_coefs(coefficients, B, x3.device, acc)
            g = _per_token(cz, cy, span, seq, -1.0 / normalizer)
            logp, ent, timeouts = kt.fused_rows(
                x3, ids, span, g, inv_temp, with_entropy, out3, norm_in=norm_a, ent_in=ent_a,
                variant=variant,
            )  # fmt: skip
            if logp_a is not None:
                logp = logp + logp_a  # disjoint supports: answer rows came from the first pass
            z, y = kt.segment_sums(logp, layout)
        loss = -(_weighted_sum(cz, z) + _weighted_sum(cy, y)) / normalizer
        if inplace:
            _bump_version(logits)
        # in place the gradient *is* the logits' storage: save the input itself, never the
        # [1, N, V] view of 2-D logits made here (a view made under no_grad whose base was
        # just bumped cannot be unpacked in backward)
        ctx.save_for_backward(logits if inplace else out3)
        ctx.shape = logits.shape
        ctx.impl = impl
        ctx.used = False
        outs = [z, y, cz, cy, ent if ent is not None else z.new_zeros(0)]
        outs.append(timeouts if timeouts is not None else torch.zeros(1, dtype=torch.int32))
        ctx.mark_non_differentiable(*outs)
        return (loss, *outs)

    @staticmethod
    def backward(ctx, g_loss, *unused):
        if ctx.used:
            raise RuntimeError(
                "fused_sequence_loss computes its gradient in the forward pass and can be "
                "back-propagated only once; use sequence_logprobs for retain_graph/double use"
            )
        ctx.used = True
        (dx,) = ctx.saved_tensors
        if g_loss is not None:
            if ctx.impl == "triton":
                # no-op kernel when g_loss == 1
                _backend("triton").scale_(reference.as_rows(dx), g_loss)
            elif dx.device.type != "cpu" or float(g_loss) != 1.0:
                dx.mul_(g_loss.to(dx.dtype))
        return (dx.view(ctx.shape),) + (None,) * 10


def fused_sequence_loss(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    layout: TokenLayout,
    coefficients,
    *,
    normalizer: float = 1.0,
    temperature: float = 1.0,
    return_entropy: bool = False,
    inplace_grad: bool = False,
    impl: str = "auto",
    variant: str | None = None,
    check_ids: bool | None = None,
) -> FusedLoss:
    """Weighted sequence log-likelihood loss with its gradient computed in the forward pass.

    ``L = -sum_b (a_b * logp_z[b] + b_b * logp_y[b]) / normalizer`` with ``(a, b)`` detached
    (the surrogate loss of docs/conventions.md, whose gradient is the estimator's, Prop. 4.1),
    so that ``dL/dz_tv = -coef(t) (1[v = id_t] - softmax(z_t/tau)_v) / (tau * normalizer)``
    with ``coef(t)`` = ``a_b`` on rationale rows and ``b_b`` on answer rows of sequence ``b``.
    A zero coefficient contributes exactly 0 to the loss, also when its log-prob is -inf (a
    gold token of probability 0). Ignored rows never affect the result (any id, any logits,
    also inf/NaN) and get a gradient of exactly 0.

    Args:
        logits: ``[N, V]`` or ``[B, T, V]`` (any float dtype, any strides).
        token_ids: ids, shape ``logits.shape[:-1]`` (ignored rows may hold anything).
        layout: which rows are rationale / answer / ignored, and the sequence boundaries.
        coefficients: either ``(coef_z [B], coef_y [B])`` known before the kernel (verifier
            mode), or a callable ``rule(logp_y [B]) -> (coef_z, coef_y)`` (likelihood mode:
            the answer rows are scored first, then one pass over all rows computes the
            rationale log-probs and writes the gradient). The rule runs under ``no_grad``.
        normalizer: divides the sum (e.g. the number of groups G for a per-prompt mean).
        temperature: tau > 0 (TRL convention: logits / tau).
        return_entropy: also return the per-token entropy (detached, 0 at ignored rows).
        inplace_grad: write the gradient into the logits' storage during the forward pass:
            no gradient buffer at all, but the logits are destroyed (their autograd version
            counter is bumped, so a stale saved copy elsewhere raises instead of lying).
        impl: ``"auto" | "triton" | "torch"`` (torch: two chunked passes).
        variant: Triton fused kernel, one of :data:`kernels.FUSED_VARIANTS` (``"row"``,
            ``"row_rev"``, ``"multi"``, ``"split"``, ``"split_2pass"``; kernels/README.md).
            None: :func:`kernels.dispatch.choose_variant` of V (the dispatch table). Ignored
            by the torch path.
        check_ids: as in :func:`token_logprobs` (checked at non-ignored rows only).

    Returns:
        :class:`FusedLoss`; ``loss`` back-propagates once (the gradient is already computed).

    Example:
        >>> import torch
        >>> z = torch.zeros(2, 2, 4, requires_grad=True)
        >>> rat, ans = torch.tensor([[1, 0], [1, 0]]), torch.tensor([[0, 1], [0, 1]])
        >>> lay = TokenLayout.from_masks(rat, ans)
        >>> out = fused_sequence_loss(z, torch.zeros(2, 2, dtype=torch.long), lay,
        ...                           (torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0])))
        >>> out.loss
        tensor(2.7726, grad_fn=<_FusedFnBackward>)
        >>> out.loss.backward(); z.grad[0, 0]
        tensor([-0.7500,  0.2500,  0.2500,  0.2500])
    """
    check_logits(logits)
    x_rows = logits.shape[0] * logits.shape[1] if logits.dim() == 3 else logits.shape[0]
    layout.check_against(x_rows)
    span = _on(layout.span, logits.device)
    active = span != IGNORED
    inv_temp = _check_temperature(temperature)
    norm = float(normalizer)
    if not (math.isfinite(norm) and norm > 0):
        raise ValueError(f"normalizer must be a finite positive number, got {normalizer!r}")
    name = resolve_impl(impl, logits.device)
    if variant is None:
        variant = choose_variant(logits.shape[-1])
    if variant not in FUSED_VARIANTS:
        raise ValueError(f"variant must be one of {FUSED_VARIANTS} or None, got {variant!r}")
    ids = _prepare_ids(logits, token_ids, active, name, check_ids)
    if inplace_grad:
        _check_inplace_target(logits, "inplace_grad")
    loss, z, y, cz, cy, ent, timeouts = _FusedFn.apply(
        logits,
        ids,
        span,
        _on(layout.cu_seqlens, logits.device),
        coefficients,
        norm,
        inv_temp,
        bool(return_entropy),
        name,
        bool(inplace_grad),
        variant,
    )
    return FusedLoss(
        loss,
        z,
        y,
        cz,
        cy,
        ent if return_entropy else None,
        timeouts if name == "triton" else None,
    )
