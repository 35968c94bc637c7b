"""The adaptive q of sims.table1_engine.adaptive_q in the regime it is built for (p0 = 1e-20 and
1e-30, Adam ε = 1e-8, exact gradient of the sigmoid): sims.adaptive_escape.  What the tests
assert is what was measured (docs/experiments/table1.md, "Adaptive q in the stall regime")."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sims.adaptive_escape import adam_q_rule_escape, adaptive_rule, fixed_rule, held_rule
from sims.experiments.adam_threshold import adam_exact_escape, score_scale
from sims.models import LatentCategorical, Sigmoid, TwoLabelNoise

KW = {"lr": 0.01, "eps": 1e-8, "max_steps": 20000}


@pytest.mark.parametrize("model", [Sigmoid(), LatentCategorical(K=4)], ids=lambda m: m.label())
@pytest.mark.parametrize("q", [0.25, 0.75, 1.0])
def test_fixed_rule_is_adam_exact_escape(model, q):
    """With a fixed q the driver is the Adam of adam_exact_escape, step for step."""
    th = model.init(1e-6)
    steps, censored = adam_exact_escape(model, th[None], q, KW["lr"], KW["eps"], 5000)
    r = adam_q_rule_escape(model, th, fixed_rule(q), lr=KW["lr"], eps=KW["eps"], max_steps=5000)
    assert r.step == (None if censored[0] else int(steps[0]))
    assert np.all(r.q == q)


@pytest.fixture(scope="module", params=[1e-20, 1e-30], ids=lambda p: f"p0={p:g}")
def runs(request):
    model, p0 = Sigmoid(), request.param
    th = model.init(p0)
    fixed = {q: adam_q_rule_escape(model, th, fixed_rule(q), **KW).step
             for q in (0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.0)}  # fmt: skip
    engine = adam_q_rule_escape(model, th, adaptive_rule(KW["eps"], 2.0), **KW)
    probed = adam_q_rule_escape(model, th, adaptive_rule(KW["eps"], 2.0),
                                s_init=score_scale(model, th), **KW)  # fmt: skip
    held = adam_q_rule_escape(model, th, held_rule(KW["eps"], 2.0),
                              s_init=score_scale(model, th), **KW)  # fmt: skip
    return p0, fixed, engine, probed, held


def test_adaptive_escapes_where_q_half_stalls_when_s_is_measured_first(runs):
    """Measured: q = 0.5 never escapes in 20000 steps; adaptive q with s measured before the
    first step escapes (p0 = 1e-20: 3540 steps, 1e-30: 5863), faster than q = 1 (4687, 6990)
    and within 2.5x of the best fixed q on the grid (1671 at q = 0.6, 2520 at q = 0.75)."""
    p0, fixed, _engine, probed, _held = runs
    assert fixed[0.5] is None and fixed[1.0] is not None
    best = min(s for s in fixed.values() if s is not None)
    assert probed.step is not None
    assert probed.step < fixed[1.0]
    assert probed.step <= 2.5 * best
    # its first q is the rule's: 1 - log(ε·10²/s)/log p0, s = 1 - p0 ≈ 1
    assert probed.q[0] == pytest.approx(1 - math.log(1e-6) / math.log(p0), abs=1e-9)


def test_adaptive_with_a_q1_first_step_stalls(runs):
    """The engine's schedule (the first step at q = 1 measures s) stalls where q = 1 escapes:
    that step puts g ≈ s into Adam's second moment, and every later gradient (≈ ε·10², held
    there by the rule) is divided by √v̂ ≫ itself."""
    _p0, fixed, engine, _probed, _held = runs
    assert engine.q[0] == 1.0 and engine.q[1] < 1.0
    assert fixed[1.0] is not None and engine.step is None


def test_held_adaptive_q_is_as_fast_as_the_best_fixed_q(runs):
    """The engine's rule (HeldAdaptiveQ: s probed first, q held until the escape) escapes where
    q = 0.5 stalls, within 1.15x of the best fixed q of the grid (measured 1.02x at p0 = 1e-20,
    1.08x at 1e-30) and over 2x faster than q = 1, where the per-step rule is 2.1-2.3x slower
    than the best: holding q lets the gradient grow with P, the per-step rule pins it at
    ε·10^margin."""
    p0, fixed, _engine, probed, held = runs
    best = min(s for s in fixed.values() if s is not None)
    assert fixed[0.5] is None and held.step is not None
    assert held.step <= 1.15 * best < probed.step
    assert 2 * held.step < fixed[1.0]
    assert np.all(held.q == held.q[0])  # held from the first step to the escape
    assert held.q[0] == pytest.approx(1 - math.log(1e-6) / math.log(p0), abs=1e-9)


def test_driver_rejects_bad_input():
    m = Sigmoid()
    with pytest.raises(ValueError, match="shape"):
        adam_q_rule_escape(m, np.zeros(2), fixed_rule(0.5), **KW)
    with pytest.raises(ValueError, match="positive"):
        adam_q_rule_escape(m, m.init(1e-3), fixed_rule(0.5), lr=0.0, eps=1e-8, max_steps=10)
    with pytest.raises(ValueError, match="max_steps"):
        adam_q_rule_escape(m, m.init(1e-3), fixed_rule(0.5), lr=0.1, eps=1e-8, max_steps=0)
    two = TwoLabelNoise()
    with pytest.raises(ValueError, match="one-term"):
        adam_q_rule_escape(two, two.init(1e-3), fixed_rule(0.5), **KW)
    with pytest.raises(ValueError, match="outside"):
        adam_q_rule_escape(m, m.init(1e-3), lambda lp, s: 1.5, **KW)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fixed_rule(-0.1)
    assert adam_q_rule_escape(m, m.init(0.9), fixed_rule(0.5), **KW).step == 0
