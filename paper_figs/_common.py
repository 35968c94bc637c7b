"""Shared plumbing of the figures: run (or load) an experiment, save PNG + PDF + table."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sims.experiments import get_experiment  # noqa: E402
from sims.runner import DEFAULT_RESULTS, run_experiment  # noqa: E402

DEFAULT_FIGURES = Path("figures")
Q_COLORS = {0.0: "#1b9e77", 0.25: "#d95f02", 0.5: "#7570b3", 0.75: "#e7298a", 1.0: "#66a61e"}


def q_color(q):
    return Q_COLORS.get(q, "black")


def records(name: str, quick: bool, results_dir) -> list[dict]:
    """Run the experiment's missing settings (cached) and return its analysis records."""
    exp = get_experiment(name)
    table = run_experiment(exp, quick=quick, out=results_dir or DEFAULT_RESULTS)
    return exp.analyze(table)


def out_dir(name: str, quick: bool, fig_root) -> Path:
    root = Path(fig_root) if fig_root is not None else DEFAULT_FIGURES
    d = root / ("quick" if quick else "full") / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def save(fig, name: str, folder: Path, rows: list[dict]) -> Path:
    """Write <name>.png, <name>.pdf and <name>.csv (the plotted numbers) into ``folder``."""
    tidy_log_axes(fig)
    fig.tight_layout()
    fig.savefig(folder / f"{name}.png", dpi=110, bbox_inches="tight")
    fig.savefig(folder / f"{name}.pdf", bbox_inches="tight")
    plt.close(fig)
    if rows:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(folder / f"{name}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    return folder


def subplots(n: int, width: float = 4.2, height: float = 3.4):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, axes[0]


def int_ticks(ax, values, axis: str = "x") -> None:
    """Plain integer ticks at ``values`` on a log axis (no '2×10^0' minor labels)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    a = ax.xaxis if axis == "x" else ax.yaxis
    a.set_major_locator(FixedLocator(list(values)))
    a.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    a.set_minor_locator(NullLocator())


def tidy_log_axes(fig) -> None:
    """A log axis spanning under ~1.5 decades gets 1-2-5 ticks with plain labels and no minor
    labels (matplotlib otherwise labels minor ticks '6×10^2', which collide with the y-label)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for ax in fig.axes:
        for a, lim, scale in (
            (ax.yaxis, ax.get_ylim(), ax.get_yscale()),
            (ax.xaxis, ax.get_xlim(), ax.get_xscale()),
        ):
            if scale != "log" or not isinstance(a.get_major_locator(), LogLocator):
                continue
            lo, hi = sorted(lim)
            if lo <= 0 or hi / lo > 10**1.5:
                continue
            a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            a.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            a.set_minor_formatter(NullFormatter())
