r"""The simulator models: small enough that P and ∇P are exact (Sections 5 and 6 of the paper).

Every model is a frozen dataclass with

* ``dim`` — the number of trainable parameters ``D``;
* ``init(p0)`` — the cold-start parameters ``θ0 [D]`` (float64 numpy) with monitored P = p0;
* ``terms(theta) -> (weights [J], P [..., J], dP [..., J, D])`` — the objective is
  ``Σ_j weights_j · ℓ_q(P_j)`` (Section 2, ℓ_q = -log_q P), so the exact negative gradient is
  ``Σ_j weights_j · P_j^(-q) ∇P_j`` (Prop. 4.1, ∇ℓ_q = P^(-q)∇ℓ_0);
* ``monitor(theta) -> [...]`` — the scalar whose crossing of δ defines escape (P for most models,
  the contamination for the noise models).

``theta`` may carry any leading batch dims ``[..., D]``, so gradient descent runs every setting
of a sweep in one array program.  The sampled versions of these models (torch, M samples per
step) live in :mod:`sims.sampled`.

>>> import numpy as np
>>> m = Sigmoid()
>>> th = m.init(1e-3)
>>> float(m.monitor(th))
0.001
>>> w, P, dP = m.terms(th)
>>> bool(np.isclose(dP[0, 0], 1e-3 * (1 - 1e-3)))
True
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit

from ._fast import log_softmax, softmax

__all__ = [
    "Sigmoid",
    "KArmBandit",
    "LatentCategorical",
    "TabularChain",
    "TwoLabelNoise",
    "TwoLabelNoiseDirect",
    "ManyExampleNoise",
    "MODELS",
    "make_model",
]


# the weights [1.0] of a one-term objective, shared read-only (no allocation per call)
_ONE = np.ones(1)
_ONE.flags.writeable = False
_CLEAN = np.array([1.0, 0.0])  # one-hot of the clean label (two-label noise model)
_CLEAN.flags.writeable = False


@functools.cache
def _first_k(n: int, k: int) -> np.ndarray:
    """Read-only float64 indicator ``1[j < k]`` for j = 0..n-1 (K-arm correct arms, one-hots)."""
    out = (np.arange(n) < k).astype(np.float64)
    out.flags.writeable = False
    return out


def _check_p(p0: float, name: str = "p0", hi: float = 1.0) -> float:
    p0 = float(p0)
    if not 0.0 < p0 < hi:
        raise ValueError(f"{name} must lie in (0, {hi}), got {p0}")
    return p0


def _check_theta(theta, dim: int) -> np.ndarray:
    theta = np.asarray(theta, dtype=np.float64)
    if theta.shape[-1:] != (dim,):
        raise ValueError(f"theta must have shape [..., {dim}], got {theta.shape}")
    return theta


@dataclass(frozen=True)
class Sigmoid:
    """P = σ(θ), one parameter (Appendix C.1).  Flow: p' = p^(2-q)(1-p)^2 (Eq. 15)."""

    name = "sigmoid"

    @property
    def dim(self) -> int:
        return 1

    def init(self, p0: float) -> np.ndarray:
        return np.array([logit(_check_p(p0))])

    def terms(self, theta):
        theta = _check_theta(theta, 1)
        P = expit(theta)
        return _ONE, P, (P * (1.0 - P))[..., None]

    def monitor(self, theta):
        return expit(_check_theta(theta, 1)[..., 0])

    def _monitor_of_P(self, P):
        """monitor(θ) from ``terms(θ)[1]`` (the same numbers, not recomputed)."""
        return P[..., 0]

    def label(self) -> str:
        return "sigmoid"


