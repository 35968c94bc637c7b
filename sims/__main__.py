"""Command line: ``python -m sims list`` and ``python -m sims run <experiment> [options]``.

    python -m sims list
    python -m sims run escape_time --quick
    python -m sims run all --out /tmp/res --json > summary.json

Results go to ``results/`` (or ``--out``), one atomic file per setting; finished settings are
reused (an interrupted sweep resumes), and ``--overwrite`` recomputes and replaces them.
The text summary names each experiment and prints one row per fitted series with the fields
that tell the rows apart; a ``nan`` slope is followed by its reason (e.g. too few escaped
points to fit).  ``--json`` prints one record per fitted series on stdout (progress and notes
go to stderr).  ``--out`` is checked before any work: a file, a folder under a file, a missing
parent folder or an unwritable folder exits with status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from .experiments import all_experiments, get_experiment
from .runner import DEFAULT_RESULTS, check_out_dir, run_experiment


def _clean(obj):
    """JSON-safe: NaN/inf -> None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


_BASE = ("regime", "model", "estimator", "q", "M")
# fields that tell records apart, in the order they are tried (outputs never are)
_DISTINGUISHING = (
    "part",
    "range",
    "record",
    "mode",
    "eps",
    "P",
    "p0",
    "eta",
    "lr",
    "paper_normalization",
    "optimizer",
    "adam_eps",
    "score_scale",
    "kind",
)
_OUTPUTS = {"slope", "slope_ci", "theory_slope", "n_censored", "n_points", "slope_note"}


