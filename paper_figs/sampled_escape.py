"""Figure 2: escape under sampled training (M samples): the capped verifier regime vs likelihood
mode at matched effective step size, and the paper's 1/M^q normalisation at equal raw lr."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from ._common import out_dir, q_color, records, save

NAME = "sampled_escape"
M_STYLE = {8: ("-", "o"), 64: (":", "s")}


def _pts(r):
    p0 = np.array([p["p0"] for p in r["points"]])
    med = np.array([p["median"] for p in r["points"]])
    th = np.array([np.nan if p["theory"] is None else p["theory"] for p in r["points"]])
    return p0, med, th


def _slope(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f}"


def make(quick: bool = False, results_dir=None, fig_root=None):
    recs = records(NAME, quick, results_dir)
    fig, grid = plt.subplots(2, 2, figsize=(11.5, 8.0))
    ax_sig, ax_ver, ax_lik, ax_norm = grid.ravel()
    rows = []
    latent_slopes: dict[tuple, dict] = {}  # (regime, q) -> {M: slope}
    flow_drawn = set()
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
            ax_sig.plot(p0, th, "--", color=c, lw=1)
            ax_sig.plot(p0, med, "o", color=c, ms=4, label=f"q={r['q']:g}: slope {r['slope']:.2f}")
        elif part == "latent_modes":
            lik = r["regime"] == "sampled_likelihood"
            ax = ax_lik if lik else ax_ver
            ls, mk = M_STYLE.get(r["M"], ("-.", "d"))
            ax.plot(p0, med, mk + ls, color=c, ms=4, mfc="none" if r["M"] != 8 else c, lw=0.9)
            latent_slopes.setdefault((r["regime"], r["q"]), {})[r["M"]] = r["slope"]
            if lik and r["q"] not in flow_drawn:  # the flow law does not depend on M
                flow_drawn.add(r["q"])
                ax.plot(p0, th, "--", color=c, lw=1.2, alpha=0.8)
        else:
            ax_norm.plot(
                p0, med, "o-", color=c, ms=4, lw=0.8, label=f"q={r['q']:g}: slope {r['slope']:.2f}"
            )
    Ms = sorted({r["M"] for r in recs if r["part"] == "latent_modes"})
    for ax, regime in ((ax_ver, "sampled_verifier"), (ax_lik, "sampled_likelihood")):
        hs = []
        for q in sorted({q for (reg, q) in latent_slopes if reg == regime}):
            sl = latent_slopes[(regime, q)]
            txt = ", ".join(f"{_slope(sl[M])} (M={M})" for M in Ms if M in sl)
            hs.append(Line2D([], [], color=q_color(q), lw=2, label=f"q={q:g}: slope {txt}"))
        for M in Ms:
            ls, mk = M_STYLE.get(M, ("-.", "d"))
            hs.append(
                Line2D(
                    [],
                    [],
                    ls=ls,
                    marker=mk,
                    color="k",
                    ms=4,
                    mfc="none" if M != 8 else "k",
                    label=f"M={M} (grey ⋮ at 1/M)",
                )  # fmt: skip
            )
        if regime == "sampled_likelihood":
            hs.append(Line2D([], [], ls="--", color="grey", label="flow K·T_sigmoid(p0, q)/η"))
        ax.legend(handles=hs, fontsize=6, loc="upper left")
        for M in Ms:
            ax.axvline(1.0 / M, color="grey", lw=0.6, ls=":")
    ax_sig.set_title(
        "sampled verifier, sigmoid, GARL, M=8, η=1, no 1/M^q\n"
        "-- theory 1/(M p0 (1-e^(-η M^(q-1))))\n(slopes fit on p0 ≤ 0.1/M)",
        fontsize=8,
    )
    ax_ver.set_title(
        "sampled verifier (0/1 rewards), latent K=4, GARL, η=2, no 1/M^q\n"
        "capped regime: slope 1 for every q when p0 ≪ 1/M\n"
        "(slopes fit on p0 ≤ 0.1/M; n/a: under 2 such points)",
        fontsize=8,
    )
    ax_lik.set_title(
        "sampled likelihood (w(z) ∈ (0,1)), latent K=4, GARL, η=2 (matched), no 1/M^q\n"
        "flow law survives below 1/M: slope ≈ 1-q\n"
        "(slopes fit on p0 ≤ 0.1/M; n/a: under 2 such points)",
        fontsize=8,
    )
    ax_norm.set_title(
        "sampled verifier, sigmoid, GARL, M=8, paper 1/M^q\n"
        "normalisation at equal raw lr = 1 (q-independent)\n(slopes fit on p0 ≤ 0.1/M)",
        fontsize=8,
    )
    for ax in (ax_sig, ax_ver, ax_lik, ax_norm):
        ax.set(xscale="log", yscale="log", xlabel="p0", ylabel="median escape steps")
        ax.invert_xaxis()
    ax_sig.legend(fontsize=6, loc="upper left")
    ax_norm.legend(fontsize=6, loc="upper left")
    return save(fig, NAME, out_dir(NAME, quick, fig_root), rows)
