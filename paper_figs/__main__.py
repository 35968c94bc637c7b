"""``python -m paper_figs <name>|all [--quick] [--out DIR] [--results DIR]``."""

from __future__ import annotations

import argparse
import importlib
import sys
import time

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
