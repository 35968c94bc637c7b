"""Figure: Table 1 in miniature (experiment ``table1``).

Panels, per method (colour) and seed (thin lines; thick: mean over seeds): (a) held-out
majority@k over steps, clean labels; (b) the same with label noise; (c) training P̂ (log10, the
batch's teacher-forced gold-answer probability); (d) fraction of stalled groups (no positive
weight); (e) final held-out majority@k per method, mean and 95% t-CI over seeds, every seed a
dot; (f) final training pass@1 (against the labels trained on) vs held-out pass@1: memorising
sits at the bottom right, learnt computation on the diagonal.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ._common import out_dir, records, save

NAME = "table1"
COLORS = {
    "GRPO": "#444444", "Dr. GRPO": "#999999", "GARL q=0": "#1b9e77", "GARL q=0.25": "#d95f02",
    "GARL q=0.5": "#7570b3", "GARL q=0.75": "#e7298a", "GARL q=1": "#66a61e",
    "PAFT q=0.75": "#e6ab02", "SFT->RLVR": "#1f78b4", "adaptive q": "#a6761d",
}  # fmt: skip


def _color(method: str) -> str:
    return COLORS.get(method, "black")


def _curves(ax, runs, key, *, step_key="eval_step", log=False):
    by = {}
    for r in runs:
        by.setdefault(r["method"], []).append(r)
    for method, rs in by.items():
        ys = []
        for r in rs:
            y = np.asarray(r["curves"][key], dtype=float)
            x = (np.asarray(r["curves"][step_key]) if step_key else np.arange(y.size))
            ax.plot(x, y, color=_color(method), lw=0.5, alpha=0.5)
            ys.append(y)
        ax.plot(x, np.mean(ys, 0), color=_color(method), lw=1.6, label=method)


def make(quick: bool = False, results_dir=None, fig_root=None):
    recs = records(NAME, quick, results_dir)
    runs = [r for r in recs if r["part"] == "run"]
    summ = [r for r in recs if r["part"] == "summary"]
    base = {r["split"]: r for r in recs if r["part"] == "base"}
    noises = sorted({r["label_noise"] for r in runs})
    fig, grid = plt.subplots(2, 3, figsize=(15.0, 8.4))
    ax_a, ax_b, ax_p, ax_s, ax_bar, ax_mem = grid.ravel()
    for ax, noise in ((ax_a, noises[0]), (ax_b, noises[-1] if len(noises) > 1 else None)):
        if noise is None:
            ax.text(0.5, 0.5, "no label-noise runs in this preset", ha="center",
                    transform=ax.transAxes)  # fmt: skip
            ax.set_axis_off()
            continue
        _curves(ax, [r for r in runs if r["label_noise"] == noise], "heldout_majority_at_k")
        k = runs[0]["k"] if runs else "?"
        ax.set(xlabel="step", ylabel=f"held-out majority@{k}", ylim=(-0.03, 1.03))
        ax.set_title(f"held-out questions, label noise {noise:g}", fontsize=9)
        ax.legend(fontsize=6, loc="upper left")
    clean = [r for r in runs if r["label_noise"] == noises[0]]
    _curves(ax_p, clean, "train_log10_P", step_key=None)
    p0 = base.get("train", {}).get("p0")
    if p0:
        ax_p.axhline(np.log10(p0), color="k", ls=":", lw=0.8, label=f"p0 = {p0:.2g}")
    ax_p.set(xlabel="step", ylabel="training log10 P̂ (batch)")
    ax_p.set_title("training P̂, clean labels", fontsize=9)
    ax_p.legend(fontsize=6, loc="lower right")
    _curves(ax_s, clean, "frac_stalled", step_key=None)
    ax_s.set(xlabel="step", ylabel="fraction of stalled groups", ylim=(-0.03, 1.03))
    ax_s.set_title("groups with no positive weight (verifier: no correct sample)", fontsize=9)
    ax_s.legend(fontsize=6, loc="center right")
    methods = list(dict.fromkeys(r["method"] for r in summ))
    width = 0.8 / max(len(noises), 1)
    rows = []
    for j, noise in enumerate(noises):
        for i, m in enumerate(methods):
            s = next((x for x in summ if x["method"] == m and x["label_noise"] == noise), None)
            if s is None:
                continue
            x = i + (j - (len(noises) - 1) / 2) * width
            lo, hi = s["heldout_majority_at_k_ci"]
            mean = s["heldout_majority_at_k"]
            ax_bar.bar(x, mean, width * 0.9, color=_color(m), alpha=0.45 + 0.4 * j,
                       hatch="//" if j else None)  # fmt: skip
            if lo is not None and np.isfinite(lo):
                ax_bar.errorbar(x, mean, yerr=[[mean - lo], [hi - mean]], color="k", lw=0.8,
                                capsize=2)  # fmt: skip
            ax_bar.plot([x] * len(s["heldout_majority_at_k_seeds"]),
                        s["heldout_majority_at_k_seeds"], "k.", ms=3)  # fmt: skip
            rows.append({k: s.get(k) for k in (
                "method", "estimator", "mode", "q", "label_noise", "n_seeds", "n_escaped",
                "heldout_majority_at_k", "heldout_pass_at_1", "train_pass_at_1",
                "train_pass_at_1_clean", "frac_stalled_mean")})  # fmt: skip
    ax_bar.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=7)
    ax_bar.set(ylabel="final held-out majority@k", ylim=(-0.03, 1.03))
    ax_bar.set_title("final held-out majority@k: mean, 95% t-CI, seeds (hatched: noisy labels)",
                     fontsize=9)  # fmt: skip
    for r in runs:
        ax_mem.plot(r["train_pass_at_1"], r["heldout_pass_at_1"],
                    "o" if r["label_noise"] == 0 else "^", color=_color(r["method"]), ms=5,
                    mfc="none" if r["label_noise"] else _color(r["method"]))  # fmt: skip
    ax_mem.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax_mem.set(xlabel="final training pass@1 (labels trained on)",
               ylabel="final held-out pass@1", xlim=(-0.03, 1.03), ylim=(-0.03, 1.03))
    ax_mem.set_title("memorising (bottom right) vs computing (diagonal); ^ noisy labels",
                     fontsize=9)  # fmt: skip
    return save(fig, NAME, out_dir(NAME, quick, fig_root), rows)
