"""Figure 6: GRPO on the q axis: amplification of ∇P by the exact expected update."""

from __future__ import annotations

import numpy as np

from ._common import out_dir, records, save, subplots

NAME = "grpo_q_axis"


def make(quick: bool = False, results_dir=None, fig_root=None):
    recs = records(NAME, quick, results_dir)
    fig, axes = subplots(2, width=4.8)
    rows = []
    Ms = sorted({r["M"] for r in recs})
    cmap = {M: f"C{i}" for i, M in enumerate(Ms)}
    seen = set()
    for r in recs:
        key = (r["estimator"], r["M"])
        if key in seen:
            continue
        seen.add(key)
        P, amp, th = np.array(r["P"]), np.array(r["amplification"]), np.array(r["theory"])
        ax = axes[0] if r["estimator"] == "grpo" else axes[1]
        hi = next(
            x
            for x in recs
            if x["estimator"] == r["estimator"] and x["M"] == r["M"] and x["range"] == "MP>=4"
        )
        ax.plot(
            P,
            amp,
            "o",
            ms=3,
            color=cmap[r["M"]],
            label=f"M={r['M']}: q_eff {hi['slope']:.2f} (M·P ≥ 4)",
        )
        ax.plot(P, th, "--", lw=0.8, color=cmap[r["M"]])
        rows += [
            {"estimator": r["estimator"], "M": r["M"], "P": a, "amplification": b, "theory": c}
            for a, b, c in zip(P, amp, th, strict=False)
        ]
    for ax, name in zip(axes, ("GRPO (std-normalised)", "plug-in GARL, q = 1/2"), strict=False):
        P = np.logspace(-5, -0.4, 50)
        ax.plot(P, P**-0.5, "k:", lw=1, label="P^(-1/2) (flow, q = 1/2)")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="P",
            ylabel="E[update] / ∇P",
            title=f"{name}, 0/1 rewards: exact (●), theory (--)",
        )
        ax.title.set_fontsize(8)
        ax.invert_xaxis()
        ax.legend(fontsize=6)
    return save(fig, NAME, out_dir(NAME, quick, fig_root), rows)
