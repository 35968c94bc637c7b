r"""The simulators' one optimiser step and one freeze-on-escape loop.

Every escape simulator of this package runs the same program: many runs (rows of a batch, or
members of an ensemble) are stepped until their monitored success probability reaches δ; the
step count at which a run first reaches it is its *escape step*; a run that has escaped stops
being updated (it is *frozen*); a run that never reaches δ within the budget is *censored* at the
budget, kept and reported as a lower bound, never dropped.  This module holds the two shared
pieces, so that each simulator supplies only its gradient/step, its monitor and its per-row state:

* :func:`adam_update` — one bias-corrected Adam step (Kingma & Ba 2015), the formula
  m ← β1·m + (1-β1)·g, v ← β2·v + (1-β2)·g², update = lr·m̂/(√v̂ + ε) with
  m̂ = m/(1-β1^t), v̂ = v/(1-β2^t); ε is outside the square root, as in ``torch.optim.Adam``.
  Learning rate and ε may be per row (broadcast against g); it works on numpy arrays and torch
  tensors alike.  SGD needs no function: its update is lr·g.
* :func:`run_to_escape` — the freeze-on-escape loop.  Two ways to freeze a run: *drop* it from
  the per-row state (the tabular simulators: escaped rows cost nothing afterwards) or *mask* it
  (the transformer ensemble, whose batched weights cannot shed a member cheaply; a frozen member
  keeps its weights and optimiser state).

Users: :func:`sims.dynamics.gd_escape` (gradient descent on the exact gradient, rows dropped),
:func:`sims.sampled.train_sampled` (SGD or Adam on M samples per step, rows dropped),
:func:`sims.experiments.adam_threshold.adam_exact_escape` (Adam on the exact gradient, rows
dropped) and :func:`sims.transformer.train` (SGD or Adam per ensemble member, masked).  The
Table 1 engine (:mod:`sims.table1_engine`) is deliberately not one of them: it reproduces the
trainer's optimiser with ``torch.optim.AdamW`` and trains for a fixed number of steps, with no
freeze on escape.

Order of floating-point operations matters: the simulators' results are compared bit for bit
across refactors, so :func:`adam_update` evaluates exactly ``b1*m + (1-b1)*g``,
``b2*v + (1-b2)*g*g`` and ``lr*m_hat/(sqrt(v_hat) + eps)`` in that order.

>>> import numpy as np
>>> m, v, upd = adam_update(np.zeros(2), np.zeros(2), np.array([0.5, -2.0]), 1, 0.1, 1e-8)
>>> upd.round(6).tolist()  # the first step is lr·sign(g) up to ε
[0.1, -0.1]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["adam_update", "EscapeRun", "run_to_escape"]


def _sqrt(x):
    """√x of a torch tensor (its own ``sqrt``) or of a numpy array / float (``np.sqrt``)."""
    return x.sqrt() if hasattr(x, "sqrt") else np.sqrt(x)


def adam_update(m, v, g, t: int, lr, eps, betas: tuple[float, float] = (0.9, 0.999)):
    r"""One Adam step on gradient ``g``: returns ``(m_new, v_new, update)``.

        m_new = β1·m + (1-β1)·g,   v_new = β2·v + (1-β2)·g²,
        update = lr · m̂ / (√v̂ + ε),   m̂ = m_new/(1-β1^t),  v̂ = v_new/(1-β2^t).

    Args:
        m, v: first and second moment estimates, the shape of ``g`` (zeros before step 1).
        g: the gradient (or the ascent direction: the update then has its sign) — numpy or torch.
        t: the 1-based number of this step (bias correction).
        lr, eps: scalars or arrays broadcasting against ``g`` (per-row values as ``[R, 1]``).
        betas: (β1, β2), each in [0, 1).
    The caller applies the update (``θ - update`` for a loss gradient, ``θ + update`` for an
    ascent direction).  No input checks: this is the inner loop; callers validate once.
    """
    b1, b2 = betas
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    return m, v, lr * m_hat / (_sqrt(v_hat) + eps)


@dataclass
class EscapeRun:
    """Outcome of :func:`run_to_escape` (row order as given).

    steps: ``[R]`` int64, the first step count t at which the row's monitor was ≥ δ, or the
        budget where it never was (then ``censored``).
    censored: ``[R]`` bool, True where the row did not escape within the budget (or was retired).
    rows: the per-row state at the end (only the rows still active when rows are dropped).
    active: ``[R]`` bool, the rows still being stepped at the end.
    t: the number of steps the loop ran.
    """

    steps: np.ndarray
    censored: np.ndarray
    rows: object
    active: np.ndarray
    t: int


def _take(value, keep: np.ndarray):
    """Rows ``keep`` (bool over axis 0) of a numpy array or torch tensor."""
    if isinstance(value, np.ndarray):
        return value[keep]
    import torch  # only torch states reach here; numpy-only callers never import it

    return value[torch.from_numpy(keep)]


def _drop(rows: dict, keep: np.ndarray) -> dict:
    return {k: _take(v, keep) for k, v in rows.items()}


def run_to_escape(
    rows,
    n_rows: int,
    *,
    monitor: Callable,
    step: Callable,
    max_steps: int,
    delta: float,
    drop: bool = True,
    freeze: bool = True,
    mark: bool = True,
    retire: Callable | None = None,
    on_freeze: Callable | None = None,
) -> EscapeRun:
    """Step ``n_rows`` runs until each escapes (monitor ≥ δ) or the budget ``max_steps`` is spent.

    The loop, with t the number of steps taken so far (t = 0 is the start):

        at t = 0, 1, 2, ...:  retire lost rows (optional) → monitor → mark rows whose monitor
        is ≥ δ for the first time (escape step t) → freeze them → stop if t = max_steps or no
        row is active → step every active row from t to t + 1.

    Args:
        rows: the per-row state.  With ``drop=True`` a dict of numpy arrays / torch tensors whose
            axis 0 is the row (only per-row values: shared scalars belong in the callables'
            closures); frozen rows are removed from every entry, order kept.  With
            ``drop=False`` any object, passed through untouched.
        n_rows: R, the number of rows at the start.
        monitor: ``monitor(rows, t, active) -> values`` after t steps: one value per row of
            ``rows`` (drop) or per row of the batch, ``[R]`` (mask); numpy or torch.
        step: ``step(rows, t, active) -> rows`` advances the active rows from t to t + 1 (drop:
            every row of ``rows``; mask: the rows where ``active``, others must stay as they are).
        max_steps: the budget (≥ 0); rows not escaped after it are censored at it.
        delta: the escape threshold the monitor's values are compared with (``values >= delta``;
            a simulator that monitors log P passes log δ).
        active: ``[R]`` bool numpy mask over the original rows, the ones still stepped (drop:
            the rows of ``rows``, in order); the loop updates it in place, so a callable that
            keeps it must copy it.
        drop: freeze by dropping rows (True) or by the ``active`` mask (False).
        freeze: stop stepping a row once it escaped; False trains every row for the whole budget
            (its first escape is still marked if ``mark``).
        mark: record escapes at all; False leaves every row censored at the budget (plain
            training, e.g. training curves).  ``freeze`` requires ``mark``.
        retire: optional ``retire(rows, t, active) -> [R] bool``, rows to stop now without an
            escape (e.g. diverged); they stay censored unless they escaped before.  Mask style
            only (a retired row is not removed from ``rows``).
        on_freeze: optional ``on_freeze(rows, hit, idx)`` called just before rows are dropped,
            with the state, the bool mask ``hit`` over its rows and their original row numbers
            ``idx`` (drop style only: a caller that accumulates per-row statistics in ``rows``
            moves them out here).
    Returns :class:`EscapeRun`.  A row's result depends on the other rows only through what
    its ``step``/``monitor`` make it depend on: the bookkeeping is per row.
    """
    if not (isinstance(max_steps, (int, np.integer)) and max_steps >= 0):
        raise ValueError(f"max_steps must be a non-negative int, got {max_steps!r}")
    if not (callable(monitor) and callable(step)):
        raise TypeError("monitor and step must be callables (rows, t, active)")
    if not (isinstance(n_rows, (int, np.integer)) and n_rows >= 0):
        raise ValueError(f"n_rows must be a non-negative int, got {n_rows!r}")
    if freeze and not mark:
        raise ValueError("freeze=True needs mark=True (a row freezes when its escape is marked)")
    if drop and retire is not None:
        raise ValueError("retire is for the masking style (drop=False)")
    if not drop and on_freeze is not None:
        raise ValueError("on_freeze is for the dropping style (drop=True)")
    R = int(n_rows)
    steps = np.full(R, int(max_steps), dtype=np.int64)
    censored = np.ones(R, dtype=bool)
    active = np.ones(R, dtype=bool)
    pending = np.ones(R, dtype=bool)  # not escaped (nor retired): escapes still to be marked
    n_active = R  # active.sum(), kept as an int: the check runs every step
    t = 0
    while True:
        if retire is not None:
            lost = np.asarray(retire(rows, t, active), dtype=bool)
            active &= ~lost
            pending &= ~lost
            n_active = int(active.sum())
        values = monitor(rows, t, active)
        # the common step has no escape: one comparison and one any() (the hot loop of GD)
        hit = values >= delta if mark else None
        if mark and hit.any():
            hit = np.asarray(hit, dtype=bool)
            if drop:  # values of the active rows, in order; map them to the batch
                hit_all = np.zeros(R, dtype=bool)
                hit_all[active] = hit
            else:
                hit_all = hit
            new = hit_all & pending
            if new.any():
                steps[new], censored[new] = t, False
                pending &= ~new
                if freeze:
                    if drop:
                        hit_rows = new[active]
                        if on_freeze is not None:
                            on_freeze(rows, hit_rows, np.flatnonzero(new))
                        rows = _drop(rows, ~hit_rows)
                    active &= ~new
                    n_active = int(active.sum())
        if t == max_steps or n_active == 0:
            return EscapeRun(steps, censored, rows, active, t)
        rows = step(rows, t, active)
        t += 1
