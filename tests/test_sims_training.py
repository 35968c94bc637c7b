"""The simulators' shared Adam step and freeze-on-escape loop (sims/training.py): Adam against
torch.optim.Adam and the formula, numpy against torch, and the loop's bookkeeping (step 0
for rows that start escaped, censoring at the budget, frozen rows never stepped again, a row's
result independent of the other rows, dropping = masking)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sims.training import adam_update, run_to_escape

# ----------------------------------------------------------------------------- Adam


def test_adam_matches_torch_optim_adam():
    """Same β, ε, lr, no weight decay: the descent step θ - update is torch's Adam step (torch
    orders the operations differently, so equal to rounding, not bitwise)."""
    gen = torch.Generator().manual_seed(0)
    theta0 = torch.randn(3, 5, dtype=torch.float64, generator=gen)
    grads = [torch.randn(3, 5, dtype=torch.float64, generator=gen) * 10.0**k for k in range(-4, 4)]
    lr, eps, betas = 0.03, 1e-6, (0.8, 0.95)
    p = theta0.clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=lr, betas=betas, eps=eps, foreach=False)
    th, m, v = theta0.clone(), torch.zeros_like(theta0), torch.zeros_like(theta0)
    for t, g in enumerate(grads, start=1):
        p.grad = g.clone()
        opt.step()
        m, v, upd = adam_update(m, v, g, t, lr, eps, betas)
        th = th - upd
        torch.testing.assert_close(th, p.detach(), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(m, opt.state[p]["exp_avg"], rtol=1e-14, atol=0)
        torch.testing.assert_close(v, opt.state[p]["exp_avg_sq"], rtol=1e-14, atol=0)


def test_adam_by_hand_two_steps():
    g1, g2, lr, eps, (b1, b2) = 2.0, -1.0, 0.1, 1e-3, (0.9, 0.999)
    m, v, u1 = adam_update(0.0, 0.0, g1, 1, lr, eps, (b1, b2))
    assert u1 == pytest.approx(lr * g1 / (abs(g1) + eps), rel=1e-15)  # m̂ = g, v̂ = g²
    m2, v2 = b1 * (1 - b1) * g1 + (1 - b1) * g2, b2 * (1 - b2) * g1**2 + (1 - b2) * g2**2
    _, _, u2 = adam_update(m, v, g2, 2, lr, eps, (b1, b2))
    want = lr * (m2 / (1 - b1**2)) / (math.sqrt(v2 / (1 - b2**2)) + eps)
    assert u2 == pytest.approx(want, rel=1e-14)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    t=st.integers(1, 10_000),
    b1=st.floats(0.0, 0.99),
    b2=st.floats(0.0, 0.9999),
)
def test_adam_numpy_matches_torch_and_per_row_broadcast(seed, t, b1, b2):
    """The same formula on both backends, equal to rounding but not bitwise: torch's and
    numpy's vectorised square roots can differ in the last bit (seen on this CPU).  Each
    simulator keeps its one backend, so its results do not depend on this."""
    rng = np.random.default_rng(seed)
    m, g = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)) * 10.0 ** rng.integers(-8, 3)
    v = rng.random((4, 3))
    lr, eps = 10.0 ** rng.uniform(-4, 0, size=(4, 1)), 10.0 ** rng.uniform(-10, -2, size=(4, 1))
    out_np = adam_update(m, v, g, t, lr, eps, (b1, b2))
    out_t = adam_update(*map(torch.from_numpy, (m, v, g)), t, torch.from_numpy(lr),
                        torch.from_numpy(eps), (b1, b2))  # fmt: skip
    for a, b in zip(out_np, out_t, strict=True):
        np.testing.assert_allclose(b.numpy(), a, rtol=1e-14, atol=0)
    for i in range(4):  # a row's update is the scalar update with that row's lr and ε
        row = adam_update(m[i], v[i], g[i], t, float(lr[i, 0]), float(eps[i, 0]), (b1, b2))
        assert np.array_equal(row[2], out_np[2][i])


# ----------------------------------------------------------------------------- the loop
# A toy simulator: row i moves x ← x + c_i each step, monitor = x, so its escape step is the
# first t ≥ 0 with x0_i + t·c_i ≥ δ (computed exactly on the same float sums below).


def _expected(x0, c, delta, budget):
    steps, cens = np.full(len(x0), budget), np.ones(len(x0), dtype=bool)
    for i in range(len(x0)):
        x = x0[i]
        for t in range(budget + 1):
            if x >= delta:
                steps[i], cens[i] = t, False
                break
            x = x + c[i]
    return steps, cens


def _toy_drop(x0, c, delta, budget, log, **kw):
    def monitor(rows, t, active):
        return rows["x"]

    def step(rows, t, active):
        log.append((t, np.flatnonzero(active)))
        return {"x": rows["x"] + rows["c"], "c": rows["c"]}

    rows = {"x": np.array(x0, dtype=float), "c": np.array(c, dtype=float)}
    return run_to_escape(rows, len(x0), monitor=monitor, step=step, max_steps=budget,
                         delta=delta, **kw)  # fmt: skip


def _toy_mask(x0, c, delta, budget, **kw):
    x, cc = torch.tensor(x0, dtype=torch.float64), torch.tensor(c, dtype=torch.float64)

    def step(state, t, active):
        a = torch.from_numpy(active)
        state.add_(torch.where(a, cc, torch.zeros_like(cc)))  # frozen rows stay as they are
        return state

    run = run_to_escape(x, len(x0), monitor=lambda s, t, a: s.clone(), step=step,
                        max_steps=budget, delta=delta, drop=False, **kw)  # fmt: skip
    return run, x


rows_strategy = st.lists(
    st.tuples(st.floats(-5.0, 1.5), st.floats(0.0, 1.0)), min_size=1, max_size=8
)


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, budget=st.integers(0, 30), perm_seed=st.integers(0, 1000))
def test_loop_bookkeeping_drop_and_mask(rows, budget, perm_seed):
    x0, c = [r[0] for r in rows], [r[1] for r in rows]
    want_steps, want_cens = _expected(x0, c, 1.0, budget)
    log = []
    run = _toy_drop(x0, c, 1.0, budget, log)
    assert np.array_equal(run.steps, want_steps) and np.array_equal(run.censored, want_cens)
    assert run.steps.dtype == np.int64 and np.all(run.steps[run.censored] == budget)
    # an escaped row is never stepped at or after its escape step; a censored one every step
    for t, stepped in log:
        assert np.all(want_cens[stepped] | (want_steps[stepped] > t))
    assert all(sum(i in s for _, s in log) == want_steps[i] for i in range(len(x0)))
    # masking gives the same bookkeeping, and a frozen row keeps the state it escaped with
    mrun, x = _toy_mask(x0, c, 1.0, budget)
    assert np.array_equal(mrun.steps, want_steps) and np.array_equal(mrun.censored, want_cens)
    for i in np.flatnonzero(~want_cens):
        xi = x0[i]
        for _ in range(want_steps[i]):
            xi = xi + c[i]
        assert x[i].item() == xi
    # order independence: permuting the rows permutes the results
    perm = np.random.default_rng(perm_seed).permutation(len(x0))
    prun = _toy_drop([x0[i] for i in perm], [c[i] for i in perm], 1.0, budget, [])
    assert np.array_equal(prun.steps, run.steps[perm])
    assert np.array_equal(prun.censored, run.censored[perm])


def test_loop_start_escaped_budget_and_end_state():
    log = []
    run = _toy_drop([1.0, 0.0, 0.5, -10.0], [0.0, 0.25, 0.5, 0.1], 1.0, 5, log)
    assert run.steps.tolist() == [0, 4, 1, 5] and run.censored.tolist() == [0, 0, 0, 1]
    assert run.t == 5 and run.active.tolist() == [0, 0, 0, 1]
    assert run.rows["x"].shape == (1,) and np.isclose(run.rows["x"][0], -9.5)  # row 3 only
    assert [t for t, _ in log] == [0, 1, 2, 3, 4]
    log = []
    run = _toy_drop([2.0, 3.0], [1.0, 1.0], 1.0, 7, log)  # all escaped at the start
    assert run.steps.tolist() == [0, 0] and not log and run.t == 0


def test_loop_freeze_off_and_mark_off():
    x0, c = [0.0, 0.5, -3.0], [0.25, 0.5, 0.1]
    log = []
    run = _toy_drop(x0, c, 1.0, 6, log, freeze=False)  # first escape marked, all rows stepped
    assert run.steps.tolist() == [4, 1, 6] and run.censored.tolist() == [0, 0, 1]
    assert all(s.tolist() == [0, 1, 2] for _, s in log) and len(log) == 6
    run = _toy_drop(x0, c, 1.0, 6, [], freeze=False, mark=False)  # plain training
    assert run.steps.tolist() == [6, 6, 6] and run.censored.all()
    assert np.allclose(run.rows["x"], np.array(x0) + 6 * np.array(c))


def test_loop_on_freeze_and_retire():
    seen = []

    def on_freeze(rows, hit, idx):
        seen.append((rows["x"][hit].tolist(), idx.tolist()))

    _toy_drop([0.0, 0.5, 0.0], [0.5, 0.5, 0.1], 1.0, 4, [], on_freeze=on_freeze)
    assert seen == [([1.0], [1]), ([1.0], [0])]
    # retire (masking style): row 1 is lost at t = 2 and stays censored though x grows past δ
    x = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    c = torch.tensor([0.25, 0.5, 0.0], dtype=torch.float64)

    def step(s, t, active):
        return s.add_(torch.where(torch.from_numpy(active), c, torch.zeros_like(c)))

    run = run_to_escape(x, 3, monitor=lambda s, t, a: s.clone(), step=step, max_steps=6,
                        delta=1.0, drop=False, retire=lambda s, t, a: np.array([0, t == 2, 0]),
                        )  # fmt: skip
    assert run.steps.tolist() == [4, 6, 6] and run.censored.tolist() == [0, 1, 1]
    assert x.tolist() == [1.0, 1.0, 0.0] and run.active.tolist() == [0, 0, 1]


def test_loop_rejects_bad_options():
    kw = dict(monitor=lambda r, t, a: r["x"], step=lambda r, t, a: r, delta=1.0)
    rows = {"x": np.zeros(2)}
    with pytest.raises(ValueError, match="max_steps"):
        run_to_escape(rows, 2, max_steps=-1, **kw)
    with pytest.raises(ValueError, match="n_rows"):
        run_to_escape(rows, -2, max_steps=1, **kw)
    with pytest.raises(TypeError, match="callables"):
        run_to_escape(rows, 2, max_steps=1, **{**kw, "step": None})
    with pytest.raises(ValueError, match="mark"):
        run_to_escape(rows, 2, max_steps=1, mark=False, **kw)
    with pytest.raises(ValueError, match="retire"):
        run_to_escape(rows, 2, max_steps=1, retire=lambda r, t, a: np.zeros(2, bool), **kw)
    with pytest.raises(ValueError, match="on_freeze"):
        run_to_escape(rows, 2, max_steps=1, drop=False, on_freeze=lambda r, h, i: None, **kw)
