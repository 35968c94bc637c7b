"""Simulators that check Sections 5 and 6 of Lin & Ie (2026) empirically.

Models whose success probability and gradient are exact (:mod:`sims.models`), the dynamics
(exact gradient flow, gradient descent, and stochastic training with M samples per step and any
estimator of :mod:`tsallis.estimators`, :mod:`sims.dynamics` / :mod:`sims.sampled`), experiments
as data (:mod:`sims.experiments`), analysis as pure functions of a results table
(:mod:`sims.analysis`) and a resumable, cached runner (:mod:`sims.runner`).

CLI: ``python -m sims list`` and ``python -m sims run <experiment> [--quick] [--out DIR]
[--overwrite] [--json]``.
"""
