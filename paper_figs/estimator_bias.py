"""Figure 5: relative bias of GARL, GARL-RLOO and PAFT against M (exact enumeration), with the
delta-method leading term dashed, and PAFT's extra variance."""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import NullFormatter, ScalarFormatter

from ._common import out_dir, q_color, records, save, subplots

NAME = "estimator_bias"
MARK = {"garl": "o", "garl_rloo": "x", "paft": "^"}


def make(quick: bool = False, results_dir=None, fig_root=None):
    recs = records(NAME, quick, results_dir)
    fig, axes = subplots(3)
    rows = []
    panels = [("verifier", 0.3), ("likelihood", None)]
    for r in recs:
        Ms = np.array(r["M"])
        for _k in ("rel_bias", "leading_rel_bias", "variance", "cosine"):
            pass
        rows += [
            {
                "mode": r["mode"],
                "P": r["P"],
                "q": r["q"],
                "estimator": r["estimator"],
                "M": int(m),
                "rel_bias": b,
                "leading": lb,
                "variance": v,
                "cosine": cs,
            }
            for m, b, lb, v, cs in zip(
                Ms, r["rel_bias"], r["leading_rel_bias"], r["variance"], r["cosine"], strict=False
            )
        ]
        if r["q"] == 0.0:
            continue
        c = q_color(r["q"])
        for ax, (mode, P) in zip(axes[:2], panels, strict=False):
            if r["mode"] != mode or (P is not None and abs(r["P"] - P) > 1e-9):
                continue
            ax.plot(
                Ms,
                np.abs(r["rel_bias"]),
                MARK[r["estimator"]],
                color=c,
                ms=5,
                mfc="none",
                label=f"{r['estimator']} q={r['q']:g}",
            )
            if r["estimator"] == "garl" and (r["q"] < 1 or mode == "likelihood"):
                ax.plot(Ms, np.abs(r["leading_rel_bias"]), "--", color=c, lw=1)
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
                label=f"{r['mode']} q={r['q']:g}",
            )
    axes[0].set_title(
        "0/1 rewards, K=3 bandit (2 correct), P=0.3\n|r| = |E[ĝ]/g* - 1|; "
        "-- leading term (valid for M·P ≫ 1)",
        fontsize=8,
    )
    axes[1].set_title(
        "likelihood mode, latent K=3, P=0.126\n|r| along g*; -- leading term (M ≫ Var w/P²)",
        fontsize=8,
    )
    axes[2].set_title(
        "PAFT extra variance Var(PAFT) - Var(GARL) ≥ 0\n(— 0/1 rewards P=0.3, ⋯ likelihood)",
        fontsize=8,
    )
    all_M = sorted({int(m) for r in recs for m in r["M"]})
    for ax in axes:
        ax.set(xscale="log", yscale="log", xlabel="group size M")
        ax.set_xticks(all_M)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=6, ncol=2)
    axes[0].set_ylabel("relative bias |r|")
    axes[2].set_ylabel("extra variance (trace)")
    return save(fig, NAME, out_dir(NAME, quick, fig_root), rows)
