"""Counter-based random numbers for vectorised simulations.

A sweep runs many (setting, seed) rows in one array program.  With a single stateful generator
the numbers a row sees would depend on which other rows share its batch (and on the order in
which a resumed sweep recomputes them).  Here every uniform is a pure function of
``(row_key, step, index)``: a splitmix64 hash evaluated with int64 tensor arithmetic.  So a row's
trajectory is a pure function of its settings and seed, whatever batch it runs in.

>>> import torch
>>> keys = torch.tensor([1, 2], dtype=torch.int64)
>>> u = counter_uniform(keys, step=0, n=3)
>>> u.shape, bool(((u >= 0) & (u < 1)).all())
(torch.Size([2, 3]), True)
>>> torch.equal(counter_uniform(keys[1:], 0, 3), u[1:])   # independent of the batch
True
"""

from __future__ import annotations

import functools
import hashlib

import torch

__all__ = ["counter_uniform", "row_key"]

# splitmix64 constants, as signed int64 (torch has no uint64 arithmetic; int64 multiplication
# wraps modulo 2^64, which is exactly the unsigned product's low 64 bits).
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15
_C1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_C2 = -7723592293110705685  # 0x94D049BB133111EB
_STEP_MULT = 0x2545F4914F6CDD1D


def _to_i64(v: int) -> int:
    """Reduce a Python int modulo 2^64 to the signed int64 range."""
    v %= 1 << 64
    return v - (1 << 64) if v >= (1 << 63) else v


def _lsr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> s).bitwise_and_((1 << (64 - s)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser. In place on ``x`` (the callers pass temporaries): the simulators
    call it twice per training step, where allocations, not arithmetic, set the cost."""
    x.bitwise_xor_(_lsr(x, 30)).mul_(_C1)
    x.bitwise_xor_(_lsr(x, 27)).mul_(_C2)
    return x.bitwise_xor_(_lsr(x, 31))


@functools.lru_cache(maxsize=64)
def _offsets(n: int, device: torch.device) -> torch.Tensor:
    """(j + 1)·golden for j < n, shape [1, n]: the per-index counters (read-only, cached)."""
    return ((torch.arange(n, dtype=torch.int64, device=device) + 1) * _GOLDEN)[None, :]


def counter_uniform(keys: torch.Tensor, step: int, n: int) -> torch.Tensor:
    """Uniforms in [0, 1), float64, shape ``[len(keys), n]``, a pure function of (key, step, j).

    Args:
        keys: int64 tensor ``[S]``, one key per row (see :func:`row_key`).
        step: the training step (any non-negative int).
        n: how many numbers the row needs at this step.
    """
    if keys.dtype != torch.int64 or keys.dim() != 1:
        raise TypeError(f"keys must be a 1-d int64 tensor, got {keys.dtype} {tuple(keys.shape)}")
    if step < 0 or n < 1:
        raise ValueError(f"need step >= 0 and n >= 1, got step={step}, n={n}")
    base = _mix(keys * _GOLDEN + _to_i64(step * _STEP_MULT))
    x = _mix(base[:, None] + _offsets(n, keys.device))
    return _lsr(x, 11).to(torch.float64).mul_(2.0**-53)


def row_key(*parts: object) -> int:
    """A signed 64-bit key from any printable parts (e.g. experiment, setting id, seed)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little", signed=True)
