r"""Stochastic training with M samples per step, vectorised over runs (SGD or Adam).

One array program advances R runs (seeds × settings) at once: parameters ``θ [R, D]`` (float64
torch), M samples per run per step drawn with counter-based uniforms (:mod:`sims.rng`, so a run's
trajectory does not depend on the other rows of its batch), per-sample log-weights ``log_w [R, M]``
handed to an estimator from :mod:`tsallis.estimators` (one call for all rows), and the update

    θ ← θ + lr · Σ_m [ coef_z[m]·∇log p(z_m) + coef_y[m]·∇log p(y | z_m) ]

(the negative gradient of the estimator's surrogate loss, docs/api-contract.md "Sign convention"),
or the Adam step on that gradient (:func:`sims.training.adam_update`; learning rate and ε per
row, β shared; defaults β = (0.9, 0.999), ε = 1e-8).  Escape sweeps (``freeze_escaped``) run in
the shared freeze-on-escape loop :func:`sims.training.run_to_escape`: a row that reaches δ is
removed from the batch with its optimiser state, rows that never do are censored at the budget.
The per-sample scores are the exact scores of the tabular models, and their coefficient-weighted
sum equals the autograd gradient of ``tsallis.sequence_loss`` (tested).

Modes (the paper's Section 2; docs/conventions.md "Log-weights and the two modes"):

* ``"verifier"``: the whole response is sampled and a 0/1 reward checks it; log_w = log r.
* ``"likelihood"``: the rationale z is sampled, the gold answer teacher-forced;
  log_w = log p(y*|z), with the pathwise answer-span term (latent model, sigmoid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tsallis import estimators as _est

from .rng import counter_uniform
from .training import adam_update, run_to_escape

__all__ = ["SampledRun", "train_sampled", "draw_and_score", "SUPPORTED_MODES"]

SUPPORTED_MODES = {
    "sigmoid": ("verifier", "likelihood"),
    "karm": ("verifier",),
    "latent": ("verifier", "likelihood"),
    "chain": ("verifier",),
}


def _categorical(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw: probs [R, K], u [R, M] -> indices [R, M] (int64)."""
    cdf = probs.cumsum(-1)
    idx = torch.searchsorted(cdf, u.contiguous() * cdf[:, -1:])
    return idx.clamp_(max=probs.shape[-1] - 1)


@dataclass
class _Draw:
    """What one step's samples need to turn coefficients into a parameter update."""

    log_w: torch.Tensor
    direction: callable


