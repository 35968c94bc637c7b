"""Figure 4: label noise: equilibrium contamination vs the escort, time to fit the noise vs the
paper's rate (Prop. C.2) with softmax logits (where its bounded-score assumption fails) and with
the contamination itself as the parameter (where it holds), and time to memorise wrong labels in
a many-example model."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from tsallis import theory

from ._common import out_dir, q_color, records, save

NAME = "label_noise"


def make(quick: bool = False, results_dir=None, fig_root=None):
    recs = records(NAME, quick, results_dir)
    # a 2 x 2 grid, not a strip: each panel wide enough for its legend and a readable title
    fig, grid = plt.subplots(2, 2, figsize=(10.5, 8.0))
    axes = grid.ravel()
    rows = []
    for r in recs:
        c = q_color(r["q"])
        if r["part"] == "two_label_equilibrium" and r["q"] > 0:
            ax = axes[0]
            eps = np.array(r["eps"])
            ef = np.linspace(min(eps), max(eps), 60)  # the escort curve, not a polyline
            ax.plot(ef, [theory.noise_equilibrium(e, r["q"]) for e in ef], "--", color=c, lw=1)
            ax.plot(eps, r["equilibrium"], "o", color=c, ms=4, label=f"q={r['q']:g}")
            rows += [
                {"panel": "equilibrium", "q": r["q"], "eps": e, "measured": m, "escort": s}
                for e, m, s in zip(r["eps"], r["equilibrium"], r["escort"], strict=False)
            ]
        elif r["part"] == "two_label_fitting_time" and r["eps"] == 0.1:
            ax = axes[1]
            ax.plot(
                r["levels"],
                r["time"],
                "o-",
                color=c,
                ms=4,
                label=f"q={r['q']:g}: slope {r['slope']:.2f} (paper {r['theory_slope']:g})",
            )
            ax.plot(r["levels"], r["paper_time"], "--", color=c, lw=1)
            rows += [
                {
                    "panel": "fitting_time",
                    "q": r["q"],
                    "eps": r["eps"],
                    "eta": a,
                    "time": b,
                    "paper": p,
                }
                for a, b, p in zip(r["levels"], r["time"], r["paper_time"], strict=False)
            ]
        elif r["part"] == "two_label_direct_fitting_time" and r["eps"] == 0.1:
            ax = axes[2]
            ax.plot(
                r["levels"],
                r["time"],
                "s",
                color=c,
                ms=3.5,
                label=f"q={r['q']:g}: slope {r['slope']:.3f} (paper {r['q'] + 1:g}), "
                f"C = {r['constant']:.3f}",
            )
            ax.plot(r["levels"], r["paper_time"], "--", color=c, lw=1)
            rows += [
                {
                    "panel": "fitting_time_bounded_score",
                    "q": r["q"],
                    "eps": r["eps"],
                    "eta": a,
                    "time": b,
                    "paper": p,
                    "in_fit": a in r["fit_levels"],
                }
                for a, b, p in zip(r["levels"], r["time"], r["paper_time"], strict=False)
            ]
        elif r["part"] == "many_examples_memorisation":
            ax = axes[3]
            pts = [p for p in r["points"]]
            p0 = [p["p0"] for p in pts]
            t = [p["time"] for p in pts]
            cens = [p["censored"] for p in pts]
            lab = f"q={r['q']:g}" + (
                " (all censored: ≥ budget 200/p~0)" if all(cens) else f": slope {r['slope']:.2f}"
            )
            ax.plot(p0, t, "o-" if not all(cens) else "^:", color=c, ms=4, label=lab)
            rows += [{"panel": "memorisation", "q": r["q"], **p} for p in pts]
    axes[0].set(
        xlabel="noise rate ε",
        ylabel="equilibrium contamination p~",
        yscale="log",
        title="(a) equilibrium contamination p~ (●) vs the escort (--)\n"
        "(q = 0: no fixed point above 0, p~ only shrinks)",
    )
    axes[1].set(
        xscale="log",
        yscale="log",
        xlabel="contamination level η",
        ylabel="flow time from p~0 = 1e-8",
        title="(b) softmax logits, ε = 0.1: time to fit the noise to level η\n"
        "-- the paper's η^(q+1)/((q+1)ε); its bounded-score assumption fails",
    )
    axes[2].set(
        xscale="log",
        yscale="log",
        xlabel="contamination level η",
        ylabel="flow time from p~0 = 1e-16",
        title="(c) p~ itself the parameter (‖∇p~‖ = 1), ε = 0.1: the paper's law\n"
        "holds, slope q+1 and C = T(q+1)ε/η^(q+1) ≈ 1 (-- paper)",
    )
    axes[3].set(
        xscale="log",
        yscale="log",
        xlabel="initial wrong-class prob p~0",
        ylabel="time to memorise\n(mean P(wrong label) = 1/2)",
        title="(d) memorising wrong labels: 20 examples, 20% wrong",
    )
    axes[3].invert_xaxis()
    lo, hi = axes[3].get_ylim()
    axes[3].set_ylim(lo, hi * 300)  # headroom: the legend sits above the q = 0 (censored) line
    for ax in axes:
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7.5, loc="upper left" if ax in (axes[2], axes[3]) else "best")
    return save(fig, NAME, out_dir(NAME, quick, fig_root), rows)
