"""Command line: ``python -m sims list`` and ``python -m sims run <experiment> [options]``.

    python -m sims list
    python -m sims run escape_time --quick
    python -m sims run all --out /tmp/res --json > summary.json

Results go to ``results/`` (or ``--out``), one file pair per setting; finished settings are
reused (an interrupted sweep resumes), and ``--overwrite`` recomputes and replaces them.
``--json`` prints one record per fitted series on stdout (progress and notes go to stderr).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from .experiments import all_experiments, get_experiment
from .runner import DEFAULT_RESULTS, run_experiment


def _clean(obj):
    """JSON-safe: NaN/inf -> None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _summary_line(rec: dict) -> str:
    ci = rec.get("slope_ci") or [None, None]
    fmt = lambda v: "  nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"
    parts = [
        f"{rec['regime']:<18}",
        f"{rec['model']:<16}",
        f"{rec.get('estimator') or '-':<10}",
        f"q={rec['q'] if rec['q'] is not None else '-'!s:<5}",
        f"M={rec['M'] if rec.get('M') is not None else '-'!s:<5}",
        f"slope={fmt(rec.get('slope'))} [{fmt(ci[0])}, {fmt(ci[1])}]",
        f"theory={fmt(rec.get('theory_slope'))}",
        f"censored={rec.get('n_censored')}",
    ]
    return "  ".join(parts)


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
    records = []
    for exp in exps:
        t0 = time.perf_counter()
        table = run_experiment(
            exp,
            quick=args.quick,
            out=args.out,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
        recs = exp.analyze(table)
        records += recs
        print(
            f"[sims] {exp.name}: {len(table)} settings, {len(recs)} series, "
            f"{time.perf_counter() - t0:.1f} s, results in {args.out}/{exp.name}",
            file=sys.stderr,
        )
        if not args.json:
            for rec in recs:
                if "slope" in rec:
                    print(_summary_line(rec))
    if args.json:
        json.dump(_clean(records), sys.stdout, indent=1)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
