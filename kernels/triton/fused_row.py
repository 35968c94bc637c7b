"""Fused forward + gradient, one program per row, two sweeps: variants ``row`` and ``row_rev``.

When the per-token coefficient ``g = dL/dlogp`` is known before the kernel (verifier mode, or
likelihood mode after the answer rows were scored), one visit per row suffices:

* sweep 1: online logsumexp over the row (and ``logp = (u[id] - m) - log s``, the entropy);
* sweep 2: re-read the row and write ``dz_v = g (1[v = id] - p_v) / tau`` with
  ``p_v = exp((u_v - m) - log s)`` (``m`` and ``log s`` apart: shift invariant).

Bytes (bf16): 2 (read) + 2 (write) per element when the re-read of sweep 2 hits L2, up to 6
when it goes back to HBM. ``row_rev`` marks sweep 1's loads ``evict_last`` and runs sweep 2
over the blocks in reverse order (the most recently loaded, most likely still cached, first)
with ``evict_first`` loads and stores, to raise the L2 hit rate of long rows
(``kernels/README.md``). Ignored rows are written as zeros without being read.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._common import (
    SPAN_ANSWER,
    SPAN_IGNORED,
    configs,
    launch,
    online_norm,
    row_offset,
    x_strides,
    zero_cols,
)

CONFIGS = [(4096, 4, 2), (8192, 8, 2), (16384, 16, 2), (32768, 16, 1)]
DEFAULT = (16384, 16, 2)


@triton.jit
def _fused_row_kernel(
    X,  # logits, [B, T, V] with strides (sxb, sxt, sxv)
    sxb,
    sxt,
    sxv,
    T,
    V,
    IDS,  # [N] int64 token ids
    SPAN,  # [N] int8 span codes (kernels.layout)
    G,  # [N] fp32 dL/dlogp per token (known before the kernel; 0 at ignored rows)
    M_IN,  # [N] fp32 row maximum of the answer rows already scored (HAS_LSE_IN)
    LOGS_IN,  # [N] fp32 their log s
    inv_temp,
    LOGP,  # [N] fp32 out (not written for rows whose lse came in)
    ENT,  # [N] fp32 out (WITH_ENT)
    DX,  # gradient out, strides (sdb, sdt, sdv); may alias X (in place)
    sdb,
    sdt,
    sdv,
    HAS_LSE_IN: tl.constexpr,
    WITH_ENT: tl.constexpr,
    REVERSE: tl.constexpr,  # row_rev: eviction hints and a reversed second sweep
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    dx_row = DX + row_offset(row, T, sdb, sdt)
    code = tl.load(SPAN + row)
    if code == SPAN_IGNORED:
        zero_cols(dx_row, sdv, 0, V, BLOCK_V)
        return
    x_row = X + row_offset(row, T, sxb, sxt)
    tok = tl.load(IDS + row)
    known = code == -1  # False, as a tensor
    if HAS_LSE_IN:
        known = code == SPAN_ANSWER
    if known:
        m = tl.load(M_IN + row)
        log_s = tl.load(LOGS_IN + row)
    else:
        m, log_s, ent = online_norm(x_row, sxv, V, inv_temp, WITH_ENT, REVERSE, BLOCK_V)
        x_t = tl.load(x_row + tok * sxv).to(tl.float32) * inv_temp
        tl.store(LOGP + row, (x_t - m) - log_s)
        if WITH_ENT:
            tl.store(ENT + row, ent)
    g = tl.load(G + row) * inv_temp
    nblk = (V + BLOCK_V - 1) // BLOCK_V
    for i in range(0, nblk):
        if REVERSE:
            start = (nblk - 1 - i) * BLOCK_V
        else:
            start = i * BLOCK_V
        cols = start + tl.arange(0, BLOCK_V)
        msk = cols < V
        src = x_row + cols.to(tl.int64) * sxv
        dst = dx_row + cols.to(tl.int64) * sdv
        if REVERSE:
            u = tl.load(src, mask=msk, other=-float("inf"), eviction_policy="evict_first")
        else:
            u = tl.load(src, mask=msk, other=-float("inf"))
        p = tl.exp((u.to(tl.float32) * inv_temp - m) - log_s)
        grad = (g * (tl.where(cols == tok, 1.0, 0.0) - p)).to(DX.dtype.element_ty)
        if REVERSE:
            tl.store(dst, grad, mask=msk, eviction_policy="evict_first")
        else:
            tl.store(dst, grad, mask=msk)


_TUNED: list = []


def _tuned():
    if not _TUNED:
        key = ["V", "HAS_LSE_IN", "WITH_ENT", "REVERSE"]
        _TUNED.append(triton.autotune(configs(CONFIGS), key=key)(_fused_row_kernel))
    return _TUNED[0]


def launch_fused_row(x3, ids, span, g_tok, norm_in, inv_temp, logp, ent, out3, *, with_entropy,
              reverse=False, block_v=None):  # fmt: skip
    """Launch the one-program-per-row fused kernel (``reverse``: the ``row_rev`` variant).

    Writes ``logp``/``ent`` ([N] fp32, preallocated) and the gradient into ``out3`` (may alias
    ``x3``). ``norm_in``: [2, N] fp32 (row maximum, log s) or None (answer rows already
    scored).
    """
    B, T, V = x3.shape
    N = B * T
    inplace = out3.data_ptr() == x3.data_ptr()
    has_lse_in = norm_in is not None
    m_in, logs_in = (norm_in[0], norm_in[1]) if has_lse_in else (g_tok, g_tok)
    args = (x3, *x_strides(x3), T, V, ids, span, g_tok, m_in, logs_in,
            float(inv_temp), logp, ent, out3, *x_strides(out3))  # fmt: skip
    kw = {"HAS_LSE_IN": has_lse_in, "WITH_ENT": bool(with_entropy), "REVERSE": bool(reverse)}
    launch(_fused_row_kernel, _tuned, DEFAULT, lambda bv: N, args, kw, block_v, tune=not inplace)


__all__ = ["launch_fused_row"]