def draw_and_score(model, theta: torch.Tensor, M: int, keys: torch.Tensor, step: int, mode: str):
    """Draw M samples per row; return log-weights [R, M] and a map (coef_z, coef_y) -> [R, D].

    The map returns Σ_m coef_z[m]·∇_θ log p(z_m) + coef_y[m]·∇_θ log p(y_m | z_m) for each row.
    """
    name = model.name
    if name not in SUPPORTED_MODES:
        raise ValueError(f"model {name!r} has no sampled version; have {sorted(SUPPORTED_MODES)}")
    if mode not in SUPPORTED_MODES[name]:
        raise ValueError(f"model {name!r} supports modes {SUPPORTED_MODES[name]}, got {mode!r}")
    R = theta.shape[0]

    if name == "sigmoid":
        P = torch.sigmoid(theta[:, 0])
        if mode == "likelihood":  # no rationale: every sample teacher-forces y*, w = P exactly
            log_w = F.logsigmoid(theta[:, :1]).expand(R, M)
            return _Draw(log_w, lambda cz, cy: (cy.sum(-1) * (1 - P))[:, None])
        y = (counter_uniform(keys, step, M) < P[:, None]).to(theta.dtype)
        log_w = _est.rewards_to_log_w(y)
        # verifier: the sampled answer is the response, d/dθ log p(y) = y - P
        return _Draw(log_w, lambda cz, cy: (cy * (y - P[:, None])).sum(-1, keepdim=True))

    if name == "karm":
        pi = torch.softmax(theta, -1)
        arm = _categorical(pi, counter_uniform(keys, step, M))
        r = (arm < model.k).to(theta.dtype)
        log_w = _est.rewards_to_log_w(r)

        def direction(cz, cy):
            d = torch.zeros_like(theta).scatter_add_(1, arm, cy)
            return d - cy.sum(-1, keepdim=True) * pi

        return _Draw(log_w, direction)

    if name == "latent":
        K = model.K
        pi = torch.softmax(theta[:, :K], -1)
        w = torch.sigmoid(theta[:, K:])
        u = counter_uniform(keys, step, 2 * M)
        z = _categorical(pi, u[:, :M])
        w_z = torch.gather(w, 1, z)
        train_answer = float(model.train_answer)
        if mode == "likelihood":
            log_w = torch.gather(F.logsigmoid(theta[:, K:]), 1, z)
            answer_score = 1.0 - w_z  # d/dφ_z log σ(φ_z)
        else:
            y = (u[:, M:] < w_z).to(theta.dtype)
            log_w = _est.rewards_to_log_w(y)
            answer_score = y - w_z  # d/dφ_z log p(y | z), y sampled

        def direction(cz, cy):
            d_prior = torch.zeros_like(pi).scatter_add_(1, z, cz) - cz.sum(-1, keepdim=True) * pi
            d_ans = torch.zeros_like(w).scatter_add_(1, z, cy * answer_score) * train_answer
            return torch.cat([d_prior, d_ans], -1)

        return _Draw(log_w, direction)

    # chain: L on-path tables [R, L, V], target token 0 at every step
    L, V = model.L, model.V
    pi = torch.softmax(theta.view(R, L, V), -1)
    u = counter_uniform(keys, step, M * L).view(R, M, L)
    cdf = pi.cumsum(-1)  # [R, L, V]
    tok = (
        torch.searchsorted(
            cdf[:, None].expand(R, M, L, V).contiguous(), (u * cdf[:, None, :, -1]).unsqueeze(-1)
        )
        .squeeze(-1)
        .clamp_(max=V - 1)
    )
    hit = tok == 0  # [R, M, L]
    # a step's table is the on-path table only while every earlier token hit the target
    alive = torch.cat([torch.ones_like(hit[..., :1]), hit[..., :-1].cumprod(-1).bool()], -1)
    r = hit.all(-1).to(theta.dtype)
    log_w = _est.rewards_to_log_w(r)
    alive_f = alive.to(theta.dtype)

    def direction(cz, cy):
        c = cy[..., None] * alive_f  # [R, M, L]
        d = torch.zeros(R, L, V, dtype=theta.dtype).scatter_add_(
            2, tok.permute(0, 2, 1), c.permute(0, 2, 1)
        )
        d = d - c.sum(1)[..., None] * pi
        return d.reshape(R, L * V)

    return _Draw(log_w, direction)


def _monitor_torch(model, theta: torch.Tensor) -> torch.Tensor:
    """Exact monitored P of every row (float64 torch), matching ``model.monitor``."""
    name = model.name
    if name == "sigmoid":
        return torch.sigmoid(theta[:, 0])
    if name == "karm":
        return torch.softmax(theta, -1)[:, : model.k].sum(-1)
    if name == "latent":
        K = model.K
        return (torch.softmax(theta[:, :K], -1) * torch.sigmoid(theta[:, K:])).sum(-1)
    if name == "chain":
        R = theta.shape[0]
        return torch.log_softmax(theta.view(R, model.L, model.V), -1)[..., 0].sum(-1).exp()
    raise ValueError(f"model {name!r} has no sampled version")


@dataclass(frozen=True)
class SampledRun:
    """Per-row outcome of :func:`train_sampled` (all numpy, row order as given).

    steps: escape step (first step after which P >= δ) or ``max_steps`` if censored.
    censored: True where the run never escaped within the budget (kept, reported as ">= budget").
    curves: P at each of ``record_steps`` ([R, len(record_steps)]), NaN after a frozen escape.
    max_monitor: the largest value of the paper's Fig. 3 monitor max_m c_m/M^q seen by the row.
    stalled_frac: fraction of the row's steps whose group had no positive weight.
    """

    steps: np.ndarray
    censored: np.ndarray
    curves: np.ndarray | None
    max_monitor: np.ndarray
    min_monitor: np.ndarray
    stalled_frac: np.ndarray


def train_sampled(model, theta0, keys, **kwargs) -> SampledRun:
    """Train R runs with M samples per step and any registered estimator, all rows at once.

    See :func:`_train_sampled` for the arguments.  Converged rows push probabilities into float64
    subnormals, which are ~100x slower on CPUs; torch's flush-denormal mode is switched on for
    the run (changing nothing above 2.2e-308) and off again afterwards (torch's default), and
    torch runs single-threaded meanwhile (its thread count is restored).
    """
    n_threads = torch.get_num_threads()
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)  # tiny tensors: intra-op threads only add synchronisation
    try:
        return _train_sampled(model, theta0, keys, **kwargs)
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(n_threads)


