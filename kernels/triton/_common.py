"""Shared pieces of the Triton kernels: reductions, row addressing, launch configuration.

Whether ``@triton.jit`` builds a compiled or an interpreted kernel is decided when a module is
imported, so this package is imported lazily (by :mod:`kernels.ops`, on the first Triton call):
set ``TRITON_INTERPRET=1`` before that to run the kernels on CPU tensors.

All arithmetic is fp32 whatever the logits' dtype; all row offsets are int64 (``N * V > 2^31``
is the common case). Design and bytes moved: ``kernels/README.md``.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

from ..layout import ANSWER, IGNORED, RATIONALE

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

#: span codes of :mod:`kernels.layout` as compile-time constants of the kernels
SPAN_IGNORED = tl.constexpr(IGNORED)
SPAN_RATIONALE = tl.constexpr(RATIONALE)
SPAN_ANSWER = tl.constexpr(ANSWER)

#: block width used by the interpreter (small, so that CI exercises the multi-block loops)
INTERPRET_BLOCK_V = 32


# The kernels use only Triton builtins: reductions are ``tl.reduce`` with local combine
# functions, not ``tl.sum``/``tl.max``, and no ``tl.cdiv``/``tl.zeros`` (all ``@jit``
# functions of triton.language.standard). The same code when compiled, and the interpreter
# then works even when triton was imported before TRITON_INTERPRET was set (standard's
# functions would be compiled-mode objects; tests/test_kernels_contract.py checks this).
@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _maxc(a, b):
    return tl.maximum(a, b)


@triton.jit
def vsum(x):
    """Sum of a 1-D block."""
    return tl.reduce(x, 0, _add)


@triton.jit
def vmax(x):
    """Maximum of a 1-D block."""
    return tl.reduce(x, 0, _maxc)


@triton.jit
def row_offset(row, T, stride_b, stride_t):
    """int64 offset of flattened row ``row`` of a [B, T, V] tensor with strides (sb, st, .)."""
    b = row // T
    t = row - b * T
    return b * stride_b + t * stride_t


@triton.jit
def zero_cols(dx_row, stride_v, lo, hi, BLOCK_V: tl.constexpr):
    """Write a zero gradient over columns [lo, hi) of one row (ignored rows)."""
    for start in range(lo, hi, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        zero = tl.full((BLOCK_V,), 0.0, tl.float32).to(dx_row.dtype.element_ty)
        tl.store(dx_row + cols.to(tl.int64) * stride_v, zero, mask=cols < hi)


@triton.jit
def block_stats(u, WITH_ENT: tl.constexpr):
    """``(m, s, t)`` of one block ``u`` (fp32, -inf where masked): the block maximum ``m``,
    ``s = sum exp(u - m)`` and ``t = sum exp(u - m) (u - m)`` (0 unless ``WITH_ENT``).

    ``t`` is taken on the shifted values, so it never holds the size of the logits (a sum of
    several bf16-max entries would overflow fp32); ``m`` is -inf for an all-masked block
    (then ``s = t = 0``)."""
    m = vmax(u)
    m_safe = tl.where(m == -float("inf"), 0.0, m)
    e = tl.exp(u - m_safe)
    s = vsum(e)
    t = 0.0
    if WITH_ENT:
        t = vsum(e * tl.where(e > 0, u - m_safe, 0.0))
    return m, s, t


@triton.jit
def range_stats(
    x_row, stride_v, lo, hi, inv_temp, WITH_ENT: tl.constexpr, EVICT: tl.constexpr,
    BLOCK_V: tl.constexpr,
):  # fmt: skip
    """Online ``(m, s, t)`` of ``u = x * inv_temp`` over columns [lo, hi) of one row.

    ``m`` the running maximum, ``s = sum exp(u - m)``, ``t = sum exp(u - m) (u - m)`` (entropy
    only; moved to a new maximum m' as ``t' = alpha (t + s (m - m'))``, ``alpha = exp(m - m')``),
    blocks of ``BLOCK_V`` from ``lo`` upwards. ``EVICT``: loads marked ``evict_last`` (the row
    is about to be read again).
    """
    m = -float("inf")
    s = 0.0
    t = 0.0
    for start in range(lo, hi, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        ptr = x_row + cols.to(tl.int64) * stride_v
        if EVICT:
            x = tl.load(ptr, mask=cols < hi, other=-float("inf"), eviction_policy="evict_last")
        else:
            x = tl.load(ptr, mask=cols < hi, other=-float("inf"))
        u = x.to(tl.float32) * inv_temp
        m_new = tl.maximum(m, vmax(u))
        m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)
        alpha = tl.exp(m - m_safe)
        e = tl.exp(u - m_safe)
        if WITH_ENT:
            moved = tl.where(s > 0, s * (m - m_safe), 0.0)
            t = alpha * (t + moved) + vsum(e * tl.where(e > 0, u - m_safe, 0.0))
        s = s * alpha + vsum(e)
        m = m_new
    return m, s, t


@triton.jit
def online_norm(
    x_row, stride_v, V, inv_temp, WITH_ENT: tl.constexpr, EVICT: tl.constexpr,
    BLOCK_V: tl.constexpr,
):  # fmt: skip
    """One sweep over a row: ``(m, log_s, H)`` of ``u = x * inv_temp``: the row maximum (0 for
    an all -inf row), ``log s = log sum exp(u - m)`` and (with ``WITH_ENT``) the entropy
    ``H = log s - t / s``. ``m`` and ``log s`` stay apart (``lse = m + log s`` rounded to fp32
    loses the digits that ``u - lse`` needs when the logits are large): ``log p = (u - m) -
    log s``."""
    m, s, t = range_stats(x_row, stride_v, 0, V, inv_temp, WITH_ENT, EVICT, BLOCK_V)
    m_safe = tl.where(m == -float("inf"), 0.0, m)
    log_s = tl.log(s)
    return m_safe, log_s, log_s - t / s


# --------------------------------------------------------------------------------------------
# launch configuration
# --------------------------------------------------------------------------------------------
def pow2(n: int) -> int:
    """Smallest power of two >= ``n`` (1 for n <= 1)."""
    return 1 << max(0, (int(n) - 1).bit_length())


def configs(table):
    """``triton.Config`` list from ``(BLOCK_V, num_warps, num_stages)`` rows."""
    return [triton.Config({"BLOCK_V": b}, num_warps=w, num_stages=s) for b, w, s in table]


def autotune_enabled() -> bool:
    """Autotuning is on unless ``TSALLIS_TRITON_AUTOTUNE=0`` (then the fixed defaults run)."""
    return os.environ.get("TSALLIS_TRITON_AUTOTUNE", "1") not in ("0", "false", "False")


def launch(kernel, tuned, default, grid_rows, args, kwargs, block_v, tune):
    """Launch ``kernel`` with an explicit block (interpreter, tests, in place) or autotuned.

    ``tuned``: a zero-argument function returning the autotuned wrapper; ``default``:
    ``(BLOCK_V, num_warps, num_stages)`` when not tuning; ``grid_rows(BLOCK_V)``: the 1-D grid.
    Returns the block width used (None when the autotuner chose it).
    """
    if INTERPRET or block_v is not None or not tune or not autotune_enabled():
        if block_v is None:
            block_v, warps, stages = (INTERPRET_BLOCK_V, 1, 1) if INTERPRET else default
        else:
            warps, stages = (1, 1) if INTERPRET else (min(16, max(1, block_v // 1024)), 2)
        kernel[(grid_rows(block_v),)](
            *args, **kwargs, BLOCK_V=block_v, num_warps=warps, num_stages=stages
        )
        return block_v
    tuned()[lambda meta: (grid_rows(meta["BLOCK_V"]),)](*args, **kwargs)
    return None


def x_strides(x3):
    """The three strides of a ``[B, T, V]`` tensor."""
    return x3.stride(0), x3.stride(1), x3.stride(2)
