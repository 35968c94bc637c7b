"""Throughput of the transformer simulator: one batched ensemble vs one run at a time.

Run with ``pytest benchmarks/test_lm_bench.py --benchmark-enable -s``.  Both paths train the same
R = 20 runs (5 values of q × 4 seeds, p0 = 1e-3, likelihood mode, GARL-RLOO, SGD, 10 steps, no
early stop, so the work is fixed) and must give the same weights up to rounding (every random
number is counter-based, so a run does not depend on its batch).  Reported: run-steps per second
of each path and the speed-up (goal ≥ 5×).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from sims.transformer import ModelSpec, Task, train

QS, SEEDS, STEPS = (0.0, 0.25, 0.5, 0.75, 1.0), 4, 10
TASK, SPEC = Task(), ModelSpec()


def _setup():
    q = np.repeat(QS, SEEDS)
    keys = np.arange(q.size, dtype=np.int64) * 1_000_003 + 17
    return q, keys


def _batched(q, keys):
    return train(TASK, SPEC, keys, 1e-3, q, 0.3, steps=STEPS, freeze_escaped=False)


def _one_at_a_time(q, keys):
    return [
        train(TASK, SPEC, keys[i : i + 1], 1e-3, q[i], 0.3, steps=STEPS, freeze_escaped=False)
        for i in range(q.size)
    ]


def test_batched_vs_one_at_a_time(benchmark):
    q, keys = _setup()
    res = benchmark.pedantic(_batched, args=(q, keys), rounds=1, iterations=1)
    t0 = time.perf_counter()
    batched = _batched(q, keys)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    singles = _one_at_a_time(q, keys)
    t_single = time.perf_counter() - t0
    for i, one in enumerate(singles):
        for k, v in one.params.items():
            torch.testing.assert_close(v[0], batched.params[k][i], rtol=0, atol=1e-5)
    assert res.steps.shape == (q.size,)
    runs = q.size * STEPS
    print(
        f"\nlm ensemble: batched {runs / t_batched:.0f} run-steps/s, one at a time "
        f"{runs / t_single:.0f} run-steps/s, speed-up {t_single / t_batched:.1f}x (goal >= 5x)"
    )