def _train_sampled(
    model,
    theta0,
    keys,
    *,
    q: float,
    M: int,
    lr,
    estimator: str = "garl",
    mode: str = "verifier",
    paper_normalization: bool = False,
    optimizer: str = "sgd",
    adam_eps=1e-8,
    adam_betas: tuple[float, float] = (0.9, 0.999),
    max_steps: int,
    delta: float = 0.5,
    record_steps=None,
    freeze_escaped: bool = True,
    generator_seed: int = 0,
    progress=None,
) -> SampledRun:
    """Train R runs with M samples per step and any registered estimator, all rows at once.

    Args:
        model: ``Sigmoid``, ``KArmBandit``, ``LatentCategorical`` or ``TabularChain``.
        theta0: ``[R, D]`` starting parameters.
        keys: ``[R]`` int64 row keys (:func:`sims.rng.row_key` of the experiment,
            setting id and seed).
        q: Tsallis index in [0, 1], a float or one value per row ``[R]`` (baselines ignore it).
        M: samples per step (group size).
        lr: float or ``[R]``: the learning rate actually applied (callers that compare q at a
            matched effective step size fold M^q into it, see :mod:`sims.experiments`).
        estimator: a key of ``tsallis.estimators.ESTIMATORS``.
        paper_normalization: divide GARL/PAFT coefficients by M^q (the paper's algorithms).
        optimizer: ``"sgd"`` or ``"adam"`` (the same for every row).
        adam_eps: Adam's ε, a positive float or one value per row ``[R]`` (default 1e-8); the
            step is lr·m̂/(√v̂ + ε).  Ignored by SGD.
        adam_betas: Adam's (β1, β2), each in [0, 1), shared by all rows (default (0.9, 0.999)).
        max_steps: budget; runs that never reach δ are censored at it.
        record_steps: optional increasing step numbers at which to record P (training curves).
        freeze_escaped: stop updating a row once it escaped (escape-time sweeps); False keeps
            training every row for the whole budget (curves).
        generator_seed: seeds the torch.Generator handed to randomized estimators (PAFT).
            PAFT draws are therefore a function of the whole batch, the only exception to
            "a row is a pure function of its settings and seed".
        progress: optional callable(n_steps_done) for a progress bar.
    """
    q_np = np.asarray(q, dtype=np.float64)
    if q_np.ndim > 1 or np.any(~((q_np >= 0) & (q_np <= 1))):
        raise ValueError(f"q must be a float or an [R] array in [0, 1], got {q!r}")
    if not (isinstance(M, int) and M >= 1):
        raise ValueError(f"M must be a positive int, got {M!r}")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    if not (isinstance(max_steps, int) and max_steps >= 1):
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
    est_fn = _est.get_estimator(estimator)
    est_kwargs = {"mode": mode, "paper_normalization": paper_normalization}
    if estimator in _est.RANDOMIZED:
        est_kwargs["generator"] = torch.Generator().manual_seed(int(generator_seed))
    theta = torch.as_tensor(np.asarray(theta0, dtype=np.float64)).clone()
    if theta.dim() != 2 or theta.shape[1] != model.dim:
        raise ValueError(f"theta0 must be [R, {model.dim}], got {tuple(theta.shape)}")
    R = theta.shape[0]
    keys = torch.as_tensor(np.asarray(keys, dtype=np.int64))
    if keys.shape != (R,):
        raise ValueError(f"keys must be [{R}], got {tuple(keys.shape)}")
    lr_all = torch.as_tensor(np.broadcast_to(np.asarray(lr, dtype=np.float64), (R,)).copy())
    if (lr_all <= 0).any():
        raise ValueError("lr must be positive")
    eps_np = np.asarray(adam_eps, dtype=np.float64)
    if eps_np.ndim > 1 or not np.all(np.isfinite(eps_np) & (eps_np > 0)):
        raise ValueError(f"adam_eps must be a positive float or an [R] array, got {adam_eps!r}")
    if eps_np.ndim == 1 and eps_np.shape != (R,):
        raise ValueError(f"an array adam_eps must have shape [{R}], got {eps_np.shape}")
    try:
        b1, b2 = (float(b) for b in adam_betas)
    except (TypeError, ValueError):
        raise ValueError(f"adam_betas must be two floats in [0, 1), got {adam_betas!r}") from None
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise ValueError(f"adam_betas must be two floats in [0, 1), got {adam_betas!r}")
    per_row_eps = eps_np.ndim == 1
    # a scalar ε stays a Python float: the default path is the historical one, bit for bit
    eps_a = torch.as_tensor(eps_np)[:, None] if per_row_eps else float(eps_np)
    rec = None if record_steps is None else np.asarray(record_steps, dtype=np.int64)
    if rec is not None and (rec.ndim != 1 or np.any(np.diff(rec) <= 0) or rec[0] < 0):
        raise ValueError("record_steps must be increasing non-negative ints")
    per_row_q = q_np.ndim == 1
    if per_row_q and q_np.shape != (R,):
        raise ValueError(f"an array q must have shape [{R}], got {q_np.shape}")
    q_a = torch.as_tensor(q_np) if per_row_q else float(q_np)

    curves = None if rec is None else np.full((R, rec.size), np.nan)
    rec_ptr = 0
    adam = optimizer == "adam"
    # per-row state (rows dropped on escape by run_to_escape): parameters, step sizes, keys,
    # per-row q and ε where given, Adam's moments, and the per-row monitor accumulators
    rows = {"th": theta, "lr": lr_all[:, None], "key": keys}
    if per_row_q:
        rows["q"] = q_a
    if per_row_eps:
        rows["eps"] = eps_a
    if adam:
        rows["m1"], rows["m2"] = torch.zeros_like(theta), torch.zeros_like(theta)
    rows["stall"] = torch.zeros(R, dtype=torch.int64)
    rows["max"] = torch.full((R,), -math.inf, dtype=torch.float64)
    rows["min"] = torch.full((R,), math.inf, dtype=torch.float64)
    n_stalled = np.zeros(R, dtype=np.int64)
    max_mon = np.full(R, -np.inf)
    min_mon = np.full(R, np.inf)

    def monitor(rows, t, active):
        nonlocal rec_ptr
        P = _monitor_torch(model, rows["th"])
        if rec is not None and rec_ptr < rec.size and rec[rec_ptr] == t:
            curves[active, rec_ptr] = P.numpy()
            rec_ptr += 1
        return P

    def step(rows, t, active):
        th = rows["th"]
        draw = draw_and_score(model, th, M, rows["key"], t, mode)
        coef = est_fn(draw.log_w, rows["q"] if per_row_q else q_a, **est_kwargs)
        g = draw.direction(coef.coef_z, coef.coef_y)  # ascent direction on -l_q
        mon = coef.max_amplified_advantage.to(torch.float64)
        out = {**rows, "stall": rows["stall"] + coef.stalled.to(torch.int64),
               "max": torch.maximum(rows["max"], mon), "min": torch.minimum(rows["min"], mon)}
        if adam:
            eps = rows["eps"] if per_row_eps else eps_a
            out["m1"], out["m2"], upd = adam_update(
                rows["m1"], rows["m2"], g, t + 1, rows["lr"], eps, (b1, b2)
            )
            out["th"] = th + upd
        else:
            out["th"] = th + rows["lr"] * g
        if progress is not None and (t + 1) % 64 == 0:
            progress(64)
        return out

    def flush(rows, sel, idx):
        """Move the monitor accumulators of state rows ``sel`` (original rows ``idx``) out."""
        n_stalled[idx] += rows["stall"][sel].numpy()
        max_mon[idx] = np.maximum(max_mon[idx], rows["max"][sel].numpy())
        min_mon[idx] = np.minimum(min_mon[idx], rows["min"][sel].numpy())

    def on_freeze(rows, hit, idx):
        flush(rows, torch.from_numpy(hit), idx)

    run = run_to_escape(
        rows, R, monitor=monitor, step=step, max_steps=max_steps, delta=delta,
        freeze=freeze_escaped, mark=freeze_escaped, on_freeze=on_freeze,
    )  # fmt: skip
    if run.active.any():
        left = np.flatnonzero(run.active)
        flush(run.rows, torch.ones(left.size, dtype=torch.bool), left)
    # rows frozen at their escape step took that many steps; the others ran the whole loop
    n_taken = np.where(run.censored, run.t, run.steps)
    return SampledRun(
        run.steps, run.censored, curves, max_mon, min_mon, n_stalled / np.maximum(n_taken, 1)
    )
