"""Figure: Table 1 in miniature (experiment ``table1``).

Panels, per method (colour) and seed (thin lines; thick: mean over seeds): top, held-out
majority@k over steps for each (task, label noise) of the preset, and final training pass@1
(against the labels trained on) vs held-out pass@1 (memorising sits at the bottom right, learnt
computation on the diagonal); bottom, training P̂ (log10, the batch's teacher-forced
gold-answer probability) per task, the fraction of stalled groups (no positive weight) on the
first task, and the final held-out majority@k per method (mean, 95% t-CI over seeds, every
seed a dot).
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


def _combos(runs):
    return list(dict.fromkeys((r["task"], r["label_noise"]) for r in runs))


def make(quick: bool = False, results_dir=None, fig_root=None):
    recs = records(NAME, quick, results_dir)
    runs = [r for r in recs if r["part"] == "run"]
    summ = [r for r in recs if r["part"] == "summary"]
    base = {(r["task"], r["split"]): r for r in recs if r["part"] == "base"}
    combos = _combos(runs)
    tasks = list(dict.fromkeys(t for t, _ in combos))
    fig, grid = plt.subplots(2, 4, figsize=(20.0, 8.6))
    k = runs[0]["k"] if runs else "?"
    for j, ax in enumerate(grid[0, :3]):
        if j >= len(combos):
            ax.text(0.5, 0.5, "not in this preset", ha="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        task, noise = combos[j]
        _curves(ax, [r for r in runs if (r["task"], r["label_noise"]) == combos[j]],
                "heldout_majority_at_k")  # fmt: skip
        ax.set(xlabel="step", ylabel=f"held-out majority@{k}", ylim=(-0.03, 1.03))
        ax.set_title(f"task {task!r}, label noise {noise:g}: held-out questions", fontsize=9)
        ax.legend(fontsize=6, loc="upper left")
    ax_mem = grid[0, 3]
    for r in runs:
        ax_mem.plot(r["train_pass_at_1"], r["heldout_pass_at_1"],
                    "o" if r["task"] == tasks[0] else "s", color=_color(r["method"]), ms=5,
                    mfc="none" if r["label_noise"] else _color(r["method"]))  # fmt: skip
    ax_mem.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax_mem.set(xlabel="final training pass@1 (labels trained on)",
               ylabel="final held-out pass@1", xlim=(-0.03, 1.03), ylim=(-0.03, 1.03))
    ax_mem.set_title(f"memorising (bottom right) vs computing (diagonal)\no {tasks[0]!r}"
                     + (f", s {tasks[1]!r}" if len(tasks) > 1 else "") + "; hollow: noisy labels",
                     fontsize=9)  # fmt: skip
    for j, ax in enumerate(grid[1, :2]):
        if j >= len(tasks):
            ax.set_axis_off()
            continue
        clean = [r for r in runs if r["task"] == tasks[j] and r["label_noise"] == 0]
        _curves(ax, clean, "train_log10_P", step_key=None)
        p0 = base.get((tasks[j], "train"), {}).get("p0")
        if p0:
            ax.axhline(np.log10(p0), color="k", ls=":", lw=0.8, label=f"p0 = {p0:.2g}")
        ax.set(xlabel="step", ylabel="training log10 P̂ (batch)")
        ax.set_title(f"task {tasks[j]!r}: training P̂, clean labels", fontsize=9)
        ax.legend(fontsize=6, loc="lower right")
    ax_s = grid[1, 2]
    _curves(ax_s, [r for r in runs if r["task"] == tasks[0] and r["label_noise"] == 0],
            "frac_stalled", step_key=None)  # fmt: skip
    ax_s.set(xlabel="step", ylabel="fraction of stalled groups", ylim=(-0.03, 1.03))
    ax_s.set_title(f"task {tasks[0]!r}: groups with no positive weight", fontsize=9)
    ax_s.legend(fontsize=6, loc="center right")
    ax_bar = grid[1, 3]
    methods = list(dict.fromkeys(r["method"] for r in summ))
    width = 0.8 / max(len(combos), 1)
    rows = []
    for j, combo in enumerate(combos):
        for i, m in enumerate(methods):
            s = next((x for x in summ if x["method"] == m
                      and (x["task"], x["label_noise"]) == combo), None)  # fmt: skip
            if s is None:
                continue
            x = i + (j - (len(combos) - 1) / 2) * width
            lo, hi = s["heldout_majority_at_k_ci"]
            mean = s["heldout_majority_at_k"]
            ax_bar.bar(x, mean, width * 0.9, color=_color(m), alpha=0.35 + 0.3 * j,
                       hatch=("", "..", "//")[j % 3])  # fmt: skip
            if lo is not None and np.isfinite(lo):
                ax_bar.errorbar(x, mean, yerr=[[max(mean - lo, 0)], [max(hi - mean, 0)]],
                                color="k", lw=0.8, capsize=2)  # fmt: skip
            ax_bar.plot([x] * len(s["heldout_majority_at_k_seeds"]),
                        s["heldout_majority_at_k_seeds"], "k.", ms=3)  # fmt: skip
            rows.append({"kind": "summary", **{c: s.get(c) for c in (
                "task", "method", "estimator", "mode", "q", "label_noise", "n_seeds",
                "n_escaped", "heldout_majority_at_k", "heldout_pass_at_1", "train_pass_at_1",
                "train_pass_at_1_clean", "frac_stalled_mean")}})  # fmt: skip
    ax_bar.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=7)
    ax_bar.set(ylabel=f"final held-out majority@{k}", ylim=(-0.03, 1.03))
    ax_bar.set_title("final held-out majority@k: mean, 95% t-CI, seeds\nbars left to right: "
                     + ", ".join(f"{t}/noise {n:g}" for t, n in combos), fontsize=8)  # fmt: skip
    for r in runs:  # every seed, not only the summaries
        rows.append({"kind": "seed", **{c: r.get(c) for c in (
            "task", "method", "estimator", "mode", "q", "label_noise", "seed", "escape_step",
            "heldout_majority_at_k", "heldout_pass_at_1", "train_pass_at_1",
            "train_pass_at_1_clean", "frac_stalled_mean")}})  # fmt: skip
    return save(fig, NAME, out_dir(NAME, quick, fig_root), rows)
