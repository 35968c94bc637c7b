"""Forward kernel: per-row log-prob, logsumexp and entropy (one program per row).

Per row (``u = z / tau``): an online logsumexp over V in blocks of ``BLOCK_V`` (running max
``m``, running ``s = sum exp(u - m)``, and for the entropy ``t = sum exp(u - m) (u - m)``),
then ``logp = (u[id] - m) - log s`` and ``H = log s - t / s``: shift invariant, ``m`` and
``log s`` are stored apart (``norm [2, N]``, see :mod:`kernels.reference`). Reads the row
once: 2 bytes per element for bf16 logits, the floor for a forward pass (``kernels/README.md``).
"""

from __future__ import annotations

import torch
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
)

#: autotune candidates ``(BLOCK_V, num_warps, num_stages)``, keyed on V and the flags, never on
#: N (a row's result must not depend on the batch it is in)
CONFIGS = [(2048, 1, 4), (4096, 2, 4), (4096, 4, 2), (8192, 8, 2), (16384, 16, 2)]
DEFAULT = (4096, 4, 2)

#: which rows ``forward_rows`` computes
SELECT_ALL, SELECT_ACTIVE, SELECT_ANSWER = 0, 1, 2


@triton.jit
def _fwd_kernel(
    X,  # logits base pointer, [B, T, V] with strides (sxb, sxt, sxv)
    sxb,
    sxt,
    sxv,
    T,  # rows per batch entry (N for 2-D logits)
    V,  # vocabulary size
    IDS,  # [N] int64 token ids in [0, V)
    SPAN,  # [N] int8 span codes (read only when SELECT != 0)
    inv_temp,  # 1 / temperature (fp32)
    LOGP,  # [N] fp32 out (rows not selected are left untouched: zero-initialised)
    ROWMAX,  # [N] fp32 out: the row maximum m (norm[0])
    LOGS,  # [N] fp32 out: log s = log sum exp(u - m) (norm[1])
    ENT,  # [N] fp32 out (only when WITH_ENT)
    SELECT: tl.constexpr,  # 0: every row; 1: rows not ignored; 2: answer rows
    WITH_ENT: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    if SELECT == 1:
        if tl.load(SPAN + row) == SPAN_IGNORED:
            return
    if SELECT == 2:
        if tl.load(SPAN + row) != SPAN_ANSWER:
            return
    x_row = X + row_offset(row, T, sxb, sxt)
    m, log_s, ent = online_norm(x_row, sxv, V, inv_temp, WITH_ENT, False, BLOCK_V)
    tok = tl.load(IDS + row)
    x_t = tl.load(x_row + tok * sxv).to(tl.float32) * inv_temp
    tl.store(LOGP + row, (x_t - m) - log_s)
    tl.store(ROWMAX + row, m)
    tl.store(LOGS + row, log_s)
    if WITH_ENT:
        tl.store(ENT + row, ent)


_TUNED: list = []


def _tuned():
    if not _TUNED:
        key = ["V", "SELECT", "WITH_ENT"]
        _TUNED.append(triton.autotune(configs(CONFIGS), key=key)(_fwd_kernel))
    return _TUNED[0]


def forward_rows(x3, ids, inv_temp, with_entropy, span=None, select=SELECT_ALL, block_v=None):
    """``(logp [N], norm [2, N], entropy [N] or None)`` in fp32; rows not selected get 0.

    ``x3``: logits ``[B, T, V]`` (any strides); ``ids``: ``[N]`` int64 in [0, V); ``span``:
    ``[N]`` int8 codes (needed when ``select`` is ``SELECT_ACTIVE`` or ``SELECT_ANSWER``);
    ``block_v``: fixed block width (no autotuning).
    """
    B, T, V = x3.shape
    N = B * T
    dev = x3.device
    logp = torch.zeros(N, dtype=torch.float32, device=dev)
    norm = torch.zeros(2, N, dtype=torch.float32, device=dev)
    ent = torch.zeros(N, dtype=torch.float32, device=dev) if with_entropy else logp
    if N == 0:
        return logp, norm, (ent if with_entropy else None)
    span_arg = span if span is not None else ids
    args = (x3, *x_strides(x3), T, V, ids, span_arg, float(inv_temp), logp, norm[0], norm[1], ent)
    kw = {"SELECT": int(select), "WITH_ENT": bool(with_entropy)}
    launch(_fwd_kernel, _tuned, DEFAULT, lambda bv: N, args, kw, block_v, tune=True)
    return logp, norm, (ent if with_entropy else None)