def _fmt_value(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        if v and all(isinstance(x, (int, float)) for x in v):
            return f"{_fmt_value(v[0])}..{_fmt_value(v[-1])}" if len(v) > 2 else "/".join(
                _fmt_value(x) for x in v
            )
        return str(v)
    return str(v)


def _is_scalar(v) -> bool:
    return v is None or isinstance(v, (str, bool, int, float))


def _columns(recs: list[dict]) -> list[str]:
    """The base columns plus the fewest extra fields that make every row distinct."""
    cols = list(_BASE)

    def key(r, cs):
        return tuple(_fmt_value(r.get(c)) for c in cs)

    def clashes(cs):
        return len({key(r, cs) for r in recs}) < len(recs)

    extra = [
        k
        for k in _DISTINGUISHING
        if any(k in r for r in recs) and len({_fmt_value(r.get(k)) for r in recs}) > 1
    ]
    for k in extra:
        if not clashes(cols):
            break
        groups: dict = {}
        for r in recs:
            groups.setdefault(key(r, cols), set()).add(_fmt_value(r.get(k)))
        if any(len(v) > 1 for v in groups.values()):
            cols.append(k)
    if clashes(cols):  # fall back on any other scalar field that varies
        for k in sorted({k for r in recs for k, v in r.items() if _is_scalar(v)} - _OUTPUTS):
            if k in cols or k == "experiment":
                continue
            if len({_fmt_value(r.get(k)) for r in recs}) > 1:
                cols.append(k)
                if not clashes(cols):
                    break
    return cols


def _nan_reason(rec: dict) -> str:
    note = rec.get("slope_note")
    if note:
        return note
    n, c = rec.get("n_points"), rec.get("n_censored")
    if n is not None and n < 2:
        return f"too few points to fit ({n} usable, 2 needed)"
    if c:
        return f"too few escaped points to fit ({c} runs censored)"
    return "too few points to fit"


#: fields of one measured point of a series (lm_cold_start repeats its series' slope on each)
_POINT_FIELDS = {
    "p0",
    "p0_actual",
    "p0_target",
    "median_steps",
    "median_censored",
    "n_runs",
    "n_censored",
    "n_diverged",
    "steps",
    "grad_scale_step0",
    "s_hat",
    "q_star",
    "predicted_escape",
    "escaped",
}


def _series_key(rec: dict) -> tuple:
    """Every field but a point's own, exactly (repr, not the 4 digits shown), and the slope."""
    return tuple(
        (k, repr(v)) for k, v in sorted(rec.items()) if k not in _POINT_FIELDS | _OUTPUTS
    ) + (("slope", repr(rec.get("slope"))),)


def _one_per_series(recs: list[dict]) -> list[dict]:
    """One record per fitted series: records that differ only in their point's fields and carry
    the same slope are points of one series; the first stands for it, with its censored count
    summed over the points."""
    first: dict = {}
    for r in recs:
        k = _series_key(r)
        if k not in first:
            first[k] = dict(r)
            if "p0" in r and isinstance(r["p0"], (int, float)):
                first[k]["p0"] = [r["p0"]]
        else:
            kept = first[k]
            if isinstance(kept.get("p0"), list):
                kept["p0"].append(r["p0"])
            if isinstance(r.get("n_censored"), int):
                kept["n_censored"] = (kept.get("n_censored") or 0) + r["n_censored"]
    return list(first.values())


def _steps(rec: dict) -> str:
    steps = rec.get("median_steps")
    if steps is None:
        return "-"
    return f"≥{steps:g}" if rec.get("median_censored") else f"{steps:g}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    width = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = lambda cells: "   " + "  ".join(c.ljust(w) for c, w in zip(cells, width, strict=True))
    return [fmt(head).rstrip(), *(fmt(r).rstrip() for r in rows)]


def threshold_lines(recs: list[dict]) -> list[str]:
    """adam_threshold's q* records: per (part, model, budget, ε, p0) the measured cell
    (q_below, q*], the predicted q* (✗ when off the cell), the one- and two-phase budget-aware
    q* (-: no q can escape) and the fastest q."""
    n_escape = sum(1 for r in recs if r.get("record") == "escape")
    recs = [r for r in recs if r.get("record") == "q_star"]
    if not recs:
        return []
    q = lambda v: "-" if v is None else f"{v:g}"
    rows = []
    for r in recs:
        cell = (
            f"≤ {q(r['q_star_measured'])}"
            if r.get("q_below") is None
            else f"({q(r['q_below'])}, {q(r['q_star_measured'])}]"
        )
        if r.get("q_star_measured") is None:
            cell = "none escapes"
        if r.get("stalled_above"):
            cell += " stalls " + ",".join(q(v) for v in r["stalled_above"])
        off = "" if r.get("prediction_in_cell") or (r.get("prediction_gap") or 0) <= 0.01 else " ✗"
        two = r.get("q_star_two_phase")
        rows.append(
            [
                str(r.get("part", "-")),
                str(r.get("model")),
                str(r.get("budget", "-")),
                f"{r.get('adam_eps'):g}",
                f"{r.get('p0'):g}",
                cell,
                f"{r['q_star_predicted']:.2f}{off}",
                f"{r['q_star_budget']:.2f}" + ("" if r.get("budget_in_cell") else " ✗"),
                ("-" if two is None else f"{two:.2f}")
                + ("" if r.get("two_phase_in_cell", True) else " ✗"),
                q(r.get("fastest_q")),
            ]
        )
    head = ["part", "model", "budget", "eps", "p0", "measured q*", "predicted", "one-phase",
            "two-phase", "fastest q"]  # fmt: skip
    lines = ["   threshold q* per (part, budget, ε, p0); ✗: the prediction lies off the measured"
             " cell; two-phase -: no q can escape within the budget; stalls: grid q above the"
             " measured q* that do not escape"]  # fmt: skip
    lines += _table(head, rows)
    if n_escape:
        lines.append(f"   (--json also prints the {n_escape} escape records)")
    return lines


def escape_table_lines(recs: list[dict]) -> list[str]:
    """Point records without a slope (lm_cold_start's Adam part): median escape steps per
    series and p0 (≥: the median run was censored at the budget)."""
    # curve records (no p0_target) are training curves, drawn by the figure, not tabulated
    recs = [r for r in recs if "slope" not in r and "median_steps" in r and "p0_target" in r]
    if not recs:
        return []
    eps = sorted({r.get("adam_eps") for r in recs if r.get("adam_eps") is not None})
    p0s = sorted({r["p0_target"] for r in recs}, reverse=True)
    cells: dict = {}
    for r in recs:
        name = r["label"] + (f", ε={r['adam_eps']:g}" if len(eps) > 1 else "")
        cells.setdefault(name, {})[r["p0_target"]] = _steps(r)
    head = ["median escape steps", *(f"p0={p:g}" for p in p0s)]
    rows = [[name, *(by.get(p, "-") for p in p0s)] for name, by in cells.items()]
    eps_note = f" (Adam ε={eps[0]:g})" if len(eps) == 1 else ""
    return [f"   escape steps without a fitted slope{eps_note}; ≥: censored at the budget"] + (
        _table(head, rows)
    )


def summary_lines(exp_name: str, description: str, recs: list[dict]) -> list[str]:
    """The text summary of one experiment: a header naming it, then one row per fitted series,
    with the fields that tell rows apart, and the reason for every slope that is nan; then the
    tables of records without a slope (threshold cells, escape steps).  Every line once."""
    extra = threshold_lines(recs) + escape_table_lines(recs)
    recs = _one_per_series([r for r in recs if "slope" in r])
    header = [f"== {exp_name}: {description}"]
    if not recs:
        return header + extra if extra else []
    cols = _columns(recs)
    fmt = lambda v: "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"
    cells = []
    for r in recs:
        ci = r.get("slope_ci") or [None, None]
        row = [f"{c}={_fmt_value(r.get(c))}" if c in ("q", "M") else _fmt_value(r.get(c))
               for c in cols]
        slope = r.get("slope")
        row.append(f"slope={fmt(slope)} [{fmt(ci[0])}, {fmt(ci[1])}]")
        th = r.get("theory_slope")
        row.append(f"theory={'-' if th is None else fmt(th)}")
        row.append(f"censored={r.get('n_censored')}")
        if slope is None or (isinstance(slope, float) and math.isnan(slope)):
            row.append(f"(nan: {_nan_reason(r)})")
        cells.append(row)
    width = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    head = "  ".join(c.ljust(w) for c, w in zip(cols, width, strict=True))
    lines = [*header, f"   {head}  slope [95% CI]  theory  censored"]
    for row in cells:
        lead = "  ".join(v.ljust(w) for v, w in zip(row[: len(cols)], width, strict=True))
        lines.append("   " + lead + "  " + "  ".join(row[len(cols):]))
    return lines + extra


def _os_error(err: OSError) -> str:
    where = f": {err.filename}" if getattr(err, "filename", None) else ""
    return f"{err.strerror or err}{where}"


def prepare_out(text, flag: str) -> Path:
    """``check_out_dir``'s checks, then the folder created: a path the checks pass but the system
    refuses (``/proc/x``, ``/sys/x``, a read-only mount) is a one-line ValueError here, before
    any work, not a traceback later."""
    out = check_out_dir(text, create_parents=False, flag=flag)
    try:
        out.mkdir(exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ValueError(f"{flag} {str(text)!r}: cannot write there: {_os_error(err)}") from None
    return out


def interrupted_message(prog: str, folder: Path) -> str:
    """The one line printed on Ctrl-C: what was kept and how to resume (every finished setting
    is one complete file; the batch in flight is lost)."""
    done = len(list(folder.glob("*.npz"))) if folder.is_dir() else 0
    return (
        f"{prog}: interrupted; {done} finished settings are kept in {folder}; "
        "run the same command again to resume"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sims", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the experiments")
    run = sub.add_parser("run", help="run an experiment's sweep (or 'all') and summarise it")
    run.add_argument("experiment", help="experiment name, or 'all'")
    run.add_argument("--quick", action="store_true", help="the small CI preset")
    run.add_argument(
        "--out", default=str(DEFAULT_RESULTS), help="results folder (default results/)"
    )
    run.add_argument(
        "--overwrite", action="store_true", help="recompute and replace cached results"
    )
    run.add_argument("--json", action="store_true", help="print the fitted-series records as JSON")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    if args.cmd == "list":
        for name, exp in all_experiments().items():
            n_q, n_f = len(exp.settings(True)), len(exp.settings(False))
            print(f"{name:<18} {n_q:>4} quick / {n_f:>4} full settings  {exp.description}")
        return 0

    names = list(all_experiments()) if args.experiment == "all" else [args.experiment]
    try:
        exps = [get_experiment(n) for n in names]
    except ValueError as err:
        parser.error(str(err))
    try:
        out = prepare_out(args.out, "--out")
    except ValueError as err:
        print(f"python -m sims run: error: {err}", file=sys.stderr)
        return 2
    records = []
    for i, exp in enumerate(exps, 1):
        t0 = time.perf_counter()
        if len(exps) > 1:  # each sweep has its own bar; this line says where 'all' stands
            print(f"[sims] [{i}/{len(exps)}] {exp.name} ...", file=sys.stderr, flush=True)
        try:
            table = run_experiment(
                exp,
                quick=args.quick,
                out=out,
                overwrite=args.overwrite,
                progress=not args.no_progress,
            )
        except KeyboardInterrupt:
            print(f"\n{interrupted_message('python -m sims run', out / exp.name)}", file=sys.stderr)
            return 130
        except OSError as err:
            print(f"python -m sims run: error: {exp.name}: {_os_error(err)}", file=sys.stderr)
            return 1
        recs = exp.analyze(table)
        records += recs
        print(
            f"[sims] {exp.name}: {len(table)} settings, {len(recs)} series, "
            f"{time.perf_counter() - t0:.1f} s, results in {(out / exp.name).resolve()}",
            file=sys.stderr,
        )
        if not args.json:
            for line in summary_lines(exp.name, exp.description, recs):
                print(line)
    if args.json:
        json.dump(_clean(records), sys.stdout, indent=1)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