@dataclass(frozen=True)
class KArmBandit:
    """K-arm softmax bandit, arms ``0..k-1`` correct (w = 1), the rest w = 0; all logits train.

    P = Σ_{j<k} π_j with π = softmax(θ);  ∂P/∂θ_j = π_j (1[j<k] - P).
    ``wrong_init="equal"`` puts the wrong mass evenly on the K-k wrong arms (the flow keeps that
    symmetry, and T has a closed form, ``tsallis.theory.karm_escape_time``); ``"concentrated"``
    puts all but a 1e-3 share of it on one wrong arm.
    """

    K: int = 4
    k: int = 1
    wrong_init: str = "equal"
    name = "karm"

    def __post_init__(self):
        if not (isinstance(self.K, int) and isinstance(self.k, int) and 1 <= self.k < self.K):
            raise ValueError(f"need integers 1 <= k < K, got K={self.K}, k={self.k}")
        if self.wrong_init not in ("equal", "concentrated"):
            raise ValueError(
                f"wrong_init must be 'equal' or 'concentrated', got {self.wrong_init!r}"
            )

    @property
    def dim(self) -> int:
        return self.K

    def init(self, p0: float) -> np.ndarray:
        p0 = _check_p(p0)
        probs = np.empty(self.K)
        probs[: self.k] = p0 / self.k
        n_wrong = self.K - self.k
        if self.wrong_init == "equal" or n_wrong == 1:
            probs[self.k :] = (1.0 - p0) / n_wrong
        else:
            rest = 1e-3 * (1.0 - p0)
            probs[self.k] = (1.0 - p0) - rest
            probs[self.k + 1 :] = rest / (n_wrong - 1)
        return np.log(probs)

    def terms(self, theta):
        theta = _check_theta(theta, self.K)
        pi = softmax(theta, axis=-1)
        P = pi[..., : self.k].sum(-1, keepdims=True)
        dP = pi * (_first_k(self.K, self.k) - P)
        return _ONE, P, dP[..., None, :]

    def monitor(self, theta):
        return softmax(_check_theta(theta, self.K), axis=-1)[..., : self.k].sum(-1)

    def _monitor_of_P(self, P):
        """monitor(θ) from ``terms(θ)[1]`` (the same numbers, not recomputed)."""
        return P[..., 0]

    def label(self) -> str:
        return f"K-arm (K={self.K}, k={self.k})"


@dataclass(frozen=True)
class LatentCategorical:
    """Categorical latent model: z ~ softmax(θ_prior) over K rationales, w(z) = σ(φ_z) ∈ (0, 1).

    P = Σ_z π_z w_z (the paper's likelihood mode, Section 2: w never 0; docs/conventions.md,
    "Log-weights and the two modes").
    Parameters are ``[θ_prior (K), φ (K)]``; with ``train_answer=False`` the answer table w is
    fixed and only the prior trains.  ∂P/∂θ_z = π_z (w_z - P), ∂P/∂φ_z = π_z w_z (1 - w_z).

    Cold start ``init(p0)``: uniform prior and every w_z = p0 (the flow keeps that symmetry:
    ‖∇P‖² = p²(1-p)²/K, so the flow escape time is K · T_sigmoid).  ``init(p0)`` with
    ``good_arm=True`` instead sets w = (1, w_bad, ..., w_bad) and the prior so that P = p0.
    """

    K: int = 4
    train_answer: bool = True
    good_arm: bool = False
    w_bad: float = 1e-8
    name = "latent"

    def __post_init__(self):
        if not (isinstance(self.K, int) and self.K >= 2):
            raise ValueError(f"need an integer K >= 2, got {self.K}")
        _check_p(self.w_bad, "w_bad")

    @property
    def dim(self) -> int:
        return 2 * self.K

    def init(self, p0: float) -> np.ndarray:
        p0 = _check_p(p0)
        if not self.good_arm:
            return np.concatenate([np.zeros(self.K), np.full(self.K, logit(p0))])
        if p0 <= self.w_bad:
            raise ValueError(f"p0={p0} must exceed w_bad={self.w_bad} with good_arm=True")
        pi_good = (p0 - self.w_bad) / (1.0 - self.w_bad)
        prior = np.concatenate([[pi_good], np.full(self.K - 1, (1 - pi_good) / (self.K - 1))])
        w = np.concatenate([[1.0 - 1e-12], np.full(self.K - 1, self.w_bad)])
        return np.concatenate([np.log(prior), logit(w)])

    def split(self, theta):
        return theta[..., : self.K], theta[..., self.K :]

    def terms(self, theta):
        theta = _check_theta(theta, self.dim)
        th, ph = self.split(theta)
        pi = softmax(th, axis=-1)
        w = expit(ph)
        P = (pi * w).sum(-1, keepdims=True)
        d_th = pi * (w - P)
        d_ph = pi * w * (1.0 - w) if self.train_answer else np.zeros_like(w)
        return _ONE, P, np.concatenate([d_th, d_ph], -1)[..., None, :]

    def monitor(self, theta):
        th, ph = self.split(_check_theta(theta, self.dim))
        return (softmax(th, axis=-1) * expit(ph)).sum(-1)

    def _monitor_of_P(self, P):
        """monitor(θ) from ``terms(θ)[1]`` (the same numbers, not recomputed)."""
        return P[..., 0]

    def label(self) -> str:
        return f"latent (K={self.K})"


