r"""Analysis as pure functions of a results table (escape times, censoring, slopes).

A results table is a list of rows (dicts): a setting's parameters plus its result arrays, as
returned by :func:`sims.runner.load_table`.  Nothing here reads files or draws random numbers
except through an explicit seed, so the same table always gives the same numbers.

Censoring: a run that never escaped is kept with time = its budget and a
flag.  A point's summary is the median over seeds, which is exact as long as fewer than half the
runs are censored; a point whose median is censored is reported (``median_censored=True``) and
left out of slope fits, never averaged as if it had finished.

>>> s = escape_summary([3.0, 5.0, 100.0], [False, False, True])
>>> s["median"], s["n_censored"], s["median_censored"]
(5.0, 1, False)
>>> fit = fit_slope([1e-2, 1e-3, 1e-4], [[100.0], [1000.0], [10000.0]])
>>> round(fit["slope"], 6), [round(v, 6) for v in fit["slope_ci"]]
(1.0, [1.0, 1.0])
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["escape_summary", "fit_slope", "rows_where", "group_rows"]


def escape_summary(times, censored) -> dict:
    """Median escape time over seeds with censoring kept (runs never dropped).

    Returns ``median`` (censored runs count at their budget, so the median is a lower bound when
    ``median_censored``), ``mean`` (same convention, a lower bound whenever n_censored > 0),
    ``std`` (of the same values), ``n`` (all runs, censored included), ``n_censored``,
    ``median_censored``.
    """
    times = np.asarray(times, dtype=np.float64).ravel()
    censored = np.asarray(censored, dtype=bool).ravel()
    if times.shape != censored.shape or times.size == 0:
        raise ValueError(
            f"times and censored must be equal-length and non-empty, got "
            f"{times.shape} and {censored.shape}"
        )
    n_cens = int(censored.sum())
    order = np.sort(times)
    med = float(np.median(times))
    # the median is censored when the middle order statistic(s) could be a censored run
    k = times.size
    uncens_sorted = np.sort(times[~censored])
    n_unc = uncens_sorted.size
    med_censored = n_unc < (k // 2 + 1)
    return {
        "median": med,
        "mean": float(order.mean()),
        "std": float(order.std(ddof=1)) if k > 1 else 0.0,
        "n": int(k),
        "n_censored": n_cens,
        "median_censored": bool(med_censored),
    }


def fit_slope(
    p0,
    samples,
    censored=None,
    *,
    kind: str = "power",
    n_boot: int = 400,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    r"""Fit the escape-time law over p0 and give a confidence interval.

    ``kind="power"``: slope of log T against log(1/p0) (the exponent 1-q of Section 5);
    ``kind="log"``: slope of T against log(1/p0) (the q = 1 law T = Θ(log 1/p0)).
    T at each p0 is the median over that point's samples (censoring as in
    :func:`escape_summary`; points with a censored median are excluded and counted).

    CI: with one sample per point (deterministic flow / GD) the OLS t-interval (a zero-width
    interval when the points are exactly collinear or there are only two); with several seeds
    a percentile bootstrap that resamples seeds within each point (seeded: a pure function).

    Returns slope, intercept, slope_ci [lo, hi], n_points, n_excluded, n_censored, and ``note``
    (None, or why the slope is nan: fewer than 2 points whose median escaped).
    """
    if kind not in ("power", "log"):
        raise ValueError(f"kind must be 'power' or 'log', got {kind!r}")
    p0 = np.asarray(p0, dtype=np.float64)
    samples = [np.asarray(s, dtype=np.float64).ravel() for s in samples]
    if censored is None:
        censored = [np.zeros(s.shape, dtype=bool) for s in samples]
    censored = [np.asarray(c, dtype=bool).ravel() for c in censored]
    if not (len(p0) == len(samples) == len(censored)):
        raise ValueError("p0, samples and censored must have one entry per point")
    summaries = [escape_summary(s, c) for s, c in zip(samples, censored, strict=False)]
    keep = np.array([not s["median_censored"] for s in summaries], dtype=bool)
    n_cens = int(sum(s["n_censored"] for s in summaries))
    x_all = np.log(1.0 / p0)
    if keep.sum() < 2:
        n_ex = int((~keep).sum())
        note = f"too few points to fit ({int(keep.sum())} usable, 2 needed"
        if n_ex:
            note += f"; {n_ex} left out: their median run never escaped within the budget"
        return {
            "slope": math.nan,
            "intercept": math.nan,
            "slope_ci": [math.nan, math.nan],
            "n_points": int(keep.sum()),
            "n_excluded": n_ex,
            "n_censored": n_cens,
            "note": note + ")",
        }
    x = x_all[keep]

    def transform(med):
        med = np.asarray(med, dtype=np.float64)
        return np.log(med) if kind == "power" else med

    y = transform([s["median"] for s, k in zip(summaries, keep, strict=False) if k])
    slope, intercept = np.polyfit(x, y, 1)
    kept_samples = [s for s, k in zip(samples, keep, strict=False) if k]
    if all(s.size == 1 for s in kept_samples):
        n = x.size
        if n > 2:
            resid = y - (slope * x + intercept)
            se = math.sqrt(float(resid @ resid) / (n - 2) / float(((x - x.mean()) ** 2).sum()))
            half = float(stats.t.ppf(0.5 + level / 2, n - 2)) * se
        else:
            half = 0.0
        ci = [float(slope - half), float(slope + half)]
    else:
        rng = np.random.default_rng(seed)
        boots = np.empty(n_boot)
        for b in range(n_boot):
            meds = [np.median(s[rng.integers(0, s.size, s.size)]) for s in kept_samples]
            boots[b] = np.polyfit(x, transform(meds), 1)[0]
        lo, hi = np.quantile(boots, [0.5 - level / 2, 0.5 + level / 2])
        ci = [float(min(lo, slope)), float(max(hi, slope))]
    return {
        "slope": float(slope),
        "intercept": float(intercept),
        "slope_ci": ci,
        "n_points": int(keep.sum()),
        "n_excluded": int((~keep).sum()),
        "n_censored": n_cens,
        "note": None,
    }


def rows_where(table, **conditions) -> list[dict]:
    """Rows of ``table`` whose fields equal every given value."""
    return [r for r in table if all(r.get(k) == v for k, v in conditions.items())]


def group_rows(table, keys) -> dict[tuple, list[dict]]:
    """Group rows by the tuple of the given fields, in first-seen order."""
    out: dict[tuple, list[dict]] = {}
    for r in table:
        out.setdefault(tuple(_hashable(r.get(k)) for k in keys), []).append(r)
    return out


def _hashable(v):
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    return v
