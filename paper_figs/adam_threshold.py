"""Figure: Adam's ε turns the escape-time power law into a threshold in q.

(a) measured q* (the smallest grid q that escapes within the budget; the bar spans the grid cell
(q_below, q*]) against log10(1/p0), per ε, for the sigmoid with the exact gradient and the latent
model with sampled rationales; dashed: the hypothesis q* = 1 - log(ε/s)/log p0; dotted: the
two-phase budget-aware threshold (two_phase_q_star).  (b) escape steps against q, sigmoid,
ε = 1e-8, one curve per p0.  (c) the same for the sampled latent model at the preset's smallest
p0, one curve per ε.  (d) sigmoid, ε = 1e-8: measured escape steps over the lag-free two-phase
time T_eps + T_lr (two_phase_steps), β2 = 0.999 (filled) against β2 = 0.95 (open), per p0.
Censored medians are drawn at the budget with open triangles (≥ budget).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from sims.experiments.adam_threshold import predicted_q_star, two_phase_q_star

from ._common import out_dir, records, save

NAME = "adam_threshold"
EPS_COLORS = {1e-6: "#d95f02", 1e-8: "#1b9e77", 1e-10: "#7570b3"}
P0_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d")


def _steps_vs_q(ax, recs, key, colors, label_fn, budget_label):
    for i, val in enumerate(sorted({r[key] for r in recs}, reverse=True)):
        rs = sorted((r for r in recs if r[key] == val), key=lambda r: r["q"])
        c = colors(val, i)
        q = np.array([r["q"] for r in rs])
        med = np.array([r["median_steps"] for r in rs])
        cens = np.array([r["median_censored"] for r in rs])
        ax.plot(q, med, "-", color=c, lw=0.9, alpha=0.7)
        ax.plot(q[~cens], med[~cens], "o", color=c, ms=4, label=label_fn(val, rs[0]))
        ax.plot(q[cens], med[cens], "^", color=c, ms=6, mfc="none")
        qs = rs[0]
        pred = predicted_q_star(qs["p0"], qs["adam_eps"], qs["score_scale"])
        if 0.0 <= pred <= 1.0:
            ax.axvline(pred, color=c, ls="--", lw=1.0)
    top = max(r["budget"] for r in recs)
    ax.set(yscale="log", xlabel="q", ylabel="median escape steps (P ≥ 1/2)", ylim=(None, 12 * top))
    handles, _ = ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], ls="none", marker="^", mfc="none", color="k", label=budget_label),
        Line2D([], [], ls="--", color="k", label="predicted q* = 1 - log(ε/s)/log p0"),
    ]
    ax.legend(handles=handles, fontsize=6.5, loc="upper center", ncol=2)


def make(quick: bool = False, results_dir=None, fig_root=None):
    recs = records(NAME, quick, results_dir)
    esc = [r for r in recs if r["record"] == "escape"]
    # q* at the runs' own budgets (the budget-2000 re-readings are in the CSV only)
    qst_all = [r for r in recs if r["record"] == "q_star"]
    qst = [r for r in qst_all if r["truncated_from"] is None]
    fig, (ax_q, ax_ex, ax_sa, ax_lag) = plt.subplots(1, 4, figsize=(20.5, 4.6))

    # (a) measured q* vs p0, per eps, both models; the predictions as curves
    x_all = [math.log10(1 / r["p0"]) for r in qst]
    xs = np.linspace(min(x_all) - 0.5, max(x_all) + 0.5, 200)
    lr_b = {}
    for r in qst:
        lr_b.setdefault(r["part"], (r["lr"], int(r["budget"]), r["score_scale"]))
    for eps, c in EPS_COLORS.items():
        p0s = 10.0**-xs
        ax_q.plot(xs, [predicted_q_star(p, eps, 1 - p) for p in p0s], "--", color=c, lw=1.2)
        lr, b, _ = lr_b.get("exact", (None, None, None))
        if lr is not None:
            two = [two_phase_q_star(p, eps, 1 - p, lr, b) for p in p0s]
            ax_q.plot(xs, [np.nan if t is None else t for t in two], ":", color=c, lw=1)
        for part, mk, off in (("exact", "o", -0.12), ("sampled", "s", 0.12)):
            rs = [r for r in qst if r["part"] == part and r["adam_eps"] == eps]
            rs.sort(key=lambda r: r["p0"])
            if not rs:
                continue
            x = np.array([math.log10(1 / r["p0"]) for r in rs]) + off
            qm = np.array([np.nan if r["q_star_measured"] is None else r["q_star_measured"]
                           for r in rs])  # fmt: skip
            lo = np.array([qm[i] if r["q_below"] is None else r["q_below"]
                           for i, r in enumerate(rs)])  # fmt: skip
            ax_q.errorbar(x, qm, yerr=[qm - lo, np.zeros_like(qm)], fmt=mk, color=c, ms=5,
                          mfc=c if part == "exact" else "none", capsize=2, lw=0.8)  # fmt: skip
            if part == "sampled":  # its own s = (1 - p0)/K: the prediction as crosses
                ax_q.plot(x, [r["q_star_predicted"] for r in rs], "x", color=c, ms=5)
    ax_q.set(xlabel="log10(1/p0)", ylabel="q*  (smallest q escaping within budget)",
             ylim=(-0.05, 1.05))  # fmt: skip
    handles = [Line2D([], [], color=c, lw=2, label=f"ε = {eps:g}") for eps, c in EPS_COLORS.items()]
    ex_lr, ex_b, _ = lr_b.get("exact", (0, 0, 0))
    sa_lr, sa_b, sa_s = lr_b.get("sampled", (0, 0, 0))
    handles += [
        Line2D([], [], ls="none", marker="o", color="k",
               label=f"sigmoid, exact gradient (lr {ex_lr:g}, budget {ex_b})"),
        Line2D([], [], ls="none", marker="s", mfc="none", color="k",
               label=f"latent K=4, GARL-RLOO, M=8 (lr {sa_lr:g}, budget {sa_b})"),
        Line2D([], [], ls="--", color="k", label="hypothesis 1 - log(ε/s)/log p0, s = 1-p0"),
        Line2D([], [], ls="none", marker="x", color="k", label="hypothesis, latent s = (1-p0)/4"),
        Line2D([], [], ls=":", color="k", label="two-phase budget-aware (sigmoid lr, budget)"),
    ]  # fmt: skip
    ax_q.legend(handles=handles, fontsize=6.5, loc="lower right")
    ax_q.set_title("Adam threshold: bar = grid cell (q_below, q*]", fontsize=9)

    # (b) exact sigmoid, eps = 1e-8, steps vs q per p0
    ex = [r for r in esc if r["part"] == "exact" and r["adam_eps"] == 1e-8]
    p0_list = sorted({r["p0"] for r in ex}, reverse=True)
    cmap = {p: P0_COLORS[i % len(P0_COLORS)] for i, p in enumerate(p0_list)}
    _steps_vs_q(
        ax_ex, ex, "p0", lambda v, i: cmap[v], lambda v, r: f"p0 = {v:.0e}",
        f"censored (≥ budget {ex_b})",
    )  # fmt: skip
    ax_ex.set_title("sigmoid, exact gradient, Adam ε = 1e-8, lr 0.01", fontsize=9)

    # (c) sampled latent at its smallest p0, steps vs q per eps
    if any(r["part"] == "sampled" for r in esc):
        p_min = min(r["p0"] for r in esc if r["part"] == "sampled")
        sa = [r for r in esc if r["part"] == "sampled" and r["p0"] == p_min]
        _steps_vs_q(
            ax_sa, sa, "adam_eps", lambda v, i: EPS_COLORS.get(v, "k"),
            lambda v, r: f"ε = {v:g} (s = {r['score_scale']:.2g})", f"censored (≥ budget {sa_b})",
        )  # fmt: skip
        ax_sa.set_title(
            f"latent K=4, GARL-RLOO likelihood, M=8, p0 = {p_min:.0e}, lr {sa_lr:g}, "
            f"median of {sa[0]['n_runs']}",
            fontsize=9,
        )
    # (d) the v̂ lag: measured over lag-free steps, sigmoid, eps = 1e-8, beta2 0.999 vs 0.95
    lag = [r for r in esc if r["adam_eps"] == 1e-8 and r["steps_ratio"] is not None
           and r["part"] in ("exact", "exact_short_memory")]  # fmt: skip
    p_short = sorted({r["p0"] for r in lag if r["part"] == "exact_short_memory"}, reverse=True)
    for i, p0 in enumerate(p_short):
        c = P0_COLORS[i % len(P0_COLORS)]
        for part, mfc in (("exact", c), ("exact_short_memory", "none")):
            rs = sorted((r for r in lag if r["part"] == part and r["p0"] == p0),
                        key=lambda r: r["q"])  # fmt: skip
            ax_lag.plot([r["q"] for r in rs], [r["steps_ratio"] for r in rs], "-o", color=c,
                        mfc=mfc, ms=4, lw=0.9)  # fmt: skip
    ax_lag.axhline(1.0, color="k", lw=0.8, ls="--")
    ax_lag.set(xlabel="q", ylabel="escape steps / (T_eps + T_lr)", ylim=(0, 1.2))
    handles = [Line2D([], [], color=P0_COLORS[i % len(P0_COLORS)], lw=2, label=f"p0 = {p:.0e}")
               for i, p in enumerate(p_short)]  # fmt: skip
    handles += [
        Line2D([], [], ls="-", marker="o", color="k", label="β2 = 0.999"),
        Line2D([], [], ls="-", marker="o", mfc="none", color="k", label="β2 = 0.95"),
    ]
    ax_lag.legend(handles=handles, fontsize=6.5, loc="lower right")
    ax_lag.set_title("sigmoid, ε = 1e-8: v̂ lag (escaping q only)", fontsize=9)
    rows = [{k: v for k, v in r.items() if k != "stalled_above"} for r in qst_all + esc]
    return save(fig, NAME, out_dir(NAME, quick, fig_root), rows)