@dataclass(frozen=True)
class TabularChain:
    """Length-L autoregressive tabular chain over V tokens; success iff the chain is the target.

    Only the L tables on the target path influence P, so the parameters are those tables,
    ``θ [L, V]`` flattened to ``[L·V]``, target token 0 at every step:
    P = Π_l π_l(0), ∂P/∂θ_{l,j} = P (1[j=0] - π_l(j)).
    Cold start ``init()``: uniform tables, p0 = V^-L ("without choosing logits by hand");
    ``init(p0)`` sets every step's target probability to p0^(1/L), wrong tokens equal.
    """

    L: int = 3
    V: int = 10
    name = "chain"

    def __post_init__(self):
        if not (
            isinstance(self.L, int) and isinstance(self.V, int) and self.L >= 1 and self.V >= 2
        ):
            raise ValueError(f"need integers L >= 1, V >= 2, got L={self.L}, V={self.V}")

    @property
    def dim(self) -> int:
        return self.L * self.V

    @property
    def uniform_p0(self) -> float:
        return float(self.V) ** (-self.L)

    def init(self, p0: float | None = None) -> np.ndarray:
        if p0 is None:
            return np.zeros(self.dim)
        a = _check_p(p0) ** (1.0 / self.L)
        row = np.log(np.concatenate([[a], np.full(self.V - 1, (1 - a) / (self.V - 1))]))
        return np.tile(row, self.L)

    def terms(self, theta):
        theta = _check_theta(theta, self.dim)
        th = theta.reshape(theta.shape[:-1] + (self.L, self.V))
        logpi = log_softmax(th, axis=-1)
        P = np.exp(logpi[..., 0].sum(-1, keepdims=True))
        dP = P[..., None] * (_first_k(self.V, 1) - np.exp(logpi))  # 1[j=0] - π_l(j)
        return _ONE, P, dP.reshape(theta.shape)[..., None, :]

    def monitor(self, theta):
        theta = _check_theta(theta, self.dim)
        th = theta.reshape(theta.shape[:-1] + (self.L, self.V))
        return np.exp(log_softmax(th, axis=-1)[..., 0].sum(-1))

    def _monitor_of_P(self, P):
        """monitor(θ) from ``terms(θ)[1]`` (the same numbers, not recomputed)."""
        return P[..., 0]

    def label(self) -> str:
        return f"L-step chain (V={self.V})"


@dataclass(frozen=True)
class TwoLabelNoise:
    """Two-label noise model (Prop. C.2): logits over (clean c, noise k), p = π(c).

    Objective (1-ε)·ℓ_q(p) + ε·ℓ_q(1-p).  Monitor: the contamination p~ = 1 - p.
    ``init(p_tilde0)`` starts with contamination p_tilde0.
    """

    eps: float = 0.1
    name = "two_label"

    def __post_init__(self):
        _check_p(self.eps, "eps", 0.5)

    @property
    def dim(self) -> int:
        return 2

    def init(self, p_tilde0: float) -> np.ndarray:
        p_tilde0 = _check_p(p_tilde0, "p_tilde0")
        return np.array([np.log1p(-p_tilde0), np.log(p_tilde0)])

    def terms(self, theta):
        theta = _check_theta(theta, 2)
        pi = softmax(theta, axis=-1)
        grad_c = pi[..., :1] * (_CLEAN - pi)  # ∇π(c)
        P = pi
        dP = np.empty(pi.shape[:-1] + (2, 2))  # stack([∇π(c), -∇π(c)], axis=-2)
        dP[..., 0, :] = grad_c
        np.negative(grad_c, out=dP[..., 1, :])
        return np.array([1.0 - self.eps, self.eps]), P, dP

    def monitor(self, theta):
        return softmax(_check_theta(theta, 2), axis=-1)[..., 1]

    def _monitor_of_P(self, P):
        """monitor(θ) from ``terms(θ)[1]`` (the same numbers, not recomputed)."""
        return P[..., 1]

    def label(self) -> str:
        return f"two-label noise (ε={self.eps})"


@dataclass(frozen=True)
class TwoLabelNoiseDirect:
    """Two-label noise model with a bounded score: the parameter *is* the contamination.

    θ = [p~] ∈ [0, 1], P = (1 - p~, p~) for (clean, noise), objective (1-ε)·ℓ_q(1-p~) +
    ε·ℓ_q(p~), so ∇P = (-1, +1): ‖∇p~‖ = 1, the bounded-below score Prop. C.2 assumes.  The flow
    is p~' = ε·p~^(-q) - (1-ε)·(1-p~)^(-q) (Prop. 4.1), with the same escort fixed point
    p~/(1-p~) = (ε/(1-ε))^(1/q) as the softmax model; near p~ = 0 it integrates to the paper's
    fitting time η^(q+1)/((q+1)ε).  ``terms`` evaluates P at θ projected onto [0, 1]
    (projected gradient); for q > 0 the flow never reaches the boundary, since P^(-q) diverges
    there and pushes inward.
    """

    eps: float = 0.1
    name = "two_label_direct"

    def __post_init__(self):
        _check_p(self.eps, "eps", 0.5)

    @property
    def dim(self) -> int:
        return 1

    def init(self, p_tilde0: float) -> np.ndarray:
        return np.array([_check_p(p_tilde0, "p_tilde0")])

    def terms(self, theta):
        theta = _check_theta(theta, 1)
        pt = np.clip(theta[..., 0], 0.0, 1.0)
        P = np.stack([1.0 - pt, pt], axis=-1)
        dP = np.broadcast_to(np.array([[-1.0], [1.0]]), P.shape + (1,))
        return np.array([1.0 - self.eps, self.eps]), P, dP

    def monitor(self, theta):
        return np.clip(_check_theta(theta, 1)[..., 0], 0.0, 1.0)

    def _monitor_of_P(self, P):
        """monitor(θ) from ``terms(θ)[1]`` (the same numbers, not recomputed)."""
        return P[..., 1]

    def label(self) -> str:
        return f"two-label noise, p~ as parameter (ε={self.eps})"


