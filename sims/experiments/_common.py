"""Shared pieces of the experiments: model specs, batched runners, formatting."""

from __future__ import annotations

import numpy as np

from ..dynamics import flow_escape, gd_escape
from ..models import make_model
from ..rng import row_key
from ..sampled import train_sampled

Q_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def fmt_p(p: float) -> str:
    """1e-4 -> '1e-04'; 3.16e-5 -> '3.2e-05' (readable ids)."""
    m, e = f"{p:.1e}".split("e")
    return f"{m.rstrip('0').rstrip('.')}e{e}"


def p0_grid(lo_exp: float, hi_exp: float, per_decade: int) -> list[float]:
    """Log-spaced p0 values 10^hi_exp ... 10^lo_exp (hi > lo), ``per_decade`` points a decade."""
    n = int(round((hi_exp - lo_exp) * per_decade)) + 1
    return [float(10.0**e) for e in np.linspace(hi_exp, lo_exp, n)]


def model_of(setting: dict):
    return make_model(setting["model"], **setting.get("model_kw", {}))


def init_of(model, setting: dict) -> np.ndarray:
    """Cold start: p0 given -> model.init(p0); chain with p0 None -> uniform tables (p0 = V^-L)."""
    p0 = setting.get("p0")
    return model.init() if p0 is None else model.init(p0)


def run_flow(setting: dict) -> dict:
    model = model_of(setting)
    theta0 = init_of(model, setting)
    r = flow_escape(
        model,
        None,
        setting["q"],
        delta=setting.get("delta", 0.5),
        t_max=setting["budget"],
        theta0=theta0,
    )
    return {
        "time": np.array([r.time]),
        "censored": np.array([r.censored]),
        "p0_actual": np.array(float(model.monitor(theta0))),
    }


def run_gd(settings: list[dict]) -> list[dict]:
    """All settings share model, q and delta (the batch key); rows = settings."""
    s0 = settings[0]
    model = model_of(s0)
    theta0 = np.stack([init_of(model, s) for s in settings])
    eta = np.array([s["eta"] for s in settings])
    budgets = np.array([s["budget"] for s in settings], dtype=np.int64)
    steps, cens = gd_escape(
        model, theta0, s0["q"], eta, int(budgets.max()), delta=s0.get("delta", 0.5)
    )
    out = []
    for i, s in enumerate(settings):
        st, c = int(steps[i]), bool(cens[i])
        if c or st > budgets[i]:
            st, c = int(budgets[i]), True
        out.append(
            {
                "steps": np.array([st]),
                "time": np.array([st * s["eta"]]),
                "censored": np.array([c]),
                "p0_actual": np.array(float(model.monitor(theta0[i]))),
            }
        )
    return out


def seed_keys(experiment: str, setting: dict) -> np.ndarray:
    """One int64 key per seed, keyed by (experiment, setting id, seed): never by the cache hash,
    so a cache-version bump or a new field does not reshuffle the randomness, and seed i draws
    the same numbers whatever ``n_seeds`` is (more seeds extend a sweep, they do not redraw it)."""
    sid, s0 = setting["id"], setting["seed"]
    return np.array([row_key(experiment, sid, s0 + i) for i in range(setting["n_seeds"])], np.int64)


def generator_seed(experiment: str, settings: list[dict]) -> int:
    """The seed of the one torch.Generator a randomized estimator (PAFT) draws from in a batch of
    settings: a function of the batch's (setting id, seed, n_seeds) only, like :func:`seed_keys`."""
    parts = [(s["id"], s["seed"], s["n_seeds"]) for s in settings]
    return row_key(experiment, "generator", *parts)


SAMPLED_BATCH_FIELDS = (
    "model",
    "model_kw",
    "M",
    "estimator",
    "mode",
    "paper_normalization",
    "optimizer",
    "delta",
    "freeze",
)


def sampled_batch_key(setting: dict) -> tuple:
    return tuple(str(setting.get(k)) for k in SAMPLED_BATCH_FIELDS)


def run_sampled(experiment: str, settings: list[dict], record_steps=None) -> list[dict]:
    """Run every seed of every setting in one :func:`sims.sampled.train_sampled` call.

    Per-row q, learning rate and (if the settings carry ``adam_eps``/``adam_betas``) Adam's ε;
    each row is censored at its own setting's budget (a row's
    trajectory does not depend on the batch, so running it longer changes nothing before).
    """
    s0 = settings[0]
    model = model_of(s0)
    thetas, keys, qs, lrs, epss, budgets, owner = [], [], [], [], [], [], []
    for j, s in enumerate(settings):
        th0 = init_of(model, s)
        n = s["n_seeds"]
        thetas.append(np.tile(th0, (n, 1)))
        keys.append(seed_keys(experiment, s))
        qs += [s["q"]] * n
        lrs += [s["lr"]] * n
        epss += [s.get("adam_eps")] * n
        budgets += [s["budget"]] * n
        owner += [j] * n
    budgets = np.array(budgets, dtype=np.int64)
    # Adam's ε and β per setting when the settings carry them; otherwise train_sampled's
    # defaults (a scalar ε keeps the default path bit-identical).
    adam = {}
    if "adam_eps" in s0:
        adam = {"adam_eps": np.array(epss), "adam_betas": tuple(s0["adam_betas"])}
    run = train_sampled(
        model,
        np.concatenate(thetas),
        np.concatenate(keys),
        q=np.array(qs),
        M=s0["M"],
        lr=np.array(lrs),
        estimator=s0["estimator"],
        mode=s0["mode"],
        paper_normalization=s0.get("paper_normalization", False),
        optimizer=s0["optimizer"],
        **adam,
        max_steps=int(budgets.max()),
        delta=s0.get("delta", 0.5),
        record_steps=record_steps,
        freeze_escaped=s0.get("freeze", True),
        generator_seed=generator_seed(experiment, settings),
    )
    owner = np.array(owner)
    over = run.steps > budgets
    steps = np.where(over, budgets, run.steps)
    cens = run.censored | over
    out = []
    for j, s in enumerate(settings):
        rows = owner == j
        res = {
            "steps": steps[rows],
            "censored": cens[rows],
            "max_monitor": run.max_monitor[rows],
            "min_monitor": run.min_monitor[rows],
            "stalled_frac": run.stalled_frac[rows],
            "p0_actual": np.array(float(model.monitor(init_of(model, s)))),
        }
        if run.curves is not None:
            res["curves"] = run.curves[rows]
            res["record_steps"] = np.asarray(record_steps)
        out.append(res)
    return out
