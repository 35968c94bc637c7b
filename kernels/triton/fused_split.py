"""Fused forward + gradient with several programs per row: ``split``, ``split_2pass``, ``multi``.

For large vocabularies (V = 151936: rows of 304 KB in bf16) a row is too long to stay in L2
between the two sweeps of the one-program-per-row kernel. Here each row is cut into ``P``
column ranges, one program per range, and the row's logsumexp is assembled from the ranges'
partial statistics by a two-stage logsumexp:

    partial of range j:   m_j = max u,   s_j = sum exp(u - m_j),
                          t_j = sum exp(u - m_j) (u - m_j)
    row:                  M = max_j m_j, w_j = exp(m_j - M), S = sum_j s_j w_j,
                          H = log S - sum_j w_j (t_j + s_j (m_j - M)) / S,
                          logp = (u[id] - M) - log S,   p_v = exp((u_v - M) - log S)

(every quantity on values shifted by a maximum, M and log S kept apart: the rounding error does
not grow with the size of the logits).

The combine runs over the P partials in the same order in every program of the row, so all of
them (and every launch) see the same bits. Three variants (``kernels/README.md``):

* ``split`` (``HOLD``, ``PHASE = 0``): ``P = cdiv(V, BLOCK_V)`` chunks; a program loads its
  chunk into registers once, publishes its partial, waits for its row's siblings, combines,
  and writes its chunk's gradient from the registers it still holds: every logits byte read
  from HBM once, every gradient byte written once (4 bytes/element), independent of L2.
* ``split_2pass`` (``HOLD``, ``PHASE = 1`` then ``PHASE = 2``): the same chunks in two
  launches (publish partials; combine and write), no waiting; the second launch re-reads
  the chunk (6 bytes/element unless it hits L2). Same bits as ``split``.
* ``multi`` (``PHASE = 0``, not ``HOLD``): ``P`` = 2..8 programs per row, each making the
  row kernel's two sweeps over its own column range (V / P columns: short enough to stay in
  L2 between the sweeps), with one exchange of partials in the middle.

Waiting is safe by construction. In a cooperative launch a program takes its (row, range)
from an atomic ticket, so tickets are handed out in the order programs start: every row whose
last ticket has been taken has all its programs running, and only the newest row can wait for
programs not yet started, which can always start while P programs fit on the GPU at once
(``multi``: P <= 8; ``split``: the launcher requires P <= the number of SMs, else it runs
``split_2pass``). The wait is still bounded (``MAX_SPIN`` polls) so that nothing can hang:
a program that times out counts itself in ``ERR`` and recomputes every partial of its row from
the logits with the same code and combine order, which gives the same bits. In place (the
gradient overwrites the logits) that recomputation is impossible, so the launcher turns a
nonzero ``ERR`` into an error. Under the interpreter, which runs programs one after another,
every program but the last of a row times out: CI exercises the recomputation.

Memory ordering: partials are stored, then ``debug_barrier`` (bar.sync) and a gpu-scope
``release`` atomic on the row's arrival counter; waiters poll with gpu-scope ``acquire``
atomics and read the partials with ``volatile`` loads (no stale L1 line).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (
    INTERPRET,
    INTERPRET_BLOCK_V,
    SPAN_ANSWER,
    SPAN_IGNORED,
    autotune_enabled,
    block_stats,
    pow2,
    range_stats,
    row_offset,
    vmax,
    vsum,
    zero_cols,
)

#: split: ``(BLOCK_V, num_warps, num_stages)``; the chunk is held in registers, so it must stay
#: at <= ~32 fp32 registers per thread (BLOCK_V <= 32 * 32 * num_warps)
SPLIT_CONFIGS = [(2048, 4, 1), (4096, 4, 1), (4096, 8, 1), (8192, 16, 1)]
SPLIT_DEFAULT = (4096, 8, 1)
#: multi: blocks of each range's sweeps (the row kernel's best widths, kernels/README.md)
MULTI_CONFIGS = [(4096, 4, 2), (8192, 8, 2), (16384, 16, 2)]
MULTI_DEFAULT = (8192, 8, 2)
#: bound of the wait (GPU polls of an L2-resident counter, ~0.5-1 us each: a few ms, orders of
#: magnitude above a legitimate wait, which is one sibling's range load)
GPU_MAX_SPIN = 1 << 13
#: bound of the in-place wait (seconds): in place a timeout is an error, not a fallback
INPLACE_MAX_SPIN = 1 << 24
#: compile options of every launch of ``_fused_split_kernel``. FMA contraction is off: LLVM
#: fuses ``u * inv_temp - m`` into one ``fma.rn.f32`` only when the multiply and the subtract
#: sit in one basic block, which holds in the timeout recomputation and the PHASE 1 publish but
#: not in ``split``'s main path (the chunk is scaled before the branch), so with contraction the
#: paths round differently at temperature != 1. Without it every path computes the partials
#: with the same separately rounded ``mul.f32`` / ``sub.f32`` (the kernel is memory bound: the
#: extra instruction per element costs nothing measurable).
LAUNCH_OPTIONS = {"enable_fp_fusion": False}
#: largest grid (CUDA's grid x limit; also keeps the int32 ticket exact)
MAX_GRID = 2**31 - 1
#: columns per program that ``programs_per_row`` aims at for ``multi`` (64 KiB of bf16)
MULTI_TARGET_COLS = 32768


def programs_per_row(V: int) -> int:
    """``multi``'s programs per row: ``cdiv(V, MULTI_TARGET_COLS)`` clamped to [2, 8]."""
    return min(8, max(2, -(-int(V) // MULTI_TARGET_COLS)))


@triton.jit
def _combine(pm, ps, pt, WITH_ENT: tl.constexpr):
    """Two-stage logsumexp of the partials ``(m_j, s_j, t_j)``: ``(M, log S, H)`` (module
    docstring; ``M`` is 0 for an all -inf row)."""
    M = vmax(pm)
    M_safe = tl.where(M == -float("inf"), 0.0, M)
    w = tl.exp(pm - M_safe)
    S = vsum(ps * w)
    log_s = tl.log(S)
    ent = log_s
    if WITH_ENT:
        moved = tl.where(ps > 0, pt + ps * (pm - M_safe), 0.0)
        ent = log_s - vsum(w * moved) / S
    return M_safe, log_s, ent


@triton.jit
def _partial(x_row, sxv, j, CHUNK, V, inv_temp, WITH_ENT: tl.constexpr, HOLD: tl.constexpr,
             BLOCK_V: tl.constexpr):  # fmt: skip
    """Partial ``(m, s, t)`` of column range j, exactly as its own program computes it."""
    lo = j * CHUNK
    if HOLD:
        cols = lo + tl.arange(0, BLOCK_V)
        u = tl.load(x_row + cols.to(tl.int64) * sxv, mask=cols < V, other=-float("inf"))
        m, s, t = block_stats(u.to(tl.float32) * inv_temp, WITH_ENT)
    else:
        m, s, t = range_stats(x_row, sxv, lo, tl.minimum(lo + CHUNK, V), inv_temp, WITH_ENT,
                              False, BLOCK_V)  # fmt: skip
    return m, s, t


@triton.jit
def _fused_split_kernel(
    X,  # logits, [B, T, V] with strides (sxb, sxt, sxv)
    sxb,
    sxt,
    sxv,
    T,
    V,
    IDS,  # [N] int64 token ids
    SPAN,  # [N] int8 span codes (kernels.layout)
    G,  # [N] fp32 dL/dlogp per token
    M_IN,  # [N] fp32 row maximum of the answer rows already scored (HAS_LSE_IN)
    LOGS_IN,  # [N] fp32 their log s
    inv_temp,
    LOGP,  # [N] fp32 out
    ENT,  # [N] fp32 out (WITH_ENT)
    DX,  # gradient out, strides (sdb, sdt, sdv); may alias X (in place)
    sdb,
    sdt,
    sdv,
    PART,  # [N, PSTRIDE] fp32 scratch: range j's (m, s, t) at 3j + {0, 1, 2}; the row's
    #        target logit at PSTRIDE - 1 (PHASE 1 -> 2)
    PSTRIDE,  # row stride of PART (>= 3 * P + 1)
    NPROG_ARG,  # P, programs per row (multi; split derives P = cdiv(V, BLOCK_V))
    CNT,  # [N] int32 arrival counters, zeroed before the launch (PHASE 0)
    TICKET,  # [1] int32 ticket counter, zeroed before the launch (PHASE 0)
    ERR,  # [1] int32, incremented by every program whose wait timed out
    MAX_SPIN,  # bound of the polling loop
    PHASE: tl.constexpr,  # 0: cooperative single launch; 1: publish partials; 2: finish
    HOLD: tl.constexpr,  # one BLOCK_V chunk per program, kept in registers (split)
    INPLACE: tl.constexpr,  # DX aliases X: a timed-out wait cannot re-read the row
    HAS_LSE_IN: tl.constexpr,
    WITH_ENT: tl.constexpr,
    BLOCK_V: tl.constexpr,
    NPROG_P2: tl.constexpr,  # next power of two >= P
):
    if HOLD:
        NPROG = (V + BLOCK_V - 1) // BLOCK_V
        CHUNK = BLOCK_V
    else:
        NPROG = NPROG_ARG
        CHUNK = ((V + NPROG - 1) // NPROG + BLOCK_V - 1) // BLOCK_V * BLOCK_V
    if PHASE == 0:
        vid = tl.atomic_add(TICKET, 1).to(tl.int64)  # start order, see the module docstring
    else:
        vid = tl.program_id(0).to(tl.int64)
    row = vid // NPROG
    c = vid - row * NPROG
    lo = c * CHUNK
    hi = tl.minimum(lo + CHUNK, V)
    dx_row = DX + row_offset(row, T, sdb, sdt)
    code = tl.load(SPAN + row)
    if code == SPAN_IGNORED:
        if PHASE != 1:
            zero_cols(dx_row, sdv, lo, hi, BLOCK_V)
        return
    known = code == -1  # False, as a tensor
    if HAS_LSE_IN:
        known = code == SPAN_ANSWER
    x_row = X + row_offset(row, T, sxb, sxt)
    part = PART + row * PSTRIDE
    tok = tl.load(IDS + row)
    # the target logit is read before this program arrives, hence before any sibling may
    # overwrite the row with its gradient (in place)
    x_t = 0.0
    if c == 0:
        if PHASE == 2:
            x_t = tl.load(part + PSTRIDE - 1)
        else:
            x_t = tl.load(x_row + tok * sxv).to(tl.float32) * inv_temp
            if PHASE == 1:
                tl.store(part + PSTRIDE - 1, x_t)
    cols = lo + tl.arange(0, BLOCK_V)
    u = tl.full((BLOCK_V,), 0.0, tl.float32)
    if HOLD:  # the chunk stays in registers from here until its gradient is written
        u = tl.load(x_row + cols.to(tl.int64) * sxv, mask=cols < V, other=-float("inf"))
        u = u.to(tl.float32) * inv_temp
    if PHASE != 2:
        if known == 0:
            if HOLD:
                m_c, s_c, t_c = block_stats(u, WITH_ENT)
            else:
                m_c, s_c, t_c = range_stats(x_row, sxv, lo, hi, inv_temp, WITH_ENT, False,
                                            BLOCK_V)  # fmt: skip
            tl.store(part + 3 * c, m_c)
            tl.store(part + 3 * c + 1, s_c)
            tl.store(part + 3 * c + 2, t_c)
            if PHASE == 0:
                tl.debug_barrier()
                tl.atomic_add(CNT + row, 1, sem="release")
    if PHASE != 1:
        if known:
            m_row = tl.load(M_IN + row)
            log_s = tl.load(LOGS_IN + row)
        else:
            arrived = NPROG
            if PHASE == 0:
                arrived = tl.atomic_add(CNT + row, 0, sem="acquire")
                spins = 0
                while (arrived < NPROG) & (spins < MAX_SPIN):
                    arrived = tl.atomic_add(CNT + row, 0, sem="acquire")
                    spins += 1
            j = tl.arange(0, NPROG_P2)
            jm = j < NPROG
            if arrived >= NPROG:
                pm = tl.load(part + 3 * j, mask=jm, other=-float("inf"), volatile=True)
                ps = tl.load(part + 3 * j + 1, mask=jm, other=0.0, volatile=True)
                pt = tl.load(part + 3 * j + 2, mask=jm, other=0.0, volatile=True)
            else:
                # timed out: count it, then recompute every partial of the row with the same
                # code (same bits). In place the row may already hold gradient: the launcher
                # raises on ERR != 0 instead of returning these values.
                tl.atomic_add(ERR, 1)
                pm = tl.full((NPROG_P2,), -float("inf"), tl.float32)
                ps = tl.full((NPROG_P2,), 0.0, tl.float32)
                pt = tl.full((NPROG_P2,), 0.0, tl.float32)
                for k in range(0, NPROG):
                    m_k, s_k, t_k = _partial(x_row, sxv, k, CHUNK, V, inv_temp, WITH_ENT, HOLD,
                                             BLOCK_V)  # fmt: skip
                    pm = tl.where(j == k, m_k, pm)
                    ps = tl.where(j == k, s_k, ps)
                    pt = tl.where(j == k, t_k, pt)
            m_row, log_s, ent = _combine(pm, ps, pt, WITH_ENT)
            if c == 0:
                tl.store(LOGP + row, (x_t - m_row) - log_s)
                if WITH_ENT:
                    tl.store(ENT + row, ent)
        g = tl.load(G + row) * inv_temp
        if HOLD:
            p = tl.exp((u - m_row) - log_s)
            grad = g * (tl.where(cols == tok, 1.0, 0.0) - p)
            tl.store(dx_row + cols.to(tl.int64) * sdv, grad.to(DX.dtype.element_ty),
                     mask=cols < V)  # fmt: skip
        else:
            for start in range(lo, hi, BLOCK_V):
                cc = start + tl.arange(0, BLOCK_V)
                msk = cc < hi
                x = tl.load(x_row + cc.to(tl.int64) * sxv, mask=msk, other=-float("inf"))
                p = tl.exp((x.to(tl.float32) * inv_temp - m_row) - log_s)
                grad = g * (tl.where(cc == tok, 1.0, 0.0) - p)
                tl.store(dx_row + cc.to(tl.int64) * sdv, grad.to(DX.dtype.element_ty),
                         mask=msk)  # fmt: skip


_SM_COUNT: dict = {}


def _sm_count(dev) -> int:
    idx = dev.index if dev.index is not None else torch.cuda.current_device()
    if idx not in _SM_COUNT:
        _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SM_COUNT[idx]


_TUNED: dict = {}


def _tuned(V, hold, P):
    """Autotuned kernel whose configs carry ``NPROG_P2`` (split: it depends on BLOCK_V; multi:
    on the programs per row ``P``)."""
    key = (V, hold, P)
    if key not in _TUNED:
        table = SPLIT_CONFIGS if hold else MULTI_CONFIGS
        p2 = (lambda b: pow2(triton.cdiv(V, b))) if hold else (lambda b: pow2(P))
        cfgs = [
            triton.Config({"BLOCK_V": b, "NPROG_P2": p2(b)}, num_warps=w, num_stages=st)
            for b, w, st in table
        ]
        _TUNED[key] = triton.autotune(
            cfgs,
            key=["V", "NPROG_ARG", "HAS_LSE_IN", "WITH_ENT", "PHASE", "HOLD", "INPLACE"],
            reset_to_zero=["CNT", "TICKET"],
        )(_fused_split_kernel)
    return _TUNED[key]


def split_blocks(V, block_v=None):
    """The chunk width ``split`` uses for ``V`` when not autotuned (and in the interpreter)."""
    if block_v is not None:
        return block_v
    return INTERPRET_BLOCK_V if INTERPRET else SPLIT_DEFAULT[0]


def split_max_chunks(V: int, block_v=None) -> int:
    """Most chunks per row ``split`` may use at vocabulary ``V``: ``cdiv(V, width)`` for a fixed
    width (``block_v``, the interpreter's), else for the narrowest autotuned width."""
    if block_v is not None or INTERPRET:
        return triton.cdiv(V, split_blocks(V, block_v))
    return triton.cdiv(V, min(b for b, _, _ in SPLIT_CONFIGS))


def split_falls_back(V: int, n_sm, block_v=None) -> bool:
    """True when ``split`` runs as ``split_2pass``: on a GPU with ``n_sm`` SMs (None: not a GPU,
    never) a row may have more chunks (:func:`split_max_chunks`) than SMs, so its programs
    might not all be resident at once and the cooperative wait could not be guaranteed."""
    return n_sm is not None and split_max_chunks(V, block_v) > int(n_sm)


def launch_fused_split(x3, ids, span, g_tok, norm_in, inv_temp, logp, ent, out3, err, *,
                       with_entropy, variant, block_v=None, nprog=None,
                       max_spin=None):  # fmt: skip
    """Launch ``split`` / ``split_2pass`` / ``multi`` (see the module docstring).

    Writes ``logp``/``ent`` ([N] fp32, preallocated), the gradient into ``out3`` (may alias
    ``x3``) and the number of timed-out waits into ``err`` ([1] int32, zeroed by the caller).
    ``nprog``: multi's programs per row (default :func:`programs_per_row`); ``max_spin``: bound
    of the wait (tests). Returns the variant actually run: ``split`` becomes ``split_2pass``
    when a row's chunks could not all be resident at once (more chunks than SMs).
    """
    B, T, V = x3.shape
    N = B * T
    dev = x3.device
    inplace = out3.data_ptr() == x3.data_ptr()
    hold = variant != "multi"
    if hold:
        nmax = split_max_chunks(V, block_v)
        P = 0  # derived in the kernel from BLOCK_V
    else:
        P = int(nprog) if nprog is not None else programs_per_row(V)
        if not 1 <= P <= 64:
            raise ValueError(f"nprog must be in [1, 64], got {P}")
        nmax = P
    coop = variant in ("split", "multi")
    if variant == "split" and split_falls_back(V, _sm_count(dev) if dev.type == "cuda" else None,
                                               block_v):  # fmt: skip
        coop = False  # a row's chunks might not all be resident at once: two launches
        variant = "split_2pass"
    if coop and INTERPRET and inplace:
        # the interpreter runs programs one after another: a cooperative wait can only time
        # out, which in place is an error; two launches compute the same bits
        coop = False
    pstride = 3 * nmax + 1
    part = torch.empty((N, pstride), dtype=torch.float32, device=dev)
    cnt = torch.zeros(N, dtype=torch.int32, device=dev)
    ticket = torch.zeros(1, dtype=torch.int32, device=dev)
    if max_spin is None:
        max_spin = 2 if INTERPRET else (INPLACE_MAX_SPIN if inplace else GPU_MAX_SPIN)
    has_lse_in = norm_in is not None
    m_in, logs_in = (norm_in[0], norm_in[1]) if has_lse_in else (g_tok, g_tok)
    common = (x3, x3.stride(0), x3.stride(1), x3.stride(2), T, V, ids, span, g_tok,
              m_in, logs_in, float(inv_temp), logp, ent, out3,
              out3.stride(0), out3.stride(1), out3.stride(2), part, pstride, P, cnt, ticket, err,
              int(max_spin))  # fmt: skip
    flags = {"HOLD": hold, "HAS_LSE_IN": has_lse_in, "WITH_ENT": bool(with_entropy)}
    # the two-launch form must use one block width for both launches: never tuned
    fixed = INTERPRET or block_v is not None or inplace or not coop or not autotune_enabled()

    def grid_for(bv):
        return N * (triton.cdiv(V, bv) if hold else P)

    def run(phase):
        kw = dict(flags, **LAUNCH_OPTIONS, PHASE=phase, INPLACE=bool(inplace) and phase == 0)
        if fixed:
            default = SPLIT_DEFAULT if hold else MULTI_DEFAULT
            bv, warps, stages = (block_v, min(16, max(1, block_v // 512)), 1) \
                if block_v is not None else default
            if INTERPRET:
                bv = block_v or INTERPRET_BLOCK_V
                warps, stages = 1, 1
            ns = triton.cdiv(V, bv) if hold else P
            if grid_for(bv) > MAX_GRID:
                raise ValueError(f"{variant}: grid of {grid_for(bv)} programs exceeds {MAX_GRID}")
            ticket.zero_()
            _fused_split_kernel[(grid_for(bv),)](*common, **kw, BLOCK_V=bv, NPROG_P2=pow2(ns),
                                                 num_warps=warps, num_stages=stages)  # fmt: skip
        else:
            k = _tuned(V, hold, P)
            cached = len(getattr(k, "cache", {}))
            ticket.zero_()
            k[lambda meta: (grid_for(meta["BLOCK_V"]),)](*common, **kw)
            if len(getattr(k, "cache", {})) != cached:
                # first call for this key: the autotuner ran the kernel several times, leaving
                # the counters dirty on Triton versions that do not reset them after tuning;
                # relaunch from clean counters (out-of-place launches are idempotent)
                cnt.zero_()
                ticket.zero_()
                err.zero_()
                k[lambda meta: (grid_for(meta["BLOCK_V"]),)](*common, **kw)

    if coop:
        run(0)
        if inplace:
            # no same-bits recomputation in place: a timed-out wait is an error (a device-side
            # assert on the GPU: no host sync; a RuntimeError under the interpreter)
            torch._assert_async(err[0] == 0, f"{variant}: in-place cooperative wait timed out")
    else:
        run(1)
        run(2)
    return variant
