"""Experiments as data (bsuite-style): settings table, batched run, pure analysis.

Each experiment module defines ``EXPERIMENT``, an :class:`Experiment` with

* ``settings(quick) -> list[dict]`` — one dict per setting with a readable ``id``
  (e.g. ``escape_time/flow/sigmoid/q=0.5/p0=1e-04``), ``seed`` and ``n_seeds``; pure data;
* ``batch_key(setting)`` — settings with equal keys run together in one array program;
* ``run_batch(settings) -> list[dict of arrays]`` — the simulation;
* ``analyze(table) -> list[dict]`` — records, one per fitted series, a pure function of the
  results table (the ``--json`` summary).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Experiment", "EXPERIMENTS", "get_experiment"]


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    version: int
    settings: Callable[[bool], list[dict]]
    batch_key: Callable[[dict], tuple]
    run_batch: Callable[[list[dict]], list[dict]]
    analyze: Callable[[list[dict]], list[dict]]


def _registry() -> dict[str, Experiment]:
    from . import (
        adam_threshold,
        escape_time,
        estimator_bias,
        grpo_q_axis,
        label_noise,
        lm_cold_start,
        sampled_escape,
        table1,
        training_curves,
    )

    mods = (escape_time, sampled_escape, training_curves, label_noise, estimator_bias, grpo_q_axis)
    mods += (adam_threshold, lm_cold_start, table1)
    return {m.EXPERIMENT.name: m.EXPERIMENT for m in mods}


EXPERIMENTS: dict[str, Experiment] = {}


def get_experiment(name: str) -> Experiment:
    """Look an experiment up by name (ValueError listing the names on a typo)."""
    if not EXPERIMENTS:
        EXPERIMENTS.update(_registry())
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def all_experiments() -> dict[str, Experiment]:
    if not EXPERIMENTS:
        EXPERIMENTS.update(_registry())
    return dict(EXPERIMENTS)
