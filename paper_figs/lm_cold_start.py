"""Figure: cold start in a tiny causal transformer (experiment ``lm_cold_start``).

Panels: (a) SGD, likelihood mode: median escape steps against p0 per q, dashed the flow slope
1 - q; (b) the same in verifier mode; (c) Adam: which q escape at each p0, against the dashed
threshold q* = 1 - log(ε/s)/log p0 (s measured); (d) Adam escape steps of GARL, GRPO, PAFT and
the SFT→RLVR schedule; (e) P̂ per step from the smallest p0, median and every seed, collapsed
seeds marked; (f) the max amplified
advantage (the paper's Fig. 3 monitor) on the same runs.  One style per estimator; panels
(d)-(f) show at most six methods (every setting is in the CSV).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from ._common import out_dir, q_color, records, save

NAME = "lm_cold_start"
#: one style per estimator (GARL-RLOO's colour is its q, as in every figure of the package)
STYLES = {
    "garl_rloo": {"ls": "-", "marker": "o"},
    "paft": {"ls": "--", "marker": "s", "color": "black", "mfc": "none"},
    "grpo": {"ls": ":", "marker": "^", "color": "#777777"},
    "schedule": {"ls": "-.", "marker": "D", "color": "#1f78b4"},
}
#: the methods compared in panels (d)-(f), at most six; GARL-RLOO at q = 0.25 and 0.5 is in (c)
#: and every setting is in the CSV
COMPARED = ("garl_rloo q=0", "garl_rloo q=0.75", "garl_rloo q=1", "paft q=0.75", "grpo")


def _series(recs, **cond):
    out: dict = {}
    for r in recs:
        if all(r.get(k) == v for k, v in cond.items()):
            out.setdefault(r["label"], []).append(r)
    return {k: sorted(v, key=lambda r: -r["p0"]) for k, v in out.items()}


def _shown(r) -> bool:
    return bool(r.get("schedule")) or r["label"] in COMPARED


def _style(r) -> dict:
    """Line style, marker and colour of a record's estimator (and q for GARL-RLOO)."""
    kind = "schedule" if r.get("schedule") else r["estimator"]
    style = dict(STYLES.get(kind, {"ls": "-", "marker": "o", "color": "black"}))
    style.setdefault("color", q_color(r["q"]) if r["q"] is not None else "black")
    return style


def _pretty(r) -> str:
    if r.get("schedule"):
        return "SFT→RLVR (q = 1, then 0)"
    name = {"garl_rloo": "GARL-RLOO", "paft": "PAFT", "grpo": "GRPO"}.get(
        r["estimator"], r["estimator"]
    )
    return name if r["estimator"] == "grpo" or r["q"] is None else f"{name} q={r['q']:g}"


def _escape_panel(ax, series, title, *, flow=False, legend_loc="upper left"):
    for pts in series.values():
        p0 = np.array([p["p0"] for p in pts])
        med = np.array([p["median_steps"] for p in pts], dtype=float)
        cens = np.array([p["median_censored"] for p in pts])
        st = _style(pts[0])
        c = st["color"]
        slope = pts[0].get("slope")
        lab = _pretty(pts[0])
        if slope is not None and np.isfinite(slope):
            lab += f": slope {slope:.2f}"
        ax.plot(p0, med, ls=st["ls"], marker=st["marker"], color=c, mfc=st.get("mfc", c),
                ms=4, lw=1.0, label=lab)  # fmt: skip
        if cens.any():
            ax.plot(p0[cens], med[cens], "x", color=c, ms=9, mew=1.5)
        if flow and not cens[0]:
            q = pts[0]["q"]
            x = np.array([p0.max(), p0.min()])
            ax.plot(x, med[0] * (x / x[0]) ** (-(1.0 - q)), ":", color=c, lw=1.2, dashes=(3, 2))
    ax.set(xscale="log", yscale="log", xlabel="p0 (measured)", ylabel="median escape steps")
    ax.invert_xaxis()
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6.5, loc=legend_loc)


