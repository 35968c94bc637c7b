"""q schedules (tsallis.schedules): range, endpoints, monotonicity, validation."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tsallis.schedules import Callable, Constant, Cosine, Linear, Schedule, Step, as_schedule

unit = st.floats(0.0, 1.0, allow_nan=False)
steps = st.integers(1, 10_000)
times = st.integers(0, 20_000)


@given(unit, unit, steps, times)
@example(0.0, 1.0, 1, 0)
@example(1.0, 0.0, 3, 3)
def test_linear_and_cosine_range_and_endpoints(q0, q1, n, t):
    for cls in (Linear, Cosine):
        s = cls(q0, q1, steps=n)
        assert s(0) == pytest.approx(q0, abs=1e-12)
        assert s(n) == pytest.approx(q1, abs=1e-12)
        assert s(n + 17) == s(n)
        v = s(t)
        assert 0.0 <= v <= 1.0
        assert min(q0, q1) - 1e-12 <= v <= max(q0, q1) + 1e-12


@given(unit, unit, steps, times, times)
def test_linear_and_cosine_are_monotone(q0, q1, n, t1, t2):
    a, b = sorted((t1, t2))
    for cls in (Linear, Cosine):
        s = cls(q0, q1, steps=n)
        if q1 >= q0:
            assert s(a) <= s(b) + 1e-12
        else:
            assert s(a) >= s(b) - 1e-12


def test_cosine_midpoint_and_linear_values():
    assert Cosine(1.0, 0.0, steps=10)(5) == pytest.approx(0.5)
    assert Cosine(0.0, 1.0, steps=4)(1) == pytest.approx((1 - math.cos(math.pi / 4)) / 2)
    assert Linear(0.2, 0.6, steps=4)(1) == pytest.approx(0.3)


@given(st.integers(0, 1000), unit, unit, times)
def test_step_schedule(at, before, after, t):
    s = Step(at_step=at, q_before=before, q_after=after)
    assert s(t) == (before if t < at else after)


def test_step_default_is_sft_then_rlvr():
    s = Step(at_step=3)
    assert [s(t) for t in range(5)] == [1.0, 1.0, 1.0, 0.0, 0.0]


@given(unit, times)
def test_constant_and_float(q, t):
    assert as_schedule(q)(t) == q == Constant(q)(t)


def test_callable_is_checked_at_use_time():
    s = as_schedule(lambda t: 0.5 if t < 2 else 1.5)
    assert isinstance(s, Callable) and isinstance(s, Schedule)
    assert s(1) == 0.5
    with pytest.raises(ValueError, match=r"\[0, 1\].*1\.5"):
        s(2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        as_schedule(lambda t: float("nan"))(0)
    with pytest.raises(TypeError, match="real number"):
        as_schedule(lambda t: "0.5")(0)


def test_schedule_passthrough_and_errors():
    s = Linear(0.0, 1.0, steps=2)
    assert as_schedule(s) is s
    for bad in (-0.1, 1.01, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            as_schedule(bad)
    with pytest.raises(TypeError):
        as_schedule(True)
    with pytest.raises(TypeError):
        as_schedule("0.5")
    with pytest.raises(ValueError, match="steps"):
        Linear(0.0, 1.0, steps=0)
    with pytest.raises(ValueError, match="q_end"):
        Cosine(0.0, 2.0, steps=3)
    with pytest.raises(ValueError, match="at_step"):
        Step(at_step=-1)
    with pytest.raises(ValueError, match="step"):
        Constant(0.5)(-1)
    with pytest.raises(TypeError, match="callable"):
        Callable(3)


def test_schedules_are_frozen():
    s = Linear(0.0, 1.0, steps=2)
    with pytest.raises(AttributeError):
        s.q_end = 0.5  # type: ignore[misc]
