"""Triton kernels: per-row log-prob / logsumexp / entropy, gradient, fused forward+backward.

Imported lazily (only when a Triton path is used), because whether ``@triton.jit`` builds a
compiled or an interpreted kernel is decided when this module is imported: set
``TRITON_INTERPRET=1`` before the first Triton call to run these kernels on CPU tensors.

Notation: ``z`` the logits row (length V), ``tau`` the temperature, ``u = z / tau``, ``p`` the
softmax of ``u``, ``id`` the row's token. All arithmetic is fp32 whatever the logits' dtype.

* ``_fwd_kernel`` (one program per row): online logsumexp over V in blocks of ``BLOCK_V``
  (running max ``m``, running ``s = sum exp(u - m)``, and for the entropy
  ``t = sum exp(u - m) * u``), then ``logp = u[id] - lse``, ``H = lse - t / s``.
  Reads the row once: 2 bytes/element for bf16.
* ``_bwd_kernel`` (one program per row): ``dz = (g (onehot - p) - e p (u - lse + H)) / tau``
  from the saved ``lse`` and ``H``; rows with ``g = e = 0`` are written as zeros without being
  read. Reads once, writes once: 4 bytes/element (6 with the forward).
* ``_fused_row_kernel`` (one program per row): when the per-token coefficient ``g`` is known
  before the kernel, sweep 1 computes ``lse`` (and ``logp``, ``H``), sweep 2 re-reads the row
  (from L2 while it is hot) and writes ``dz = g (onehot - p) / tau``. 4 bytes/element when the
  re-read hits L2, which it mostly does for V ~ 32k (kernel.md's probe: 0.74x Liger).
* ``_fused_split_kernel``: the design for large vocabularies (V = 151936, rows of 304 KB that
  do not stay in L2 between two sweeps). Each row is split into ``NSPLIT = cdiv(V, BLOCK_V)``
  chunks, one program per chunk. A program loads its chunk into registers once, publishes the
  chunk's partial ``(max, sum exp, sum exp*u)`` to a small scratch buffer, signals arrival on a
  per-row counter and waits until all ``NSPLIT`` siblings have arrived, combines the partials
  into the row's ``lse`` (a two-stage logsumexp, same order in every sibling), and writes the
  gradient of its chunk from the registers it still holds. Every logits byte is read from HBM
  exactly once and every gradient byte written once: the 4 bytes/element floor, independent of
  L2. Progress: with ``DYNAMIC_ID`` a program takes its chunk from an atomic ticket, so all
  tickets below the newest one belong to started programs; only the newest row can wait for
  unstarted siblings, and the kernel cannot deadlock while ``NSPLIT`` programs fit on the GPU
  at once (38 for V = 151936 and 4096-wide chunks). The launcher only makes a cooperative
  launch when ``NSPLIT`` <= the number of SMs (one resident program per SM is all that is
  assumed); otherwise it uses the two-launch variant below. The ticket costs one same-address
  atomic per program, so out-of-place launches use the hardware's program order instead
  (blocks are dispatched in index order in practice, not by contract) and rely on a bounded
  wait (``MAX_SPIN`` polls, a few ms): a program that times out recomputes its row's ``lse``
  with a full sweep (correct, slower, rounding-level different) and increments the ``ERR``
  counter. In-place launches cannot use that fallback (siblings may already have overwritten
  the row), so they always take tickets and wait with a much longer bound (seconds); should
  even that time out (a co-residency deadlock, which the ticket scheme and the SM guard rule
  out), the row's log-prob and gradient are NaN and ``ERR`` counts it: a loud failure instead
  of a hung GPU. In the interpreter (programs run one after another) the fallback is what
  runs for all but the last chunk of each row, so it is exercised in CI. The same kernel with
  ``PHASE = 1`` then ``PHASE = 2`` (two launches, no waiting) is the non-cooperative variant:
  the chunk is re-read by the second launch (6 bytes/element); it is also valid in place.
  Memory ordering: partials are stored, then ``debug_barrier`` (bar.sync) and a gpu-scope
  ``release`` atomic on the row's counter; waiters poll with gpu-scope ``acquire`` atomics
  (whose result Triton broadcasts through shared memory behind a barrier) and read the
  partials with ``volatile`` loads, so no stale L1 line is used.
  UNMEASURED: no GPU was available when this was written. Compiled offline for sm_90 (Triton
  3.9, ptxas), the split kernel needs ~100 registers/thread at 8192-wide chunks with 16 warps
  and ~170 at 4096/4 warps (one or a few CTAs per SM): whether enough bytes stay in flight to
  approach the floor is exactly what ``benchmarks/gpu_bench.py`` must measure; it times
  ``fused_row`` and ``fused_split`` side by side, and the autotuner picks the chunk width.
* ``_segsum_kernel`` (one program per sequence): per-sequence sums of the per-token log-probs
  over the rationale and the answer span, in blocks of ``SUM_BLOCK_T`` tokens aligned to the
  sequence's first token: bitwise independent of the rest of the batch.

All row offsets are computed in int64 (N*V > 2^31 is the common case); the grid is 1-D over
rows (or rows x chunks, or sequences), so no grid dimension limits the sequence length.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

#: block of tokens of the per-sequence sum (fixed: the sum order must not depend on the batch)
SUM_BLOCK_T = 256
#: block width used by the interpreter (small, so that CI exercises the multi-block loops)
INTERPRET_BLOCK_V = 32


# --------------------------------------------------------------------------------------------
# helpers (inlined into the kernels)
# --------------------------------------------------------------------------------------------
# The reductions are written with ``tl.reduce`` and local combine functions instead of
# ``tl.sum``/``tl.max`` (themselves ``@jit`` functions of triton.language.standard): same code
# when compiled, and the interpreter then works even when triton was imported before
# TRITON_INTERPRET was set (standard's functions would be compiled-mode objects).
@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _maxc(a, b):
    return tl.maximum(a, b)


@triton.jit
def _sum(x):
    return tl.reduce(x, 0, _add)


@triton.jit
def _max(x):
    return tl.reduce(x, 0, _maxc)


@triton.jit
def _row_offset(row, T, stride_b, stride_t):
    """int64 offset of flattened row ``row`` of a [B, T, V] tensor with strides (sb, st, .)."""
    b = row // T
    t = row - b * T
    return b * stride_b + t * stride_t


@triton.jit
def _zero_row(dx_row, stride_v, V, BLOCK_V: tl.constexpr):
    """Write a zero gradient over one row (ignored tokens, or a zero coefficient)."""
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        zero = tl.full((BLOCK_V,), 0.0, tl.float32).to(dx_row.dtype.element_ty)
        tl.store(dx_row + cols.to(tl.int64) * stride_v, zero, mask=cols < V)


@triton.jit
def _online_lse(x_row, stride_v, V, inv_temp, WITH_ENT: tl.constexpr, BLOCK_V: tl.constexpr):
    """One sweep over a row: returns (lse, entropy) of u = x * inv_temp (entropy 0 if unused)."""
    m = -float("inf")
    s = 0.0
    t = 0.0
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        msk = cols < V
        x = tl.load(x_row + cols.to(tl.int64) * stride_v, mask=msk, other=-float("inf"))
        u = x.to(tl.float32) * inv_temp
        m_new = tl.maximum(m, _max(u))
        m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)
        alpha = tl.exp(m - m_safe)
        e = tl.exp(u - m_safe)
        s = s * alpha + _sum(e)
        if WITH_ENT:
            t = t * alpha + _sum(e * tl.where(e > 0, u, 0.0))
        m = m_new
    lse = m + tl.log(s)
    ent = lse - t / s
    return lse, ent


# --------------------------------------------------------------------------------------------
# forward: logp, lse, entropy per row
# --------------------------------------------------------------------------------------------
@triton.jit
def _fwd_kernel(
    X,  # logits base pointer, [B, T, V] with strides (sxb, sxt, sxv)
    sxb,
    sxt,
    sxv,
    T,  # rows per batch entry (N for 2-D logits)
    V,  # vocabulary size
    IDS,  # [N] int64 token ids (0 at ignored rows)
    SPAN,  # [N] int8 span codes (read only when SELECT != 0)
    inv_temp,  # 1 / temperature (fp32)
    LOGP,  # [N] fp32 out
    LSE,  # [N] fp32 out
    ENT,  # [N] fp32 out (only when WITH_ENT)
    SELECT: tl.constexpr,  # 0: every row; 1: rows with span != 0; 2: rows with span == 2
    WITH_ENT: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    if SELECT == 1:
        if tl.load(SPAN + row) == 0:
            return
    if SELECT == 2:
        if tl.load(SPAN + row) != 2:
            return
    x_row = X + _row_offset(row, T, sxb, sxt)
    lse, ent = _online_lse(x_row, sxv, V, inv_temp, WITH_ENT, BLOCK_V)
    tok = tl.load(IDS + row)
    x_t = tl.load(x_row + tok * sxv).to(tl.float32) * inv_temp
    tl.store(LOGP + row, x_t - lse)
    tl.store(LSE + row, lse)
    if WITH_ENT:
        tl.store(ENT + row, ent)


# --------------------------------------------------------------------------------------------
# backward: dz = (g (onehot - p) - e p (u - lse + H)) / tau
# --------------------------------------------------------------------------------------------
@triton.jit
def _bwd_kernel(
    X,
    sxb,
    sxt,
    sxv,
    T,
    V,
    IDS,
    LSE,  # [N] fp32 saved logsumexp
    ENT,  # [N] fp32 saved entropy (WITH_ENT)
    G_LP,  # [N] fp32 dL/dlogp
    G_ENT,  # [N] fp32 dL/dH (WITH_ENT)
    inv_temp,
    DX,  # gradient out, [B, T, V] with strides (sdb, sdt, sdv); may alias X (in-place)
    sdb,
    sdt,
    sdv,
    WITH_ENT: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    dx_row = DX + _row_offset(row, T, sdb, sdt)
    g = tl.load(G_LP + row)
    ge = 0.0
    if WITH_ENT:
        ge = tl.load(G_ENT + row)
    if (g == 0.0) & (ge == 0.0):
        _zero_row(dx_row, sdv, V, BLOCK_V)
        return
    x_row = X + _row_offset(row, T, sxb, sxt)
    lse = tl.load(LSE + row)
    h = 0.0
    if WITH_ENT:
        h = tl.load(ENT + row)
    tok = tl.load(IDS + row)
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        msk = cols < V
        u = tl.load(x_row + cols.to(tl.int64) * sxv, mask=msk, other=-float("inf"))
        u = u.to(tl.float32) * inv_temp
        logp = u - lse
        p = tl.exp(logp)
        grad = g * (tl.where(cols == tok, 1.0, 0.0) - p)
        if WITH_ENT:
            grad -= ge * p * tl.where(p > 0, logp + h, 0.0)
        grad = grad * inv_temp
        tl.store(dx_row + cols.to(tl.int64) * sdv, grad.to(DX.dtype.element_ty), mask=msk)


# --------------------------------------------------------------------------------------------
# fused, one program per row, two sweeps (second sweep re-reads the row, hopefully from L2)
# --------------------------------------------------------------------------------------------
@triton.jit
def _fused_row_kernel(
    X,
    sxb,
    sxt,
    sxv,
    T,
    V,
    IDS,
    SPAN,  # [N] int8: 0 ignored (zero gradient, row not read), 1 rationale, 2 answer
    G,  # [N] fp32 dL/dlogp per token (known before the kernel)
    LSE_IN,  # [N] fp32 lse of answer rows already scored (HAS_LSE_IN)
    inv_temp,
    LOGP,  # [N] fp32 out (not written for rows whose lse came in)
    ENT,  # [N] fp32 out (WITH_ENT)
    DX,
    sdb,
    sdt,
    sdv,
    HAS_LSE_IN: tl.constexpr,
    WITH_ENT: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    dx_row = DX + _row_offset(row, T, sdb, sdt)
    code = tl.load(SPAN + row)
    if code == 0:
        _zero_row(dx_row, sdv, V, BLOCK_V)
        return
    x_row = X + _row_offset(row, T, sxb, sxt)
    tok = tl.load(IDS + row)
    known = code == -1  # False as a tensor
    if HAS_LSE_IN:
        known = code == 2
    if known:
        lse = tl.load(LSE_IN + row)
    else:
        lse, ent = _online_lse(x_row, sxv, V, inv_temp, WITH_ENT, BLOCK_V)
        x_t = tl.load(x_row + tok * sxv).to(tl.float32) * inv_temp
        tl.store(LOGP + row, x_t - lse)
        if WITH_ENT:
            tl.store(ENT + row, ent)
    g = tl.load(G + row) * inv_temp
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        msk = cols < V
        u = tl.load(x_row + cols.to(tl.int64) * sxv, mask=msk, other=-float("inf"))
        p = tl.exp(u.to(tl.float32) * inv_temp - lse)
        grad = g * (tl.where(cols == tok, 1.0, 0.0) - p)
        tl.store(dx_row + cols.to(tl.int64) * sdv, grad.to(DX.dtype.element_ty), mask=msk)


# --------------------------------------------------------------------------------------------
# fused, split rows: NSPLIT programs per row, two-stage lse, chunk kept in registers
# --------------------------------------------------------------------------------------------
@triton.jit
def _fused_split_kernel(
    X,
    sxb,
    sxt,
    sxv,
    T,
    V,
    IDS,
    SPAN,
    G,
    LSE_IN,
    inv_temp,
    LOGP,
    ENT,
    DX,
    sdb,
    sdt,
    sdv,
    PART,  # [N, PSTRIDE] fp32 scratch: chunk c's (max, sum exp, sum exp*u) at 3c + {0, 1, 2};
    #        the row's target logit at PSTRIDE - 1 (two-launch variant)
    PSTRIDE,  # row stride of PART (>= 3 * NSPLIT + 1)
    CNT,  # [N] int32 arrival counters, zeroed before the launch (PHASE 0)
    TICKET,  # [1] int32 ticket counter, zeroed before the launch (DYNAMIC_ID)
    ERR,  # [1] int32, incremented by every program whose wait timed out
    MAX_SPIN,  # bound on the polling loop
    PHASE: tl.constexpr,  # 0: cooperative single launch; 1: publish partials; 2: finish
    DYNAMIC_ID: tl.constexpr,
    INPLACE: tl.constexpr,  # DX aliases X: a timed-out wait cannot re-read the row (NaN out)
    HAS_LSE_IN: tl.constexpr,
    WITH_ENT: tl.constexpr,
    BLOCK_V: tl.constexpr,
    NSPLIT_P2: tl.constexpr,  # next power of two >= NSPLIT
):
    NSPLIT = (V + BLOCK_V - 1) // BLOCK_V
    if DYNAMIC_ID:
        vid = tl.atomic_add(TICKET, 1).to(tl.int64)
    else:
        vid = tl.program_id(0).to(tl.int64)
    row = vid // NSPLIT
    c = vid - row * NSPLIT
    cols = c * BLOCK_V + tl.arange(0, BLOCK_V)
    msk = cols < V
    dx_row = DX + _row_offset(row, T, sdb, sdt)
    code = tl.load(SPAN + row)
    if code == 0:
        if PHASE != 1:
            zero = tl.full((BLOCK_V,), 0.0, tl.float32)
            tl.store(dx_row + cols.to(tl.int64) * sdv, zero.to(DX.dtype.element_ty), mask=msk)
        return
    known = code == -1  # False as a tensor
    if HAS_LSE_IN:
        known = code == 2
    x_row = X + _row_offset(row, T, sxb, sxt)
    part = PART + row * PSTRIDE
    tok = tl.load(IDS + row)
    # the target logit is read before anyone may overwrite the row (in-place gradient)
    x_t = 0.0
    if c == 0:
        if PHASE == 2:
            x_t = tl.load(part + PSTRIDE - 1)
        else:
            x_t = tl.load(x_row + tok * sxv).to(tl.float32) * inv_temp
            if PHASE == 1:
                tl.store(part + PSTRIDE - 1, x_t)
    # the chunk stays in registers from here until its gradient is written
    u = tl.load(x_row + cols.to(tl.int64) * sxv, mask=msk, other=-float("inf"))
    u = u.to(tl.float32) * inv_temp
    if PHASE != 2:
        if known == 0:
            # stage 1: this chunk's partial statistics
            m_c = _max(u)
            m_safe = tl.where(m_c == -float("inf"), 0.0, m_c)
            e = tl.exp(u - m_safe)
            s_c = _sum(e)
            t_c = 0.0
            if WITH_ENT:
                t_c = _sum(e * tl.where(e > 0, u, 0.0))
            tl.store(part + 3 * c, m_c)
            tl.store(part + 3 * c + 1, s_c)
            tl.store(part + 3 * c + 2, t_c)
            if PHASE == 0:
                tl.debug_barrier()
                tl.atomic_add(CNT + row, 1, sem="release")
    if PHASE != 1:
        ent = 0.0
        if known:
            lse = tl.load(LSE_IN + row)
        else:
            arrived = NSPLIT
            if PHASE == 0:
                arrived = tl.atomic_add(CNT + row, 0, sem="acquire")
                spins = 0
                while (arrived < NSPLIT) & (spins < MAX_SPIN):
                    arrived = tl.atomic_add(CNT + row, 0, sem="acquire")
                    spins += 1
            if arrived >= NSPLIT:
                # stage 2: combine the NSPLIT partials (same order in every sibling)
                j = tl.arange(0, NSPLIT_P2)
                jm = j < NSPLIT
                pm = tl.load(part + 3 * j, mask=jm, other=-float("inf"), volatile=True)
                ps = tl.load(part + 3 * j + 1, mask=jm, other=0.0, volatile=True)
                M = _max(pm)
                M_safe = tl.where(M == -float("inf"), 0.0, M)
                w = tl.exp(pm - M_safe)
                S = _sum(ps * w)
                lse = M + tl.log(S)
                if WITH_ENT:
                    pt = tl.load(part + 3 * j + 2, mask=jm, other=0.0, volatile=True)
                    ent = lse - _sum(w * tl.where(w > 0, pt, 0.0)) / S
            else:
                # wait timed out: count it, then recompute the row's statistics with a full
                # sweep (correct, slower, not bitwise equal to the two-stage combine).
                tl.atomic_add(ERR, 1)
                if INPLACE:
                    # siblings may already have overwritten their chunks with gradient, so the
                    # row cannot be re-read: fail loudly (NaN log-prob and gradient) rather
                    # than hang or return a silently wrong gradient. The in-place bound is
                    # seconds long, so this only fires on a genuine co-residency deadlock.
                    lse = float("nan") + 0.0 * _max(u)
                    ent = lse
                else:
                    # (narrow blocks: this rare path must not add to the registers holding u)
                    lse, ent = _online_lse(x_row, sxv, V, inv_temp, WITH_ENT, 512)
            if c == 0:
                tl.store(LOGP + row, x_t - lse)
                if WITH_ENT:
                    tl.store(ENT + row, ent)
        g = tl.load(G + row) * inv_temp
        p = tl.exp(u - lse)
        grad = g * (tl.where(cols == tok, 1.0, 0.0) - p)
        tl.store(dx_row + cols.to(tl.int64) * sdv, grad.to(DX.dtype.element_ty), mask=msk)


# --------------------------------------------------------------------------------------------
# per-sequence span sums, fixed order
# --------------------------------------------------------------------------------------------
@triton.jit
def _segsum_kernel(VALS, SPAN, CU, OUT_Z, OUT_Y, BLOCK_T: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    start = tl.load(CU + b)
    end = tl.load(CU + b + 1)
    acc_z = 0.0
    acc_y = 0.0
    for s0 in range(start, end, BLOCK_T):
        idx = s0 + tl.arange(0, BLOCK_T)
        m = idx < end
        v = tl.load(VALS + idx, mask=m, other=0.0)
        code = tl.load(SPAN + idx, mask=m, other=0)
        acc_z += _sum(tl.where(code == 1, v, 0.0))
        acc_y += _sum(tl.where(code == 2, v, 0.0))
    tl.store(OUT_Z + b, acc_z)
    tl.store(OUT_Y + b, acc_y)


# --------------------------------------------------------------------------------------------
# launch configurations
# --------------------------------------------------------------------------------------------
def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


#: Autotune candidates (GPU only; keyed on V and the constexpr flags, never on N, so a row's
#: result does not depend on the batch it is in). Rationale: kernel.md's probe found wide
#: blocks with many warps best for the one-program-per-row fused kernel at V = 32000 (16384
#: wide, 16 warps), while Liger's forward uses 2048-wide blocks with one warp and many rows in
#: flight; the split kernel keeps one chunk per program in registers, so its chunk must stay
#: <= ~32 fp32 registers per thread (BLOCK_V <= 32 * 32 * num_warps).
_CFG_FWD = [(2048, 1, 4), (4096, 2, 4), (4096, 4, 2), (8192, 8, 2), (16384, 16, 2)]
_CFG_BWD = [(2048, 1, 4), (4096, 4, 2), (8192, 8, 2), (16384, 16, 2)]
_CFG_ROW = [(4096, 4, 2), (8192, 8, 2), (16384, 16, 2), (32768, 16, 1)]
_CFG_SPLIT = [(2048, 4, 1), (4096, 4, 1), (4096, 8, 1), (8192, 16, 1)]
#: untuned defaults (in-place launches, whose tuning would re-run the kernel on its own output)
_DEFAULT = {"fwd": (4096, 4, 2), "bwd": (4096, 4, 2), "row": (16384, 16, 2), "split": (4096, 8, 1)}
_SPLIT_MIN_BLOCK = min(b for b, _, _ in _CFG_SPLIT)
#: bound of the split kernel's wait (GPU polls of an L2-resident counter, ~0.5-1 us each, so
#: a few ms: orders of magnitude above a legitimate wait, which is one sibling's chunk load,
#: and small enough that a pathological dispatch order costs seconds, not minutes)
GPU_MAX_SPIN = 1 << 13
#: bound of the in-place wait (seconds): in place there is no correct fallback, so this only
#: turns a would-be hang into NaN outputs plus a nonzero timeout count
INPLACE_MAX_SPIN = 1 << 24
#: largest grid of the split kernel (CUDA's grid x limit; also keeps the int32 ticket exact)
_MAX_GRID = 2**31 - 1


def _configs(table):
    return [triton.Config({"BLOCK_V": b}, num_warps=w, num_stages=s) for b, w, s in table]


_TUNED: dict = {}


def _tuned(name):
    """The autotuned wrapper of a kernel (built on first use, GPU only)."""
    if name not in _TUNED:
        if name == "fwd":
            k = triton.autotune(_configs(_CFG_FWD), key=["V", "SELECT", "WITH_ENT"])(_fwd_kernel)
        elif name == "bwd":
            k = triton.autotune(_configs(_CFG_BWD), key=["V", "WITH_ENT"])(_bwd_kernel)
        elif name == "row":
            k = triton.autotune(_configs(_CFG_ROW), key=["V", "HAS_LSE_IN", "WITH_ENT"])(
                _fused_row_kernel
            )
        else:  # pragma: no cover
            raise KeyError(name)
        _TUNED[name] = k
    return _TUNED[name]


def autotune_enabled() -> bool:
    """Autotuning is on unless ``TSALLIS_TRITON_AUTOTUNE=0`` (then the fixed defaults run)."""
    return os.environ.get("TSALLIS_TRITON_AUTOTUNE", "1") not in ("0", "false", "False")


def _launch(name, kernel, grid_rows, args, kwargs, block_v, tune):
    """Launch ``kernel`` with an explicit block (interpreter, tests, in-place) or autotuned."""
    if INTERPRET or block_v is not None or not tune or not autotune_enabled():
        if block_v is None:
            block_v, warps, stages = (INTERPRET_BLOCK_V, 1, 1) if INTERPRET else _DEFAULT[name]
        else:
            warps, stages = (1, 1) if INTERPRET else (min(16, max(1, block_v // 1024)), 2)
        grid = (grid_rows(block_v),)
        kernel[grid](*args, **kwargs, BLOCK_V=block_v, num_warps=warps, num_stages=stages)
        return block_v
    _tuned(name)[lambda meta: (grid_rows(meta["BLOCK_V"]),)](*args, **kwargs)
    return None


def _x_strides(x3):
    return x3.stride(0), x3.stride(1), x3.stride(2)


# --------------------------------------------------------------------------------------------
# torch-facing launchers (same signatures as kernels.reference)
# --------------------------------------------------------------------------------------------
def forward_rows(x3, ids, inv_temp, with_entropy, span=None, select=0, block_v=None):
    """``(logp [N], lse [N], entropy [N] or None)`` in fp32; rows not selected get 0."""
    B, T, V = x3.shape
    N = B * T
    dev = x3.device
    logp = torch.zeros(N, dtype=torch.float32, device=dev)
    lse = torch.zeros(N, dtype=torch.float32, device=dev)
    ent = torch.zeros(N, dtype=torch.float32, device=dev) if with_entropy else lse
    if N == 0:
        return logp, lse, (ent if with_entropy else None)
    span_arg = span if span is not None else ids
    args = (x3, *_x_strides(x3), T, V, ids, span_arg, float(inv_temp), logp, lse, ent)
    kw = {"SELECT": select, "WITH_ENT": bool(with_entropy)}
    _launch("fwd", _fwd_kernel, lambda bv: N, args, kw, block_v, tune=True)
    return logp, lse, (ent if with_entropy else None)


def backward_rows(x3, ids, lse, ent, g_lp, g_ent, inv_temp, out3, block_v=None):
    """Write dL/dlogits into ``out3`` (may alias ``x3``: in-place)."""
    B, T, V = x3.shape
    N = B * T
    if N == 0:
        return out3
    with_ent = g_ent is not None
    g_lp = g_lp.to(torch.float32).contiguous()
    g_ent_arg = g_ent.to(torch.float32).contiguous() if with_ent else g_lp
    ent_arg = ent if (with_ent and ent is not None) else lse
    inplace = out3.data_ptr() == x3.data_ptr()
    args = (
        x3,
        *_x_strides(x3),
        T,
        V,
        ids,
        lse,
        ent_arg,
        g_lp,
        g_ent_arg,
        float(inv_temp),
        out3,
        *_x_strides(out3),
    )
    kw = {"WITH_ENT": with_ent}
    _launch("bwd", _bwd_kernel, lambda bv: N, args, kw, block_v, tune=not inplace)
    return out3


def fused_rows(
    x3,
    ids,
    span,
    g_tok,
    inv_temp,
    with_entropy,
    out3,
    lse_in=None,
    ent_in=None,
    variant="split",
    block_v=None,
    coop=None,
    dynamic_id=None,
    max_spin=None,
):
    """One visit per row: per-row logp (and entropy) and the gradient ``g (onehot - p) / tau``.

    ``g_tok [N]`` fp32 = dL/dlogp per token (0 at ignored rows). ``lse_in``/``ent_in``: values
    for the answer rows already scored (likelihood mode); those rows are not swept again.
    ``variant``: "row" (one program per row, two sweeps) or "split" (NSPLIT programs per row,
    two-stage lse, chunk kept in registers). ``coop``: for "split", one cooperative launch
    (default on GPU) or two launches (default in the interpreter, whose programs run one after
    another). Returns ``(logp [N], entropy [N] or None, err [1] int32)``; ``err`` is 1 when a
    cooperative wait timed out: the number of programs that timed out (out of place the results
    are still correct; in place the affected rows are NaN, see the module docstring).
    A split launch whose grid would exceed CUDA's limit falls back to "row".
    """
    B, T, V = x3.shape
    N = B * T
    dev = x3.device
    if variant == "split":
        min_block = block_v or (INTERPRET_BLOCK_V if INTERPRET else _SPLIT_MIN_BLOCK)
        if N * triton.cdiv(V, min_block) > _MAX_GRID:
            variant = "row"
    logp = torch.zeros(N, dtype=torch.float32, device=dev)
    ent = torch.zeros(N, dtype=torch.float32, device=dev) if with_entropy else logp
    err = torch.zeros(1, dtype=torch.int32, device=dev)
    if N == 0:
        return logp, (ent if with_entropy else None), err
    inplace = out3.data_ptr() == x3.data_ptr()
    g_tok = g_tok.to(torch.float32).contiguous()
    has_lse_in = lse_in is not None
    lse_arg = lse_in.to(torch.float32).contiguous() if has_lse_in else g_tok
    common = (
        x3,
        *_x_strides(x3),
        T,
        V,
        ids,
        span,
        g_tok,
        lse_arg,
        float(inv_temp),
        logp,
        ent,
        out3,
        *_x_strides(out3),
    )
    if variant == "row":
        kw = {"HAS_LSE_IN": has_lse_in, "WITH_ENT": bool(with_entropy)}
        _launch("row", _fused_row_kernel, lambda bv: N, common, kw, block_v, tune=not inplace)
    elif variant == "split":
        _launch_split(
            common,
            N,
            V,
            has_lse_in,
            with_entropy,
            err,
            block_v,
            coop,
            dynamic_id,
            max_spin,
            inplace,
        )
    else:
        raise ValueError(f"variant must be 'row' or 'split', got {variant!r}")
    if has_lse_in and with_entropy and ent_in is not None:
        # rows whose lse came in were not written by the kernel: keep the first pass's values
        ent = torch.where(span == 2, ent_in.to(torch.float32), ent)
    return logp, (ent if with_entropy else None), err


def _launch_split(
    common, N, V, has_lse_in, with_entropy, err, block_v, coop, dynamic_id, max_spin, inplace
):
    dev = common[0].device
    if coop is None or (INTERPRET and inplace):
        # the interpreter runs programs one after another: a cooperative wait can only time
        # out, and in place a timed-out row has no correct fallback (NaN)
        coop = (not INTERPRET) if coop is None else (coop and not inplace)
    min_block = (
        block_v if block_v is not None else (INTERPRET_BLOCK_V if INTERPRET else _SPLIT_MIN_BLOCK)
    )
    nsplit_max = triton.cdiv(V, min_block)
    if coop and dev.type == "cuda" and nsplit_max > _sm_count(dev):
        # all NSPLIT programs of a row must be able to be resident at once (one per SM is the
        # only occupancy we can count on): otherwise use the two-launch variant
        coop = False
    pstride = 3 * nsplit_max + 1
    part = torch.empty((N, pstride), dtype=torch.float32, device=dev)
    cnt = torch.zeros(N, dtype=torch.int32, device=dev)
    ticket = torch.zeros(1, dtype=torch.int32, device=dev)
    if dynamic_id is None:
        dynamic_id = inplace
    if inplace and coop:
        dynamic_id = True  # progress must not depend on the dispatch order: no fallback here
        if max_spin is None:
            max_spin = 2 if INTERPRET else INPLACE_MAX_SPIN
    if max_spin is None:
        max_spin = 2 if INTERPRET else GPU_MAX_SPIN
    tail = (part, pstride, cnt, ticket, err, int(max_spin))
    flags = {"HAS_LSE_IN": has_lse_in, "WITH_ENT": bool(with_entropy)}

    def run(phase, dyn):
        # INPLACE only changes the cooperative timeout path: no extra variants for phases 1/2
        kw = dict(flags, PHASE=phase, DYNAMIC_ID=dyn, INPLACE=bool(inplace) and phase == 0)
        # the two-launch variant must use one chunk width for both launches: never tuned
        fixed = INTERPRET or block_v is not None or inplace or not coop
        if fixed or not autotune_enabled():
            bv, warps, stages = (
                (block_v, 8, 1)
                if block_v is not None
                else ((INTERPRET_BLOCK_V, 1, 1) if INTERPRET else _DEFAULT["split"])
            )
            if INTERPRET:
                warps, stages = 1, 1
            ns = triton.cdiv(V, bv)
            ticket.zero_()
            _fused_split_kernel[(N * ns,)](
                *common,
                *tail,
                **kw,
                BLOCK_V=bv,
                NSPLIT_P2=_pow2(ns),
                num_warps=warps,
                num_stages=stages,
            )
        else:
            k = _tuned_split_p2(V)
            cached = len(getattr(k, "cache", {}))
            ticket.zero_()
            grid = lambda meta: (N * triton.cdiv(V, meta["BLOCK_V"]),)  # noqa: E731
            k[grid](*common, *tail, **kw)
            if len(getattr(k, "cache", {})) != cached:
                # first call for this key: the autotuner benchmarked the kernel, leaving its
                # counters dirty on Triton versions that do not reset them after tuning;
                # relaunch from clean counters (out-of-place launches are idempotent)
                cnt.zero_()
                ticket.zero_()
                err.zero_()
                k[grid](*common, *tail, **kw)

    if coop:
        run(0, dynamic_id)
    else:
        run(1, False)
        run(2, False)


_SM_COUNT: dict = {}


def _sm_count(dev) -> int:
    idx = dev.index if dev.index is not None else torch.cuda.current_device()
    if idx not in _SM_COUNT:
        _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SM_COUNT[idx]


_SPLIT_BY_V: dict = {}


def _tuned_split_p2(V):
    """Autotuned split kernel whose configs carry NSPLIT_P2 for this V (it depends on BLOCK_V)."""
    if V not in _SPLIT_BY_V:
        cfgs = [
            triton.Config(
                {"BLOCK_V": b, "NSPLIT_P2": _pow2(triton.cdiv(V, b))}, num_warps=w, num_stages=s
            )
            for b, w, s in _CFG_SPLIT
        ]
        _SPLIT_BY_V[V] = triton.autotune(
            cfgs,
            key=["V", "HAS_LSE_IN", "WITH_ENT", "PHASE", "DYNAMIC_ID", "INPLACE"],
            reset_to_zero=["CNT", "TICKET"],
        )(_fused_split_kernel)
    return _SPLIT_BY_V[V]


def segment_sums(values, layout):
    """Per-sequence rationale / answer sums of ``values [N]`` (fp32), fixed order per sequence."""
    B = layout.num_sequences
    out_z = torch.zeros(B, dtype=torch.float32, device=values.device)
    out_y = torch.zeros(B, dtype=torch.float32, device=values.device)
    if B == 0 or layout.num_tokens == 0:
        return out_z, out_y
    _segsum_kernel[(B,)](
        values.to(torch.float32).contiguous(),
        layout.span,
        layout.cu_seqlens,
        out_z,
        out_y,
        BLOCK_T=SUM_BLOCK_T,
        num_warps=1 if INTERPRET else 4,
    )
    return out_z, out_y
