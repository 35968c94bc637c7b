"""``python -m paper_figs <name>|all [--quick] [--out DIR] [--results DIR]``.

``--out`` and ``--results`` are checked before any work: a file, a folder under a file, a
missing parent folder or an unwritable folder exits with status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from sims.runner import check_out_dir

from . import FIGURES


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m paper_figs", description="draw the paper-check figures"
    )
    parser.add_argument("name", choices=[*FIGURES, "all"], help="figure name or 'all'")
    parser.add_argument("--quick", action="store_true", help="the small CI preset")
    parser.add_argument("--out", default=None, help="figures root (default figures/)")
    parser.add_argument("--results", default=None, help="results cache (default results/)")
    args = parser.parse_args(argv)
    try:  # before any work: a file, a folder under a file, a missing parent, no write access
        if args.out is not None:
            check_out_dir(args.out, create_parents=False, flag="--out")
        if args.results is not None:
            check_out_dir(args.results, create_parents=False, flag="--results")
    except ValueError as err:
        print(f"python -m paper_figs: error: {err}", file=sys.stderr)
        return 2
    names = FIGURES if args.name == "all" else (args.name,)
    t_all = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        mod = importlib.import_module(f"paper_figs.{name}")
        folder = mod.make(quick=args.quick, results_dir=args.results, fig_root=args.out)
        print(f"{name}: {folder}  ({time.perf_counter() - t0:.1f} s)")
    if len(names) > 1:
        print(f"all figures: {time.perf_counter() - t_all:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
