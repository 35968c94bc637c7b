"""Figure 2: escape under sampled training (M samples): the capped verifier regime vs likelihood
mode at matched effective step size, and the paper's 1/M^q normalisation at equal raw lr."""

from __future__ import annotations

import numpy as np

from ._common import out_dir, q_color, records, save, subplots

NAME = "sampled_escape"


def _pts(r):
    p0 = np.array([p["p0"] for p in r["points"]])
    med = np.array([p["median"] for p in r["points"]])
    th = np.array([np.nan if p["theory"] is None else p["theory"] for p in r["points"]])
    return p0, med, th


def make(quick: bool = False, results_dir=None, fig_root=None):
    recs = records(NAME, quick, results_dir)
    fig, axes = subplots(3, width=4.6)
    rows = []
    for r in recs:
        p0, med, th = _pts(r)
        c = q_color(r["q"])
        part = r["part"]
        for p in r["points"]:
            rows.append(
                {
                    "part": part,
                    "regime": r["regime"],
                    "M": r["M"],
                    "q": r["q"],
                    "eta": r["eta"],
                    "lr": r["lr"],
                    "paper_normalization": r["paper_normalization"],
                    **p,
                }
            )
        if part == "sigmoid_check":
            ax = axes[0]
            ax.plot(p0, th, "--", color=c, lw=1)
            ax.plot(p0, med, "o", color=c, ms=4, label=f"q={r['q']:g}: slope {r['slope']:.2f}")
        elif part == "latent_modes":
            ax = axes[1]
            lik = r["regime"] == "sampled_likelihood"
            ls = "-" if r["M"] == 8 else ":"
            ax.plot(
                p0,
                med,
                ("o" if lik else "s") + ls,
                color=c,
                ms=4,
                mfc="none" if lik else c,
                lw=0.8,
                label=f"{'lik' if lik else 'ver'} M={r['M']} q={r['q']:g}: {r['slope']:.2f}",
            )
            if lik and r["M"] == 8:
                ax.plot(p0, th, "--", color=c, lw=1)
        else:
            ax = axes[2]
            ax.plot(
                p0, med, "o-", color=c, ms=4, lw=0.8, label=f"q={r['q']:g}: slope {r['slope']:.2f}"
            )
    Ms = sorted({r["M"] for r in recs if r["part"] == "latent_modes"})
    for M in Ms:
        axes[1].axvline(1.0 / M, color="grey", lw=0.6, ls=":")
    axes[0].set_title(
        "sampled verifier, sigmoid, GARL, M=8, η=1,\nno 1/M^q; -- 1/(M p0 (1-e^(-η M^(q-1))))",
        fontsize=8,
    )
    axes[1].set_title(
        "latent K=4, GARL, η=2 (matched, no 1/M^q):\n"
        "sampled verifier ■ vs sampled likelihood ○; -- flow K·T/η; "
        "⋮ 1/M",
        fontsize=8,
    )
    axes[2].set_title(
        "sampled verifier, sigmoid, M=8, paper 1/M^q\n"
        "normalisation at equal raw lr = 1 (q-independent)",
        fontsize=8,
    )
    for ax in axes:
        ax.set(xscale="log", yscale="log", xlabel="p0", ylabel="median escape steps")
        ax.invert_xaxis()
        ax.legend(fontsize=6, ncol=1 if ax is not axes[1] else 2)
    return save(fig, NAME, out_dir(NAME, quick, fig_root), rows)
