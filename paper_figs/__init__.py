"""Figures of the paper check: ``python -m paper_figs <name> [--quick]`` or ``all``.

Each figure module runs its experiment through the cached runner of :mod:`sims` (reusing any
finished settings), analyses it, and writes ``<name>.png``, ``<name>.pdf`` and ``<name>.csv``
(the plotted numbers) into ``figures/{quick,full}/<name>/`` (or under ``--out``).
"""

FIGURES = (
    "escape_time",
    "sampled_escape",
    "training_curves",
    "label_noise",
    "estimator_bias",
    "grpo_q_axis",
    "adam_threshold",
    "lm_cold_start",
    "table1",
)
