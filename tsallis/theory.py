r"""Closed-form theory of the J_Q continuum (Sections 3-6 and Appendices B-D of the paper).

Everything here is a pure numpy function of its arguments, vectorised by broadcasting, so the
simulators and figures draw the theory from one implementation. Paper numbers are arXiv
2604.25907 v1.

Gradient-flow escape (Section 5): along θ' = -∇ℓ_q the success probability obeys
p' = p^(2-q)·‖∇log p‖² (Eq. 6). For the sigmoid model P = σ(θ), ‖∇log p‖ = 1-p, which gives the
exact escape-time integral of Eq. 15.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from ._validate import check_q

__all__ = [
    "escape_integral",
    "escape_time_bounds",
    "sigmoid_flow_time",
    "sigmoid_escape_time",
    "sigmoid_escape_time_asymptotic",
    "speedup_ratio",
    "karm_escape_time",
    "flow_escape_time",
    "chain_escape_time",
    "escort",
    "dispersion_gap",
    "dispersion_gap_leading",
    "noise_equilibrium",
    "noise_fitting_time",
    "sampled_update_scale",
    "sampled_escape_steps",
    "grpo_update_scale",
    "garl_bias_leading_term",
    "maxrl_objective",
]

# Series lengths for the escape integral: both series converge at least like n·2^-n on the
# half-interval they are used on, so 100 terms are below double-precision rounding.
_SERIES_TERMS = 100


def _out(x):
    """0-d arrays come back as floats, the rest as arrays."""
    x = np.asarray(x, dtype=np.float64)
    return float(x) if x.ndim == 0 else x


def _expm1_over(a, t):
    """expm1(a·t)/a, equal to t at a = 0, with no cancellation for small a."""
    a, t = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(t, dtype=np.float64))
    zero = a == 0
    a_safe = np.where(zero, 1.0, a)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(zero, t, np.expm1(a_safe * t) / a_safe)


def _check_probs_open(x, name):
    xa = np.asarray(x, dtype=np.float64)
    if np.isnan(xa).any() or (xa <= 0).any() or (xa >= 1).any():
        raise ValueError(f"{name} must lie in (0, 1), got {x!r}")
    return xa


def escape_integral(p0, q, delta=0.5):
    r"""I = ∫_{p0}^{δ} u^(q-2) du, the integral of Thm 5.1/5.2.

    = (p0^-(1-q) - δ^-(1-q))/(1-q) for q < 1 and log(δ/p0) at q = 1, computed without
    cancellation as δ^-(1-q)·expm1((1-q)·log(δ/p0))/(1-q).

    >>> round(escape_integral(0.01, 0.0), 6), round(escape_integral(0.01, 1.0), 6)
    (98.0, 3.912023)
    """
    q = check_q(q)
    p0 = _check_probs_open(p0, "p0")
    delta = _check_probs_open(delta, "delta")
    if np.any(p0 > delta):
        raise ValueError(f"need p0 <= delta, got p0={p0!r}, delta={delta!r}")
    a = 1.0 - np.asarray(q, dtype=np.float64)
    return _out(np.exp(-a * np.log(delta)) * _expm1_over(a, np.log(delta / p0)))


def escape_time_bounds(p0, q, c, C, delta=0.5):
    r"""Θ bounds of Thm 5.1/5.2 given c ≤ ‖∇log P‖ ≤ C along the path: (I/C², I/c²).

    >>> escape_time_bounds(0.01, 0.0, 0.5, 1.0)
    (98.0, 392.0)
    """
    c = np.asarray(c, dtype=np.float64)
    C = np.asarray(C, dtype=np.float64)
    if np.any(c <= 0) or np.any(C < c) or np.isnan(c).any() or np.isnan(C).any():
        raise ValueError(f"need 0 < c <= C, got c={c!r}, C={C!r}")
    integral = np.asarray(escape_integral(p0, q, delta))
    return _out(integral / C**2), _out(integral / c**2)


def _sigmoid_antiderivative_q0(u):
    # ∫ du/(u²(1-u)²) by partial fractions: 1/u² + 2/u + 1/(1-u)² + 2/(1-u).
    return -1.0 / u + 2.0 * np.log(u) + 1.0 / (1.0 - u) - 2.0 * np.log1p(-u)


def _sigmoid_antiderivative_q1(u):
    # ∫ du/(u(1-u)²) = ∫ 1/u + 1/(1-u) + 1/(1-u)².
    return np.log(u) - np.log1p(-u) + 1.0 / (1.0 - u)


def _lower_series(a, b, q):
    """∫_a^b u^(q-2)(1-u)^-2 du for 0 < a <= b <= 1/2: Σ_n (n+1)·∫ u^(n+q-2)."""
    n = np.arange(_SERIES_TERMS, dtype=np.float64)
    a, b, q = (np.asarray(x)[..., None] for x in (a, b, q))
    e = n + q - 1.0
    log_ratio = np.log(b / a)
    # (b^e - a^e)/e without overflow or cancellation, exact at e = 0 (the log term of q = 1):
    # factor out the larger power, b^e for e > 0 and a^e for e < 0.
    scaled = np.where(
        e > 0,
        np.exp(e * np.log(b)) * _expm1_over(-e, log_ratio),
        np.exp(e * np.log(a)) * _expm1_over(np.minimum(e, 0.0), log_ratio),
    )
    terms = (n + 1.0) * scaled
    return terms.sum(-1)


def _upper_series(a, b, q):
    """∫_a^b u^(q-2)(1-u)^-2 du for 1/2 <= a <= b < 1, in v = 1-u: (1-v)^(q-2) = Σ c_n v^n."""
    v_lo = 1.0 - np.asarray(b, dtype=np.float64)
    v_hi = 1.0 - np.asarray(a, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    total = 1.0 / v_lo - 1.0 / v_hi  # n = 0: ∫ v^-2
    c_n = np.ones(np.broadcast(v_lo, v_hi, q).shape)
    c_n = c_n * (2.0 - q)  # c_1 = (2-q)
    total = total + c_n * np.log(v_hi / v_lo)  # n = 1: ∫ v^-1
    for n in range(2, _SERIES_TERMS):
        c_n = c_n * (n + 1.0 - q) / n  # rising factorial (2-q)_n / n!
        total = total + c_n * (v_hi ** (n - 1) - v_lo ** (n - 1)) / (n - 1)
    return total


def sigmoid_flow_time(p_start, p_end, q):
    r"""Exact gradient-flow time of the sigmoid model from P = p_start to P = p_end (Eq. 15):

        T = ∫_{p_start}^{p_end} du / (u^(2-q)·(1-u)²).

    Closed forms at q = 0 and q = 1 (partial fractions of Eq. 15); for 0 < q < 1 two convergent
    power series (in u below 1/2, in 1-u above), accurate to double precision. 0 < p_start <=
    p_end < 1, broadcasting. Also gives the near-optimum time of Prop. C.1 (p_start = 1-ε0).

    >>> round(sigmoid_flow_time(0.01, 0.5, 0.5), 2)
    20.83
    """
    q = np.asarray(check_q(q), dtype=np.float64)
    a = _check_probs_open(p_start, "p_start")
    b = _check_probs_open(p_end, "p_end")
    if np.any(a > b):
        raise ValueError(f"need p_start <= p_end, got {p_start!r} > {p_end!r}")
    a, b, q = np.broadcast_arrays(a, b, q)
    mid_lo = np.minimum(b, 0.5)
    mid_hi = np.maximum(a, 0.5)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        general = np.where(a < 0.5, _lower_series(a, mid_lo, q), 0.0) + np.where(
            b > 0.5, _upper_series(mid_hi, b, q), 0.0
        )
        q0 = _sigmoid_antiderivative_q0(b) - _sigmoid_antiderivative_q0(a)
        q1 = _sigmoid_antiderivative_q1(b) - _sigmoid_antiderivative_q1(a)
    return _out(np.where(q == 0, q0, np.where(q == 1, q1, general)))


def sigmoid_escape_time(p0, q, delta=0.5):
    r"""Escape time T_q(p0, δ) of the sigmoid model under gradient flow (Eq. 15, exact).

    To δ = 1/2: q = 0 gives 1/p0 - 1/(1-p0) + 2 ln((1-p0)/p0); q = 1 gives
    ln((1-p0)/p0) + (1-2p0)/(1-p0).

    >>> [round(sigmoid_escape_time(1e-2, q), 2) for q in (0.0, 0.5, 1.0)]
    [108.19, 20.83, 5.58]
    """
    return sigmoid_flow_time(p0, delta, q)


def sigmoid_escape_time_asymptotic(p0, q):
    r"""Leading 1+o(1) term of :func:`sigmoid_escape_time` as p0 -> 0 (Appendix C.1):

    1/p0 at q = 0, p0^-(1-q)/(1-q) for 0 < q < 1, log(1/p0) at q = 1.

    >>> sigmoid_escape_time_asymptotic(1e-4, 0.5)
    200.0
    """
    q = np.asarray(check_q(q), dtype=np.float64)
    p0 = _check_probs_open(p0, "p0")
    with np.errstate(divide="ignore"):
        power = np.exp(-(1.0 - q) * np.log(p0)) / np.where(q == 1, 1.0, 1.0 - q)
    return _out(np.where(q == 1, -np.log(p0), power))


def speedup_ratio(p0, q, q_prime, delta=0.5):
    r"""T_q / T_q' for the sigmoid flow (exact); Θ(p0^-(q'-q)) for q < q' < 1 (Section 5).

    >>> round(speedup_ratio(1e-4, 0.0, 1.0), 1)
    981.1
    """
    return _out(
        np.asarray(sigmoid_escape_time(p0, q, delta))
        / np.asarray(sigmoid_escape_time(p0, q_prime, delta))
    )


def karm_escape_time(p0, q, K, k=1, delta=0.5):
    r"""Exact flow escape time of the K-arm softmax bandit with k correct arms (Eq. 6 on the
    K-arm softmax model).

    With the correct arms sharing P equally and the wrong arms sharing 1-P equally (a symmetry the
    flow keeps), ‖∇P‖² = P²(1-P)²·K/(k(K-k)), so p' = p^(2-q)(1-p)²·K/(k(K-k)) and

        T_K(p0, q) = (k(K-k)/K) · T_sigmoid(p0, q).

    Uniform initialisation is p0 = k/K.

    >>> round(karm_escape_time(1e-2, 1.0, K=2), 4) == round(sigmoid_escape_time(1e-2, 1.0) / 2, 4)
    True
    """
    K = int(K)
    k = int(k)
    if K < 2 or not 1 <= k < K:
        raise ValueError(f"need K >= 2 arms and 1 <= k < K correct arms, got K={K}, k={k}")
    return _out(k * (K - k) / K * np.asarray(sigmoid_escape_time(p0, q, delta)))


def flow_escape_time(p0, q, score_norm_sq, delta=0.5):
    r"""Gradient-flow escape time for any model whose squared score along its path is known as a
    function of P (Eq. 6, Thm 5.1):

        T = ∫_{p0}^{δ} du / (u^(2-q)·‖∇log P‖²(u)).

    ``score_norm_sq`` maps an array of P values to ‖∇log P‖² there. Integrated with adaptive
    quadrature in s = log u (integrand u^(q-1)/‖s‖²), relative accuracy ~1e-10. Broadcasts over
    p0, q and delta.

    >>> sig = lambda u: (1 - u) ** 2
    >>> abs(flow_escape_time(1e-4, 0.5, sig) / sigmoid_escape_time(1e-4, 0.5) - 1) < 1e-9
    True
    """
    from scipy import integrate

    if not callable(score_norm_sq):
        raise TypeError("score_norm_sq must be a callable P -> ||grad log P||^2")
    q = np.asarray(check_q(q), dtype=np.float64)
    p0 = _check_probs_open(p0, "p0")
    delta = _check_probs_open(delta, "delta")
    if np.any(p0 > delta):
        raise ValueError(f"need p0 <= delta, got p0={p0!r}, delta={delta!r}")

    def one(p0_, q_, delta_):
        def integrand(s):
            u = np.exp(s)
            return np.exp((q_ - 1.0) * s) / float(score_norm_sq(u))

        lo, hi = np.log(p0_), np.log(delta_)
        # Split the log range into unit pieces so quad sees smooth, well-scaled segments.
        edges = np.linspace(lo, hi, max(2, int(np.ceil(hi - lo)) + 1))
        return sum(
            integrate.quad(integrand, a, b, epsrel=1e-12, epsabs=0.0, limit=200)[0]
            for a, b in zip(edges[:-1], edges[1:], strict=True)
        )

    return _out(np.vectorize(one, otypes=[np.float64])(p0, q, delta))


def chain_escape_time(p0, q, L, V, delta=0.5):
    r"""Flow escape time of the length-L autoregressive tabular chain over V tokens.

    Success iff every step emits its target token; P = Π_l a_l. From a symmetric start (all steps
    share the per-step target probability a = P^(1/L), wrong tokens equal; the flow keeps that
    symmetry) ‖∇log P‖² = L·(1-a)²·V/(V-1), and :func:`flow_escape_time` integrates Eq. 6.
    The uniform start is p0 = V^-L. L = 1, V = 2 is the K = 2 bandit, T_sigmoid/2. Its
    log-log slope in 1/p0 is 1-q only up to log factors: compare with this integral, not 1-q.

    >>> abs(chain_escape_time(1e-3, 1.0, 1, 2) / karm_escape_time(1e-3, 1.0, K=2) - 1) < 1e-9
    True
    """
    L = int(L)
    V = int(V)
    if L < 1 or V < 2:
        raise ValueError(f"need chain length L >= 1 and vocabulary V >= 2, got L={L}, V={V}")
    return flow_escape_time(
        p0, q, lambda u: L * (-np.expm1(np.log(u) / L)) ** 2 * V / (V - 1.0), delta
    )


def escort(alpha, q):
    r"""Minimiser of Σ_j α_j·(-log_q θ_j) over the simplex (Thm 3.1): θ_j ∝ α_j^(1/q).

    q = 1 returns α (normalised). At q = 0 every argmax vertex is a minimiser; this returns the
    q -> 0+ limit, uniform over the modes of α (one-hot when the mode is unique). Computed as a
    softmax of log(α)/q. α: non-negative weights along the last axis.

    >>> escort([0.2, 0.8], 0.5)
    array([0.05882353, 0.94117647])
    """
    q = check_q(q)
    alpha = np.asarray(alpha, dtype=np.float64)
    if alpha.ndim == 0 or np.isnan(alpha).any() or (alpha < 0).any():
        raise ValueError(f"alpha must be a non-negative vector, got {alpha!r}")
    if (alpha.sum(-1) <= 0).any():
        raise ValueError("alpha must have a positive entry")
    if q == 0:
        is_mode = alpha == alpha.max(-1, keepdims=True)
        return is_mode / is_mode.sum(-1, keepdims=True)
    with np.errstate(divide="ignore"):
        logits = np.log(alpha) / q
    logits = logits - logits.max(-1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(-1, keepdims=True)


def dispersion_gap(P, q):
    r"""J_Q - ℓ_q(mean P) ≥ 0 over a set of per-example success probabilities P (Prop. B.1).

    Zero iff P is constant (for q > 0); P along the last axis.

    >>> dispersion_gap([0.5, 0.5], 0.5)
    0.0
    """
    from .qlog import loss_q

    P = np.asarray(P, dtype=np.float64)
    return _out(np.mean(loss_q(P, q), -1) - loss_q(P.mean(-1), q))


def dispersion_gap_leading(P, q):
    r"""Second-order term of :func:`dispersion_gap` (Prop. B.1): (q/2)·P̄^(-q-1)·Var(P).

    >>> round(dispersion_gap_leading([0.4, 0.6], 1.0), 6)
    0.02
    """
    q = check_q(q)
    P = np.asarray(P, dtype=np.float64)
    mean = P.mean(-1)
    return _out(q / 2.0 * mean ** (-q - 1.0) * P.var(-1))


def noise_equilibrium(eps, q):
    r"""Stable contamination p~ of the two-label noise model (Prop. C.2).

    Minimising (1-ε)ℓ_q(p) + ε·ℓ_q(1-p) gives p~/(1-p~) = (ε/(1-ε))^(1/q): the escort of the
    label frequencies. q = 1 fits the noise (p~ = ε); q -> 0 gives 0, the q = 0 value returned.
    ε ∈ [0, 1/2).

    >>> noise_equilibrium(0.2, 1.0), round(noise_equilibrium(0.2, 0.5), 6)
    (0.2, 0.058824)
    """
    q = np.asarray(check_q(q), dtype=np.float64)
    eps = np.asarray(eps, dtype=np.float64)
    if np.isnan(eps).any() or (eps < 0).any() or (eps >= 0.5).any():
        raise ValueError(f"noise rate eps must lie in [0, 1/2), got {eps!r}")
    with np.errstate(divide="ignore"):
        logit = np.log(eps) - np.log1p(-eps)
        scaled = np.where(q == 0, -np.inf, logit / np.where(q == 0, 1.0, q))
    return _out(1.0 / (1.0 + np.exp(-scaled)))


def noise_fitting_time(eta, eps, q):
    r"""Paper's time to reach contamination η from p~ ≈ 0 (Prop. C.2): η^(q+1)/((q+1)·ε).

    It integrates p~' = ε·p~^(-q)·‖∇p~‖² with ‖∇p~‖ = 1, i.e. it assumes the gradient of the
    contaminating probability is bounded below. Softmax/sigmoid logits violate that
    (∇p~ ∝ p~ near 0); the simulators measure the consequence.

    >>> noise_fitting_time(0.01, 0.1, 0.0)
    0.1
    """
    q = np.asarray(check_q(q), dtype=np.float64)
    eta = np.asarray(eta, dtype=np.float64)
    eps = np.asarray(eps, dtype=np.float64)
    if (eta <= 0).any() or (eps <= 0).any():
        raise ValueError("eta and eps must be positive")
    return _out(eta ** (q + 1.0) / ((q + 1.0) * eps))


def _binomial_table(P, M):
    P = np.asarray(P, dtype=np.float64)
    if np.isnan(P).any() or (P < 0).any() or (P > 1).any():
        raise ValueError(f"P must lie in [0, 1], got {P!r}")
    M = int(M)
    if M < 1:
        raise ValueError(f"group size M must be >= 1, got {M}")
    n = np.arange(M + 1, dtype=np.float64)
    return n, stats.binom.pmf(n, M, P[..., None]), M


def sampled_update_scale(P, M, q):
    r"""Expected GARL/PAFT update with 0/1 rewards, in units of ∇log P (the sampled trap:
    see docs/conventions.md, "Normalisation"):

        c = Σ_{n≥1} Binom(n; M, P)·(n/M)^(1-q),

    since given n successes the plug-in estimate is (n/M)^(-q)·(1/M)·Σ_success ∇log p(z) and each
    successful z is a posterior draw. M^(q-1)(1-(1-P)^M) ≤ c ≤ min(M^q P, P^(1-q)): the
    amplification is capped near M^q when M·P ≪ 1. The flow value is P^(1-q).

    >>> round(sampled_update_scale(0.5, 1, 0.0), 6)
    0.5
    """
    q = np.asarray(check_q(q), dtype=np.float64)
    n, pmf, M = _binomial_table(P, M)
    frac = n / M
    with np.errstate(divide="ignore"):
        power = np.where(
            n > 0, np.exp((1.0 - q[..., None]) * np.log(np.where(n > 0, frac, 1.0))), 0
        )
    return _out((pmf * power).sum(-1))


def sampled_escape_steps(p0, M, q, eta):
    r"""Expected steps to escape for sampled plug-in GARL with 0/1 rewards when p0 ≪ 1/M.

    Each group with a single success multiplies the sigmoid model's P by about exp(η·M^(q-1));
    the waits between successes are geometric with mean 1/(M·p), so the total is

        Σ_j 1/(M·p0·e^(j·a)) = 1/(M·p0·(1 - exp(-a))),   a = η·M^(q-1).

    >>> round(sampled_escape_steps(1e-4, 8, 0.0, 0.1), 1)
    100626.3
    """
    q = np.asarray(check_q(q), dtype=np.float64)
    p0 = _check_probs_open(p0, "p0")
    eta = np.asarray(eta, dtype=np.float64)
    if (eta <= 0).any():
        raise ValueError(f"step size eta must be positive, got {eta!r}")
    rate = eta * float(M) ** (q - 1.0)
    return _out(1.0 / (M * p0 * -np.expm1(-rate)))


def grpo_update_scale(P, M, eps=1e-4):
    r"""Exact expected GRPO update with 0/1 rewards, in units of ∇log P.

    GRPO's advantage is (r_m - r̄)/(s + eps) with s the unbiased group standard deviation
    s_n = sqrt(n(M-n)/(M(M-1))) for n successes. Successes contribute the posterior score ∇log P,
    failures ∇log(1-P) = -P/(1-P)·∇log P, so

        E[ĝ]/∇log P = E_n[(n/M)(1-n/M)/(s_n + eps)] / (1-P)  ≈ sqrt(P/(1-P)) for M·P ≫ 1,

    i.e. an amplification [P(1-P)]^(-1/2) of ∇P: roughly q = 1/2 on the continuum.

    >>> round(grpo_update_scale(0.5, 2, eps=0.0), 6)
    0.353553
    """
    n, pmf, M = _binomial_table(P, M)
    if M < 2:
        raise ValueError("GRPO needs a group of M >= 2 samples for its standard deviation")
    P = np.asarray(P, dtype=np.float64)
    if (P >= 1).any():
        raise ValueError("grpo_update_scale needs P < 1")
    s = np.sqrt(n * (M - n) / (M * (M - 1.0)))
    frac = n / M
    with np.errstate(invalid="ignore", divide="ignore"):
        per_n = np.where(s + eps > 0, frac * (1 - frac) / (s + eps), 0.0)
    return _out((pmf * per_n).sum(-1) / (1.0 - P))


def garl_bias_leading_term(P, q, M, var_w, cov_gw, grad_l1):
    r"""Leading O(1/M) bias of plug-in GARL (Thm 6.1, delta method):

        E[ĝ] - ∇ℓ_q ≈ (q/(M·P^(q+1)))·[((q+1)/2)·∇ℓ_1·Var(w) - Cov(g, w)]

    with per-sample gradient g = -w·∇log p(z, y*|x*) (E[g] = ∇ℓ_0 = -∇P), ∇ℓ_1 = -∇P/P,
    Var(w) and Cov(g, w) under the prior. Vector arguments broadcast over the last axis.
    Valid only when many samples carry weight (M·P ≫ 1 for 0/1 rewards; M ≫ Var(w)/P² for
    continuous weights): a fixed-P, large-M statement.

    >>> garl_bias_leading_term(0.5, 0.0, 8, 0.25, 0.1, -2.0)
    0.0
    """
    q = check_q(q)
    P = np.asarray(P, dtype=np.float64)
    if (P <= 0).any() or (P > 1).any():
        raise ValueError(f"P must lie in (0, 1], got {P!r}")
    if int(M) < 1:
        raise ValueError(f"M must be >= 1, got {M}")
    bracket = (q + 1.0) / 2.0 * np.asarray(grad_l1, dtype=np.float64) * np.asarray(
        var_w, dtype=np.float64
    ) - np.asarray(cov_gw, dtype=np.float64)
    return _out(q / (int(M) * P ** (q + 1.0)) * bracket)


def maxrl_objective(P, M):
    r"""Truncated log-likelihood -Σ_{k=1}^{M} (1-P)^k/k (-> log P as M -> ∞).

    At q = 1 with 0/1 rewards, GARL's expected ascent direction is exactly its gradient (the
    MaxRL identity, from the GARL estimator of Eq. 9): d/dP = (1-(1-P)^M)/P.

    >>> round(maxrl_objective(0.5, 1), 6)
    -0.5
    """
    P = np.asarray(P, dtype=np.float64)
    if (P < 0).any() or (P > 1).any() or np.isnan(P).any():
        raise ValueError(f"P must lie in [0, 1], got {P!r}")
    k = np.arange(1, int(M) + 1, dtype=np.float64)
    return _out(-((1.0 - P[..., None]) ** k / k).sum(-1))
