"""Figure 3: training curves P(t) from one cold start p0 = 1e-3 per q."""

from __future__ import annotations

import numpy as np

from ._common import out_dir, q_color, records, save, subplots

NAME = "training_curves"
TITLES = {
    "flow": "exact flow, sigmoid (dotted: theory T_q)",
    "sampled_verifier": "sampled verifier, sigmoid, GARL, M=8, η=1",
    "sampled_likelihood": "sampled likelihood, latent K=4, GARL, M=8, η=2",
}


def make(quick: bool = False, results_dir=None, fig_root=None):
    recs = records(NAME, quick, results_dir)
    fig, axes = subplots(3)
    rows = []
    for ax, regime in zip(axes, TITLES, strict=False):
        for r in recs:
            if r["regime"] != regime:
                continue
            t, P = np.array(r["curve"]["t"]), np.array(r["curve"]["P"])
            pos = t > 0
            c = q_color(r["q"])
            lab = f"q={r['q']:g}"
            if regime == "flow" and "slope" in r:
                lab += f", tail 1-P ~ t^{r['slope']:.2f}"
            ax.plot(t[pos], P[pos], color=c, label=lab)
            if regime == "flow":
                ax.axvline(r["t_half_theory"], color=c, ls=":", lw=0.8)
            rows += [
                {"regime": regime, "q": r["q"], "t": a, "P": b} for a, b in zip(t, P, strict=False)
            ]
        ax.set(
            xscale="log",
            yscale="log" if regime == "flow" else "linear",
            xlabel="time (flow) / steps (sampled)",
            ylabel="P(t)  (median over seeds)",
            title=TITLES[regime],
        )
        ax.title.set_fontsize(8)
        ax.legend(fontsize=7)
    return save(fig, NAME, out_dir(NAME, quick, fig_root), rows)