@dataclass(frozen=True)
class ManyExampleNoise:
    """N examples over C classes, a fraction ``frac_wrong`` carrying a wrong label.

    Example i's logits are a shared class vector plus its own offset, β + γ_i (γ is the capacity
    to memorise single examples, scaled by ``memo_scale``).  Clean examples are labelled class 0,
    wrong ones class 1; the objective is the mean of ℓ_q(P_i) with P_i = softmax(β + s·γ_i)[y_i].
    Monitor: the mean probability the wrong-labelled examples give their (wrong) label — the
    memorised fraction of the noise.  ``init(p_tilde0)``: shared logits give the wrong class
    p_tilde0, offsets 0.
    """

    N: int = 20
    frac_wrong: float = 0.2
    C: int = 2
    memo_scale: float = 1.0
    name = "many_noise"

    def __post_init__(self):
        n_wrong = round(self.N * self.frac_wrong)
        if not (isinstance(self.N, int) and self.N >= 2 and 1 <= n_wrong < self.N):
            raise ValueError(
                f"need N >= 2 and 1 <= round(N*frac_wrong) < N, got N={self.N}, "
                f"frac_wrong={self.frac_wrong}"
            )
        if not (isinstance(self.C, int) and self.C >= 2):
            raise ValueError(f"need C >= 2 classes, got {self.C}")

    @property
    def n_wrong(self) -> int:
        return round(self.N * self.frac_wrong)

    @property
    def labels(self) -> np.ndarray:
        y = np.zeros(self.N, dtype=np.int64)
        y[: self.n_wrong] = 1
        return y

    @property
    def dim(self) -> int:
        return self.C * (self.N + 1)

    def init(self, p_tilde0: float) -> np.ndarray:
        p_tilde0 = _check_p(p_tilde0, "p_tilde0")
        beta = np.full(self.C, np.log(p_tilde0 / (self.C - 1)))
        beta[0] = np.log1p(-p_tilde0)
        return np.concatenate([beta, np.zeros(self.N * self.C)])

    def _probs(self, theta):
        beta = theta[..., : self.C]
        gamma = theta[..., self.C :].reshape(theta.shape[:-1] + (self.N, self.C))
        return softmax(beta[..., None, :] + self.memo_scale * gamma, axis=-1)

    def terms(self, theta):
        theta = _check_theta(theta, self.dim)
        pi = self._probs(theta)  # [..., N, C]
        y = self.labels
        P = np.take_along_axis(pi, y[:, None], axis=-1)[..., 0]  # [..., N]
        g_logits = P[..., None] * (np.eye(self.C)[y] - pi)  # dP_i / d logits_i, [..., N, C]
        N, C = self.N, self.C
        dP = np.zeros(theta.shape[:-1] + (N, self.dim))
        dP[..., :C] = g_logits
        idx = np.arange(N)
        for c in range(C):
            dP[..., idx, C + idx * C + c] = self.memo_scale * g_logits[..., c]
        return np.full(N, 1.0 / N), P, dP

    def monitor(self, theta):
        pi = self._probs(_check_theta(theta, self.dim))
        return pi[..., : self.n_wrong, 1].mean(-1)

    def label(self) -> str:
        return f"{self.N} examples, {self.frac_wrong:.0%} wrong labels"


MODELS = {
    "sigmoid": Sigmoid,
    "karm": KArmBandit,
    "latent": LatentCategorical,
    "chain": TabularChain,
    "two_label": TwoLabelNoise,
    "two_label_direct": TwoLabelNoiseDirect,
    "many_noise": ManyExampleNoise,
}


def make_model(name: str, **kwargs):
    """Build a model by registry name with its keyword options (ValueError on a typo)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name](**kwargs)
