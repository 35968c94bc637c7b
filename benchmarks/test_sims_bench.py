"""Throughput of the stochastic simulator: all runs in one array program vs one run at a time.

Run with ``pytest benchmarks/test_sims_bench.py --benchmark-enable -s``.  Both paths train the
same R = 128 runs (4 values of q × 32 seeds, sigmoid model, 0/1 verifier rewards, plug-in GARL,
M = 8, 100 SGD steps, no early stop, so the work is fixed) and must give the same final P up to
rounding (the counter-based RNG makes a run independent of its batch).  Reported:
sample-steps per second (runs × M × steps / seconds) of each path and the speed-up (goal ≥ 50×).
"""

from __future__ import annotations

import time

import numpy as np

from sims.models import Sigmoid
from sims.sampled import train_sampled

R_PER_Q, QS, M, STEPS = 32, (0.0, 0.25, 0.5, 1.0), 8, 100


def _setup():
    model = Sigmoid()
    q = np.repeat(QS, R_PER_Q)
    theta0 = np.tile(model.init(1e-2), (q.size, 1))
    keys = np.arange(q.size, dtype=np.int64) * 1_000_003 + 17
    return model, q, theta0, keys


def _vectorised(model, q, theta0, keys):
    return train_sampled(
        model,
        theta0,
        keys,
        q=q,
        M=M,
        lr=1.0,
        estimator="garl",
        mode="verifier",
        max_steps=STEPS,
        freeze_escaped=False,
        record_steps=[STEPS],
    )


def _one_at_a_time(model, q, theta0, keys):
    out = []
    for i in range(q.size):
        out.append(
            train_sampled(
                model,
                theta0[i : i + 1],
                keys[i : i + 1],
                q=float(q[i]),
                M=M,
                lr=1.0,
                estimator="garl",
                mode="verifier",
                max_steps=STEPS,
                freeze_escaped=False,
                record_steps=[STEPS],
            ).curves[0, 0]
        )
    return np.array(out)


def test_sims_vectorised_vs_loop(benchmark):
    model, q, theta0, keys = _setup()
    work = q.size * M * STEPS
    run = benchmark.pedantic(
        _vectorised, args=(model, q, theta0, keys), rounds=5, iterations=1, warmup_rounds=1
    )
    t0 = time.perf_counter()
    for _ in range(3):
        _vectorised(model, q, theta0, keys)
    t_vec = (time.perf_counter() - t0) / 3
    t0 = time.perf_counter()
    loop = _one_at_a_time(model, q, theta0, keys)
    t_loop = time.perf_counter() - t0
    # same runs: equal up to rounding (a scalar q and a per-row q tensor round differently)
    np.testing.assert_allclose(run.curves[:, 0], loop, rtol=1e-12, atol=0)
    speedup = t_loop / t_vec
    benchmark.extra_info.update(
        {
            "sample_steps_per_s_vectorised": work / t_vec,
            "sample_steps_per_s_loop": work / t_loop,
            "speedup": speedup,
            "runs": int(q.size),
            "M": M,
            "steps": STEPS,
        }
    )
    print(
        f"\nsimulator: {work / t_vec:,.0f} sample-steps/s vectorised, "
        f"{work / t_loop:,.0f} one run at a time: {speedup:.0f}x (goal >= 50x)"
    )