def make(quick: bool = False, results_dir=None, fig_root=None):
    recs = records(NAME, quick, results_dir)
    points = [r for r in recs if r["part"] != "curve"]
    curves = [r for r in recs if r["part"] == "curve"]
    fig, grid = plt.subplots(2, 3, figsize=(15.0, 8.4))
    ax_sgd, ax_ver, ax_thr, ax_base, ax_p, ax_mon = grid.ravel()
    _escape_panel(
        ax_sgd, _series(points, part="sgd"), "SGD, likelihood, GARL-RLOO, matched lr\n"
        "dashed: flow slope 1-q through the first point; × = censored median", flow=True,
    )  # fmt: skip
    _escape_panel(
        ax_ver, _series(points, part="verifier"), "SGD, verifier (exact match, 0/1), "
        "GARL-RLOO\ndashed: flow slope 1-q; × = censored median", flow=True,
    )  # fmt: skip
    # (c) threshold: q against p0, escaped (filled) / stalled (×); dashed q*(p0)
    adam = [p for p in points if p["part"] == "adam"]
    eps_all = sorted({p["adam_eps"] for p in adam})
    eps0 = 1e-8 if 1e-8 in eps_all else (eps_all[0] if eps_all else 1e-8)
    garl = [
        p for p in adam
        if p["estimator"] == "garl_rloo" and p["schedule"] is None and p["adam_eps"] == eps0
    ]  # fmt: skip
    for p in garl:
        ok = p["escaped"]
        ax_thr.plot(
            p["p0"], p["q"], "o" if ok else "x", color=q_color(p["q"]), ms=7 if ok else 8,
            mfc=q_color(p["q"]) if ok else "none", mew=1.5,
        )  # fmt: skip
    for eps in eps_all:
        ss = [p for p in adam if p["adam_eps"] == eps and p.get("s_hat")]
        if not ss:
            continue
        s = float(np.median([p["s_hat"] for p in ss]))
        lo = min(p["p0"] for p in ss)
        x = np.logspace(math.log10(lo) - 1, -2, 100)
        qs = 1 - np.log(eps / s) / np.log(x)
        ax_thr.plot(x, qs, "--", color="k", lw=1.0 if eps == eps0 else 0.6,
                    label=f"q* = 1 - log(ε/s)/log p0, ε={eps:g}, s={s:.2g}")  # fmt: skip
    ax_thr.set(xscale="log", xlabel="p0 (measured)", ylabel="q", ylim=(-0.08, 1.08))
    ax_thr.invert_xaxis()
    ax_thr.set_title(
        f"Adam (lr, ε={eps0:g}), likelihood, GARL-RLOO: ● escaped (median), × stalled\n"
        "prediction: escape iff q > q* (dashed)", fontsize=8,
    )  # fmt: skip
    ax_thr.legend(fontsize=6, loc="lower left")
    base = [p for p in adam if p["adam_eps"] == eps0 and _shown(p)]
    _escape_panel(
        ax_base, _series(base), f"Adam ε={eps0:g}, likelihood: the methods compared\n"
        "(GARL-RLOO q = 0.25, 0.5: panel c); × = censored median (stalled at the budget)",
        legend_loc="center right",
    )  # fmt: skip
    # (e, f) curves at the smallest p0
    for r in curves:
        if r["adam_eps"] != eps0 or not _shown(r):
            continue
        st = _style(r)
        c, ls = st["color"], st["ls"]
        steps = np.array(r["curve"]["step"])
        lp = np.array(r["curve"]["log10_P"], dtype=float)
        mon = np.array([np.nan if v is None else v for v in r["curve"]["monitor"]], dtype=float)
        # every seed as a thin line, so that a collapse after the escape is not hidden by the
        # median; ▼ marks a collapsed seed's lowest post-escape P̂
        seeds = np.array(
            [[np.nan if v is None else v for v in row] for row in r["curve"]["log10_P_seeds"]],
            dtype=float,
        )  # fmt: skip
        for row, hit, t in zip(seeds, r["collapsed"], r["escape_steps"], strict=True):
            ax_p.plot(steps, row, ls="-", color=c, lw=0.4, alpha=0.45)
            if hit:
                j = t + 1 + int(np.nanargmin(row[t + 1 :]))
                ax_p.plot(steps[j], row[j], "v", color=c, ms=5)
        lab = f"{_pretty(r)} ({r['n_collapsed']}/{r['n_runs']} collapsed)"
        ax_p.plot(steps, lp, ls=ls, color=c, lw=1.6, label=lab)
        ax_mon.plot(steps, mon, ls=ls, color=c, lw=1.0, label=_pretty(r))
    p0c = curves[0]["p0"] if curves else math.nan
    ax_p.set(xlabel="step", ylabel="log10 P̂ (thick: median; thin: each seed)")
    ax_p.set_title(
        f"Adam ε={eps0:g}: P̂ per step from p0 ≈ {p0c:.1g}; ▼ collapsed seed's low\n"
        "(collapsed: after the escape below its p0 or > 10 decades below its peak so far)",
        fontsize=8,
    )  # fmt: skip
    ax_p.legend(fontsize=6.5, loc="center right")
    ax_mon.set(xlabel="step", ylabel="max amplified advantage (median over seeds)")
    ax_mon.set_title("the paper's Fig. 3 monitor, same runs and styles as (e)", fontsize=8)
    from matplotlib.ticker import LogLocator

    for ax in (ax_sgd, ax_ver, ax_thr, ax_base):
        ax.xaxis.set_major_locator(LogLocator(base=10, numticks=6))
    rows = []
    for p in points:
        rows.append(
            {k: p.get(k) for k in (
                "part", "mode", "estimator", "optimizer", "adam_eps", "lr", "q", "label", "p0",
                "p0_target", "M", "median_steps", "median_censored", "n_runs", "n_censored",
                "n_diverged", "n_collapsed", "slope", "flow_slope", "s_hat", "q_star",
                "predicted_escape", "escaped",
            )}
        )  # fmt: skip
    return save(fig, NAME, out_dir(NAME, quick, fig_root), rows)
