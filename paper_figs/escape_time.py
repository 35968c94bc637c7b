"""Figure 1: escape time vs p0 under exact flow (lines+dots) and GD (crosses), theory dashed."""

from __future__ import annotations

import numpy as np

from ._common import out_dir, q_color, records, save, subplots

NAME = "escape_time"
TITLES = {
    "sigmoid": "sigmoid P = σ(θ)",
    "karm_K4": "K-arm bandit (K = 4)",
    "chain_V10": "L-step chain (V = 10, p0 = 10^-L)",
}


def make(quick: bool = False, results_dir=None, fig_root=None):
    recs = records(NAME, quick, results_dir)
    fig, axes = subplots(3)
    rows = []
    for ax, model in zip(axes, TITLES, strict=False):
        for r in recs:
            if r["model"] != model:
                continue
            pts = r["points"]
            p0 = np.array([p["p0"] for p in pts])
            t = np.array([p["time"] for p in pts])
            th = np.array([p["theory"] for p in pts])
            c = q_color(r["q"])
            if r["regime"] == "flow":
                ax.plot(p0, th, "--", color=c, lw=1.2)
                lab = f"q={r['q']:g}, slope {r['slope']:.3f}" + (
                    f" (1-q={1 - r['q']:.2f})" if r["kind"] == "power" else " (T vs log 1/p0)"
                )
                ax.plot(p0, t, "o", color=c, ms=4, label=lab)
            else:
                ax.plot(p0, t, "x", color=c, ms=6)
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
            ylabel="escape time to P = 1/2",
            title=TITLES[model],
        )
        ax.invert_xaxis()
        ax.legend(fontsize=7, title="exact flow ● (GD η=1/4 ×), theory --", title_fontsize=7)
    return save(fig, NAME, out_dir(NAME, quick, fig_root), rows)
