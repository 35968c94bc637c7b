r"""Internal, unvalidated numpy kernels for the simulators' hot loops (not public API).

The exact dynamics (:mod:`sims.dynamics`) evaluate the model and the amplification hundreds of
thousands of times per experiment; the public, validated functions (``tsallis.amplification``,
``scipy.special.softmax``/``log_softmax``) spend most of that time on input checks and array-API
dispatch.  These helpers compute the *same* floating-point operations in the same order (so the
results are bit-identical) with none of that overhead, and check nothing: callers validate their
inputs once, outside the loop.

* :func:`amplification` — ``P^(-q)`` (Prop. 4.1), as ``tsallis.amplification`` computes it for a
  numpy ``P`` in [0, 1]: ``np.power(P, -q)``, +inf at P = 0 for q > 0, 1 at q = 0.
* :func:`softmax` — ``exp(x - max x) / Σ exp(x - max x)`` over ``axis``, as scipy computes it.
* :func:`log_softmax` — ``(x - m) - log Σ exp(x - m)`` with ``m = max x`` (0 where that max is
  not finite), as scipy computes it.

>>> import numpy as np
>>> float(amplification(np.array(0.25), 0.5))
2.0
>>> bool(np.allclose(softmax(np.log(np.array([1.0, 3.0]))), [0.25, 0.75]))
True

Bit-identical to the public functions they stand in for:

>>> import scipy.special, tsallis
>>> x = np.random.default_rng(0).normal(scale=30.0, size=(50, 3, 10))
>>> bool(np.array_equal(softmax(x), scipy.special.softmax(x, axis=-1)))
True
>>> bool(np.array_equal(log_softmax(x), scipy.special.log_softmax(x, axis=-1)))
True
>>> P = np.concatenate([softmax(x).ravel(), [0.0, 1e-300, 1.0]])
>>> with np.errstate(divide="ignore"):
...     all(np.array_equal(tsallis.amplification(P, q), amplification(P, q))
...         for q in (0.0, 0.25, 0.5, 0.75, 1.0))
True
"""

from __future__ import annotations

import numpy as np

__all__: list[str] = []  # internal: nothing here is exported


def amplification(P: np.ndarray, q: float) -> np.ndarray:
    """``P^(-q)`` elementwise for a float64 array ``P`` in [0, 1] and a float ``q`` (unchecked).

    Sets no ``np.errstate``: at P = 0 with q > 0 numpy warns "divide by zero" unless the caller
    runs it inside ``np.errstate(divide="ignore")`` (the dynamics' loops do).
    """
    return np.power(P, -np.asarray(q, dtype=np.float64))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax over ``axis``: ``e / e.sum(axis)`` with ``e = exp(x - x.max(axis))`` (unchecked)."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Log-softmax over ``axis``: ``t - log Σ exp(t)`` with ``t = x - max x`` (unchecked).

    Σ exp(t) >= 1 unless a whole row is -inf; only then does numpy warn (scipy silences it).
    """
    m = x.max(axis=axis, keepdims=True)
    m[~np.isfinite(m)] = 0
    t = x - m
    return t - np.log(np.exp(t).sum(axis=axis, keepdims=True))
