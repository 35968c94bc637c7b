"""Figure 5: relative bias of GARL, GARL-RLOO and PAFT against M (exact enumeration; PAFT's
resampling by Monte Carlo with ±2 standard errors), the delta-method leading term dashed, and
PAFT's extra variance."""

from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D

from ._common import int_ticks, out_dir, q_color, records, save, subplots

NAME = "estimator_bias"
MARK = {"garl": "o", "garl_rloo": "x", "paft": "^"}
LABEL = {
    "garl": "GARL plug-in (exact)",
    "garl_rloo": "GARL-RLOO (exact)",
    "paft": "PAFT: Monte Carlo over\nresamplings, ±2 s.e.",
}
FLOOR = 1e-6  # |r| axis floor: the q = 1, 0/1-reward values (1-P)^M fall far below it


def _legend(ax, qs, extra):
    hs = [
        Line2D([], [], marker=MARK[e], ls="none", color="k", mfc="none", ms=5, label=LABEL[e])
        for e in MARK
    ]
    hs += [Line2D([], [], color=q_color(q), lw=2, label=f"q={q:g}") for q in qs]
    hs += extra
    ax.legend(handles=hs, fontsize=6, ncol=2, loc="lower left")


def make(quick: bool = False, results_dir=None, fig_root=None):
    recs = records(NAME, quick, results_dir)
    fig, axes = subplots(3, width=4.6, height=3.8)
    rows = []
    panels = [("verifier", 0.3), ("likelihood", None)]
    qs = sorted({r["q"] for r in recs if r["q"] > 0})
    below = False
    for r in recs:
        Ms = np.array(r["M"])
        se = np.array(r.get("rel_bias_se", np.zeros(len(Ms))))
        rows += [
            {
                "mode": r["mode"],
                "P": r["P"],
                "q": r["q"],
                "estimator": r["estimator"],
                "M": int(m),
                "rel_bias": b,
                "rel_bias_mc_se": s,
                "leading": lb,
                "variance": v,
                "cosine": cs,
            }
            for m, b, s, lb, v, cs in zip(
                Ms,
                r["rel_bias"],
                se,
                r["leading_rel_bias"],
                r["variance"],
                r["cosine"],
                strict=True,
            )
        ]
        if r["q"] == 0.0:
            continue
        c = q_color(r["q"])
        for ax, (mode, P) in zip(axes[:2], panels, strict=False):
            if r["mode"] != mode or (P is not None and abs(r["P"] - P) > 1e-9):
                continue
            a = np.abs(np.array(r["rel_bias"]))
            if r["estimator"] == "paft":
                x = Ms * 1.1  # nudged right so the bars do not hide GARL's markers
                lo = np.clip(a - 2 * se, FLOOR, None)
                hi = a + 2 * se
                y = np.clip(a, FLOOR, None)
                ax.errorbar(
                    x, y, yerr=[y - lo, hi - y], fmt="^", color=c, ms=5, mfc="none",
                    elinewidth=0.8, capsize=2,
                )  # fmt: skip
            else:
                ok = a >= FLOOR
                ax.plot(Ms[ok], a[ok], MARK[r["estimator"]], color=c, ms=5, mfc="none")
                if (~ok).any():  # below the axis: marked on the floor, exact value in the CSV
                    below = True
                    ax.plot(Ms[~ok], np.full((~ok).sum(), FLOOR * 1.3), "v", color=c, ms=4)
            if r["estimator"] == "garl" and (r["q"] < 1 or mode == "likelihood"):
                ax.plot(Ms, np.abs(r["leading_rel_bias"]), "--", color=c, lw=1)
            if r["estimator"] == "garl" and r["q"] == 1 and mode == "verifier":
                Mf = np.geomspace(Ms.min(), Ms.max(), 100)
                ax.plot(Mf, (1 - r["P"]) ** Mf, ":", color=c, lw=1)
        if r["estimator"] == "paft" and r["paft_extra_variance"] is not None:
            ax = axes[2]
            ls = "-" if r["mode"] == "verifier" else ":"
            if r["mode"] == "verifier" and abs(r["P"] - 0.3) > 1e-9:
                continue
            ax.plot(
                Ms,
                np.maximum(r["paft_extra_variance"], 1e-12),
                "^" + ls,
                color=c,
                ms=4,
                label=f"{'0/1' if r['mode'] == 'verifier' else 'lik.'} q={r['q']:g}",
            )
    axes[0].set_title(
        "0/1 rewards, K=3 bandit (2 correct), P=0.3\n|r| = |E[ĝ]/g* - 1|; -- leading term "
        "(valid for M·P ≫ 1);\n⋯ q=1: |r| = (1-P)^M exactly (MaxRL)"
        + ("; ▼ below 1e-6" if below else ""),
        fontsize=8,
    )
    axes[1].set_title(
        "likelihood mode, latent K=3, P=0.126\n|r| along g*; -- leading term (M ≫ Var w/P²)\n"
        "PAFT: Monte Carlo over resamplings, ±2 s.e.",
        fontsize=8,
    )
    axes[2].set_title(
        "PAFT extra variance Var(PAFT) - Var(GARL) ≥ 0\n(— 0/1 rewards P=0.3, ⋯ likelihood; "
        "Monte Carlo\nover PAFT's resamplings)",
        fontsize=8,
    )
    lead = Line2D([], [], ls="--", color="grey", lw=1, label="leading term")
    _legend(axes[0], qs, [lead, Line2D([], [], ls=":", color="grey", label="(1-P)^M")])
    _legend(axes[1], qs, [lead])
    axes[0].set_ylim(FLOOR, None)
    for ax in axes:
        ax.set(xscale="log", yscale="log", xlabel="group size M")
        int_ticks(ax, sorted({int(m) for line in ax.get_lines() for m in line.get_xdata()
                              if float(m).is_integer()}))  # fmt: skip
    axes[0].set_ylabel("relative bias |r|")
    axes[1].set_ylabel("relative bias |r|")
    axes[2].set_ylabel("extra variance (trace)")
    axes[2].legend(fontsize=6, ncol=2, loc="lower left")
    return save(fig, NAME, out_dir(NAME, quick, fig_root), rows)
