"""A K-latent model whose estimator expectations can be computed exactly by enumeration.

Rationale z ∈ {0..K-1} ~ softmax(θ); answer likelihood w(z) = p(y*|z) either sigmoid(φ_z)
(likelihood mode: continuous, differentiable) or a fixed 0/1 table (verifier mode: the K-arm
bandit with correct arms). Parameters ψ = [θ, φ] ∈ R^(2K).

Every estimator in :mod:`tsallis.estimators` is exchangeable in the M samples, so its exact
expectation is a sum over the multinomial count vectors of M draws, not over all K^M tuples.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from tsallis import loss_q


def count_vectors(K: int, M: int) -> np.ndarray:
    """All n ∈ N^K with Σ n = M, shape [C, K] (stars and bars)."""
    rows = []
    for bars in itertools.combinations(range(M + K - 1), K - 1):
        edges = (-1, *bars, M + K - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(K)])
    return np.array(rows, dtype=np.int64)


def multinomial_pmf(counts: np.ndarray, probs: np.ndarray) -> np.ndarray:
    M = int(counts[0].sum())
    log_coef = math.lgamma(M + 1) - np.sum([[math.lgamma(c + 1) for c in row] for row in counts], 1)
    with np.errstate(divide="ignore"):
        log_p = np.where(counts > 0, counts * np.log(np.where(probs > 0, probs, 1.0)), 0.0)
    log_p = np.where((counts > 0) & (probs == 0), -np.inf, log_p)
    return np.exp(log_coef + log_p.sum(1))


@dataclass
class LatentModel:
    theta: torch.Tensor  # [K] prior logits
    phi: torch.Tensor | None  # [K] likelihood logits (likelihood mode)
    table: torch.Tensor | None  # [K] fixed rewards in {0, 1} (verifier mode)

    @staticmethod
    def random_likelihood(K: int, seed: int, w_range=(0.05, 0.95)) -> LatentModel:
        g = torch.Generator().manual_seed(seed)
        theta = torch.randn(K, generator=g, dtype=torch.float64)
        lo, hi = w_range
        w = lo + (hi - lo) * torch.rand(K, generator=g, dtype=torch.float64)
        return LatentModel(theta, torch.log(w / (1 - w)), None)

    @staticmethod
    def bandit(theta, correct) -> LatentModel:
        theta = torch.as_tensor(theta, dtype=torch.float64)
        table = torch.zeros_like(theta)
        table[list(correct)] = 1.0
        return LatentModel(theta, None, table)

    @property
    def K(self) -> int:
        return self.theta.shape[0]

    @property
    def mode(self) -> str:
        return "likelihood" if self.phi is not None else "verifier"

    def params(self) -> torch.Tensor:
        extra = self.phi if self.phi is not None else torch.zeros_like(self.theta)
        return torch.cat([self.theta, extra])

    def prior(self, psi=None) -> torch.Tensor:
        psi = self.params() if psi is None else psi
        return torch.softmax(psi[: self.K], 0)

    def weights(self, psi=None) -> torch.Tensor:
        if self.phi is None:
            return self.table
        psi = self.params() if psi is None else psi
        return torch.sigmoid(psi[self.K :])

    def success_prob(self, psi=None) -> torch.Tensor:
        return (self.prior(psi) * self.weights(psi)).sum()

    def grad(self, fn) -> torch.Tensor:
        """∇_ψ fn(ψ) by autograd."""
        psi = self.params().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(psi), psi)
        return g

    def true_grad(self, q: float) -> torch.Tensor:
        """∇ℓ_q = ∇(-log_q P)."""
        return self.grad(lambda psi: loss_q(self.success_prob(psi), q))

    def scores(self):
        """∇_ψ log π_k [K, 2K] and ∇_ψ log w_k [K, 2K] (0 in verifier mode)."""
        K = self.K
        pi = self.prior()
        score_z = torch.cat(
            [torch.eye(K, dtype=torch.float64) - pi, torch.zeros(K, K, dtype=torch.float64)], 1
        )
        if self.phi is None:
            score_y = torch.zeros(K, 2 * K, dtype=torch.float64)
        else:
            w = self.weights()
            score_y = torch.cat([torch.zeros(K, K, dtype=torch.float64), torch.diag(1 - w)], 1)
        return score_z, score_y

    def pools(self, M: int):
        """Exchangeable enumeration: (tuples [C, M] of latent ids, probabilities [C])."""
        counts = count_vectors(self.K, M)
        probs = multinomial_pmf(counts, self.prior().numpy())
        tuples = np.stack([np.repeat(np.arange(self.K), row) for row in counts])
        return torch.as_tensor(tuples), torch.as_tensor(probs)

    def log_w_of(self, tuples: torch.Tensor) -> torch.Tensor:
        return torch.log(self.weights()[tuples])

    def estimates(self, coef_z: torch.Tensor, coef_y: torch.Tensor, tuples: torch.Tensor):
        """Per-pool estimates ĝ = -Σ_m [coef_z ∇log π(z_m) + coef_y ∇log w(z_m)], [C, 2K]."""
        score_z, score_y = self.scores()
        return -(
            torch.einsum("cm,cmd->cd", coef_z.to(torch.float64), score_z[tuples])
            + torch.einsum("cm,cmd->cd", coef_y.to(torch.float64), score_y[tuples])
        )

    def moments(self, estimator, q: float, M: int, **options):
        """Exact mean [2K] and covariance [2K, 2K] of an exchangeable, deterministic estimator."""
        tuples, probs = self.pools(M)
        c = estimator(self.log_w_of(tuples), q, mode=self.mode, **options)
        g = self.estimates(c.coef_z, c.coef_y, tuples)
        mean = (probs[:, None] * g).sum(0)
        centred = g - mean
        cov = torch.einsum("c,cd,ce->de", probs, centred, centred)
        return mean, cov
