"""The q-log family (Section 2): hand values, continuity at the ends, autograd, input kinds."""

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from tsallis import amplification, exp_q, log_q, loss_q

unit_q = st.floats(0.0, 1.0, allow_nan=False)
prob = st.floats(1e-300, 1.0, allow_nan=False, exclude_min=False)


@pytest.mark.parametrize(
    "u, q, expected",
    [
        (0.25, 0.0, -0.75),  # u - 1
        (0.25, 0.5, -1.0),  # 2(sqrt(u) - 1)
        (0.25, 1.0, math.log(0.25)),
        (1.0, 0.3, 0.0),
        (4.0, 0.5, 2.0),  # 2(2 - 1)
        (0.0, 0.0, -1.0),
        (0.0, 0.5, -2.0),  # -1/(1-q)
        (0.0, 1.0, -math.inf),
    ],
)
def test_log_q_hand_values(u, q, expected):
    assert log_q(u, q) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "x, q, expected",
    [(-0.75, 0.0, 0.25), (-1.0, 0.5, 0.25), (0.0, 0.7, 1.0), (1.0, 1.0, math.e), (-3.0, 0.5, 0.0)],
)
def test_exp_q_hand_values(x, q, expected):
    # (-3, 0.5): 1 + 0.5·(-3) < 0, so the cut-off [.]_+ gives 0.
    assert exp_q(x, q) == pytest.approx(expected, rel=1e-12)


def test_loss_and_amplification_hand_values():
    # A 4-sample group's success rate 1/4: ℓ_0 = 3/4, ℓ_1/2 = 2(1 - 1/2) = 1, ℓ_1 = log 4.
    assert loss_q(0.25, 0.0) == pytest.approx(0.75)
    assert loss_q(0.25, 0.5) == pytest.approx(1.0)
    assert loss_q(0.25, 1.0) == pytest.approx(math.log(4))
    assert amplification(0.25, 0.5) == pytest.approx(2.0)
    assert amplification(0.25, 1.0) == pytest.approx(4.0)
    assert amplification(0.0, 0.0) == 1.0
    assert amplification(0.0, 0.5) == math.inf


@given(u=st.floats(1e-300, 1e6), q=unit_q)
@example(u=1e-300, q=1 - 1e-12)
@example(u=0.5, q=1 - 1e-15)
def test_log_q_matches_definition_without_cancellation(u, q):
    got = log_q(u, q)
    # mpmath-free reference: the series of expm1 in (1-q)·log u is what the closed form means.
    a, lu = 1.0 - q, math.log(u)
    ref = lu if a == 0 else math.expm1(a * lu) / a
    assert got == pytest.approx(ref, rel=1e-12, abs=1e-300)
    # and it approaches log u continuously
    if a * abs(lu) < 1e-6:
        assert got == pytest.approx(lu, rel=1e-5)


@given(u=st.floats(1e-12, 1e3), q=unit_q)
def test_exp_q_inverts_log_q(u, q):
    assert exp_q(log_q(u, q), q) == pytest.approx(u, rel=1e-9)


@given(u=st.floats(1e-6, 1.0), q=unit_q)
def test_derivative_of_log_q_is_u_pow_minus_q(u, q):
    x = torch.tensor(u, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(log_q(x, q), x)
    assert float(grad) == pytest.approx(u ** (-q), rel=1e-10)


def test_continuity_as_q_to_1_and_u_to_0():
    qs = 1.0 - np.logspace(-1, -15, 15)
    vals = np.array([log_q(1e-3, q) for q in qs])
    assert np.all(np.diff(vals) < 0)  # monotone in q, no cancellation noise
    assert vals[-1] == pytest.approx(math.log(1e-3), rel=1e-12)
    us = np.logspace(-1, -300, 30)
    assert log_q(us, 0.5) == pytest.approx(-2.0 * (1 - np.sqrt(us)), rel=1e-12)
    assert log_q(0.0, 0.5) == -2.0


def test_input_kinds_and_vector_q():
    assert isinstance(log_q(0.5, 0.5), float)
    arr = log_q(np.array([0.25, 1.0]), 0.5)
    assert isinstance(arr, np.ndarray) and arr.tolist() == [-1.0, 0.0]
    t = log_q(torch.tensor([0.25, 1.0], dtype=torch.float32), 0.5)
    assert t.dtype == torch.float32 and t.tolist() == [-1.0, 0.0]
    # q broadcast: one value per entry
    got = loss_q(np.array([0.25, 0.25, 0.25]), np.array([0.0, 0.5, 1.0]))
    assert got == pytest.approx([0.75, 1.0, math.log(4)])
    got_t = amplification(torch.tensor([0.25, 0.25]), torch.tensor([0.0, 1.0]))
    assert got_t.tolist() == [1.0, 4.0]


def test_autograd_is_finite_at_q_equal_1_and_q_equal_0():
    for q in (0.0, 1.0, torch.tensor([0.0, 1.0], dtype=torch.float64)):
        x = torch.tensor([0.3, 0.6], dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(loss_q(x, q).sum(), x)
        assert torch.isfinite(g).all()


@pytest.mark.parametrize("bad_q", [-0.1, 1.5, math.nan])
def test_bad_q_raises_value_error(bad_q):
    with pytest.raises(ValueError, match=r"q must lie in \[0, 1\]"):
        log_q(0.5, bad_q)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(TypeError, match="bool"):
        log_q(0.5, True)
    with pytest.raises(TypeError, match="floating"):
        log_q(torch.tensor([1, 2]), 0.5)
    with pytest.raises(ValueError, match="u >= 0"):
        log_q(-0.1, 0.5)
    with pytest.raises(ValueError, match="probability"):
        loss_q(1.5, 0.5)
    with pytest.raises(ValueError, match="probability"):
        amplification(np.array([0.5, np.nan]), 0.5)
