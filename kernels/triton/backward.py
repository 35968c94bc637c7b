"""Backward kernel of the per-row log-prob / entropy, and the upstream-gradient scaling kernel.

For upstream gradients ``g = dL/dlogp`` and ``e = dL/dH`` of a row (``p = softmax(u)``,
``u = z / tau``; see :mod:`kernels.reference` for the derivation):

    dL/dz_v = (1/tau) [ g (1[v = id] - p_v) - e p_v (log p_v + H) ]

One program per row, from the saved row maximum ``m``, ``log s`` and ``H`` (``log p = (u - m) -
log s``, shift invariant): reads the row once and writes it once,
4 bytes per element for bf16 (6 with the forward). A row whose ``g`` and ``e`` are both zero
(ignored rows) is written as zeros without being read, so non-finite logits there cannot leak.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (
    INTERPRET,
    INTERPRET_BLOCK_V,
    configs,
    launch,
    row_offset,
    x_strides,
    zero_cols,
)

CONFIGS = [(2048, 1, 4), (4096, 4, 2), (8192, 8, 2), (16384, 16, 2)]
DEFAULT = (4096, 4, 2)


@triton.jit
def _bwd_kernel(
    X,  # logits, [B, T, V] with strides (sxb, sxt, sxv)
    sxb,
    sxt,
    sxv,
    T,
    V,
    IDS,  # [N] int64 token ids
    ROWMAX,  # [N] fp32 saved row maximum m
    LOGS,  # [N] fp32 saved log s (lse = m + log s, kept apart)
    ENT,  # [N] fp32 saved entropy (WITH_ENT)
    G_LP,  # [N] fp32 dL/dlogp
    G_ENT,  # [N] fp32 dL/dH (WITH_ENT)
    inv_temp,
    DX,  # gradient out, [B, T, V] with strides (sdb, sdt, sdv); may alias X (in place)
    sdb,
    sdt,
    sdv,
    WITH_ENT: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    dx_row = DX + row_offset(row, T, sdb, sdt)
    g = tl.load(G_LP + row)
    ge = 0.0
    if WITH_ENT:
        ge = tl.load(G_ENT + row)
    if (g == 0.0) & (ge == 0.0):
        zero_cols(dx_row, sdv, 0, V, BLOCK_V)
        return
    x_row = X + row_offset(row, T, sxb, sxt)
    m = tl.load(ROWMAX + row)
    log_s = tl.load(LOGS + row)
    h = 0.0
    if WITH_ENT:
        h = tl.load(ENT + row)
    tok = tl.load(IDS + row)
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        msk = cols < V
        u = tl.load(x_row + cols.to(tl.int64) * sxv, mask=msk, other=-float("inf"))
        logp = (u.to(tl.float32) * inv_temp - m) - log_s
        p = tl.exp(logp)
        grad = g * (tl.where(cols == tok, 1.0, 0.0) - p)
        if WITH_ENT:
            grad -= ge * p * tl.where(p > 0, logp + h, 0.0)
        grad = grad * inv_temp
        tl.store(dx_row + cols.to(tl.int64) * sdv, grad.to(DX.dtype.element_ty), mask=msk)


@triton.jit
def _scale_kernel(
    DX,  # gradient, [B, T, V] with strides (sdb, sdt, sdv), scaled in place
    sdb,
    sdt,
    sdv,
    T,
    V,
    SCALE,  # [1] the upstream gradient of a scalar loss (any float dtype)
    BLOCK_V: tl.constexpr,
):
    """``DX *= SCALE`` row by row; every program returns at once when ``SCALE == 1`` (the usual
    ``loss.backward()``), so the common case costs one tiny launch and no host sync."""
    scale = tl.load(SCALE).to(tl.float32)
    if scale == 1.0:
        return
    row = tl.program_id(0).to(tl.int64)
    dx_row = DX + row_offset(row, T, sdb, sdt)
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        ptr = dx_row + cols.to(tl.int64) * sdv
        d = tl.load(ptr, mask=cols < V, other=0.0).to(tl.float32)
        tl.store(ptr, (d * scale).to(DX.dtype.element_ty), mask=cols < V)


_TUNED: list = []


def _tuned():
    if not _TUNED:
        _TUNED.append(triton.autotune(configs(CONFIGS), key=["V", "WITH_ENT"])(_bwd_kernel))
    return _TUNED[0]


def backward_rows(x3, ids, norm, ent, g_lp, g_ent, inv_temp, out3, block_v=None):
    """Write dL/dlogits into ``out3`` (same shape as ``x3``; may alias it: in place).

    ``g_lp [N]``, ``g_ent [N]`` (or None): upstream gradients of the per-row log-prob and
    entropy; ``norm [2, N]`` (row maximum, log s), ``ent``: the forward's saved values.
    """
    B, T, V = x3.shape
    N = B * T
    if N == 0:
        return out3
    with_ent = g_ent is not None
    g_lp = g_lp.to(torch.float32).contiguous()
    g_ent_arg = g_ent.to(torch.float32).contiguous() if with_ent else g_lp
    norm = norm.to(torch.float32)
    ent_arg = ent if (with_ent and ent is not None) else norm[1]
    inplace = out3.data_ptr() == x3.data_ptr()
    args = (x3, *x_strides(x3), T, V, ids, norm[0], norm[1], ent_arg, g_lp, g_ent_arg,
            float(inv_temp),
            out3, *x_strides(out3))  # fmt: skip
    kw = {"WITH_ENT": with_ent}
    launch(_bwd_kernel, _tuned, DEFAULT, lambda bv: N, args, kw, block_v, tune=not inplace)
    return out3


def scale_(out3, scale, block_v=None):
    """``out3 *= scale`` for a one-element tensor ``scale`` on the same device, without a host
    sync; a no-op pass (one tiny launch) when ``scale == 1``."""
    B, T, V = out3.shape
    N = B * T
    if N == 0:
        return out3
    bv = block_v or (INTERPRET_BLOCK_V if INTERPRET else 4096)
    _scale_kernel[(N,)](out3, *x_strides(out3), T, V, scale.reshape(1), BLOCK_V=bv,
                        num_warps=1 if INTERPRET else 4)  # fmt: skip
    return out3

