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
import sys
import time

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


def summary_lines(exp_name: str, description: str, recs: list[dict]) -> list[str]:
    """The text summary of one experiment: a header naming it, then one row per fitted series,
    with the fields that tell rows apart, and the reason for every slope that is nan."""
    recs = [r for r in recs if "slope" in r]
    if not recs:
        return []
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
    lines = [f"== {exp_name}: {description}", f"   {head}  slope [95% CI]  theory  censored"]
    for row in cells:
        lead = "  ".join(v.ljust(w) for v, w in zip(row[: len(cols)], width, strict=True))
        lines.append("   " + lead + "  " + "  ".join(row[len(cols):]))
    return lines


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
        out = check_out_dir(args.out, create_parents=False)
    except ValueError as err:
        print(f"python -m sims run: error: {err}", file=sys.stderr)
        return 2
    records = []
    for exp in exps:
        t0 = time.perf_counter()
        table = run_experiment(
            exp,
            quick=args.quick,
            out=out,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
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
