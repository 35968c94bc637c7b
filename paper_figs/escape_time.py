"""Figure 1: escape time vs p0 under the exact gradient flow and gradient descent.

Markers: ● the exact gradient flow (ODE, time in flow units), × gradient descent with step
η = 1/4 on the exact gradient (time = steps·η), -- the theory (``tsallis.theory``).  Each panel's
legend (outside the axes, below it) gives the fitted log-log slope of the flow points per q
(against 1 - q, Thms 5.1/5.2; at q = 1 the slope of T against log 1/p0).  Gradient descent is
run only where its T/η steps stay affordable (the figure says down to which p0); a run that
never escapes within its budget would be drawn as ▲ at the budget (censored, a lower bound).
"""

from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D

from ._common import out_dir, q_color, records, save, subplots

NAME = "escape_time"
TITLES = {
    "sigmoid": "sigmoid P = σ(θ)",
    "karm_K4": "K-arm bandit (K = 4)",
    "chain_V10": "L-step chain (V = 10, p0 = 10^-L)",
}


def _gd_coverage(recs) -> str:
    """'q=0: p0 ≥ 1e-04, ...' — how far down gradient descent was run, per q."""
    lo: dict = {}
    for r in recs:
        if r["regime"] == "gd":
            m = min(p["p0"] for p in r["points"])
            lo[r["q"]] = min(lo.get(r["q"], 1.0), m)
    if not lo:
        return "gradient descent not run"
    by = {}
    for q, m in sorted(lo.items()):
        by.setdefault(f"{m:.0e}", []).append(f"{q:g}")
    parts = [f"q = {', '.join(qs)}: p0 ≥ {m}" for m, qs in by.items()]
    return "; ".join(parts)


def make(quick: bool = False, results_dir=None, fig_root=None):
    recs = records(NAME, quick, results_dir)
    fig, axes = subplots(3, height=4.6)
    rows = []
    n_cens = 0
    for ax, model in zip(axes, TITLES, strict=False):
        for r in recs:
            if r["model"] != model:
                continue
            pts = r["points"]
            p0 = np.array([p["p0"] for p in pts])
            t = np.array([p["time"] for p in pts])
            th = np.array([p["theory"] for p in pts])
            cens = np.array([p["censored"] > 0 for p in pts])
            n_cens += int(cens.sum())
            c = q_color(r["q"])
            if r["regime"] == "flow":
                ax.plot(p0, th, "--", color=c, lw=1.2)
                lab = (
                    f"q = {r['q']:g}: slope {r['slope']:.2f} (1 - q = {1 - r['q']:.2f})"
                    if r["kind"] == "power"
                    else f"q = {r['q']:g}: T/log(1/p0) slope {r['slope']:.2f}"
                )
                ax.plot(p0[~cens], t[~cens], "o", color=c, ms=4, label=lab)
            else:
                ax.plot(p0[~cens], t[~cens], "x", color=c, ms=7, mew=1.2)
            if cens.any():
                ax.plot(p0[cens], t[cens], "^", color=c, ms=6, mfc="none")
            for p in pts:
                rows.append(
                    {
                        "model": model,
                        "regime": r["regime"],
                        "q": r["q"],
                        "eta": r.get("eta"),
                        "p0": p["p0"],
                        "time": p["time"],
                        "theory": p["theory"],
                        "censored": p["censored"],
                    }
                )
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="p0 (initial success probability)",
            ylabel="escape time to P = 1/2 (flow units)",
            title=TITLES[model],
        )
        ax.invert_xaxis()
        ax.legend(
            fontsize=7,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.2),
            ncol=1,
            frameon=False,
            title="fitted slope of the flow points (●)",
            title_fontsize=7,
        )
    style = [
        Line2D([], [], ls="none", marker="o", color="0.3", ms=5, label="exact gradient flow"),
        Line2D(
            [], [], ls="none", marker="x", color="0.3", ms=6, label="gradient descent, η = 1/4"
        ),
        Line2D([], [], ls="--", color="0.3", label="theory (tsallis.theory)"),
    ]
    if n_cens:
        style.append(
            Line2D([], [], ls="none", marker="^", mfc="none", color="0.3", label="censored (≥)")
        )
    fig.legend(
        handles=style,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=len(style),
        fontsize=8,
        frameon=False,
    )
    fig.text(
        0.5,
        -0.01,
        "Colours: q (each panel's list).  Missing × at small p0 = not run: gradient descent "
        f"needs T/η steps, so it was run only for {_gd_coverage(recs)}"
        + ("" if n_cens else "; every run drawn escaped (none censored)")
        + ".\nChain: slopes below 1 - q are expected (its flow time carries a 1/L factor, "
        "L = log10(1/p0)); the dashed theory matches the points.",
        ha="center",
        va="top",
        fontsize=7,
        wrap=True,
    )
    return save(fig, NAME, out_dir(NAME, quick, fig_root), rows)
