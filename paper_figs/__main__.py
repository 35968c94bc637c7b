"""``python -m paper_figs <name>|all [--quick] [--out DIR] [--results DIR]``.

``--out`` and ``--results`` are checked before any work: a file, a folder under a file, a
missing parent folder or an unwritable folder exits with status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from sims.__main__ import _os_error, interrupted_message, prepare_out
from sims.runner import DEFAULT_RESULTS

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
            prepare_out(args.out, "--out")
        if args.results is not None:
            prepare_out(args.results, "--results")
    except ValueError as err:
        print(f"python -m paper_figs: error: {err}", file=sys.stderr)
        return 2
    names = FIGURES if args.name == "all" else (args.name,)
    t_all = time.perf_counter()
    results = Path(args.results) if args.results is not None else DEFAULT_RESULTS
    for i, name in enumerate(names, 1):
        t0 = time.perf_counter()
        if len(names) > 1:  # the sweeps' bars show progress inside a figure; this, across them
            print(f"[{i}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
        try:
            mod = importlib.import_module(f"paper_figs.{name}")
            folder = mod.make(quick=args.quick, results_dir=args.results, fig_root=args.out)
        except KeyboardInterrupt:
            print(f"\n{interrupted_message('python -m paper_figs', results / name)}",
                  file=sys.stderr)  # fmt: skip
            return 130
        except OSError as err:
            print(f"python -m paper_figs: error: {name}: {_os_error(err)}", file=sys.stderr)
            return 1
        print(f"{name}: {folder}  ({time.perf_counter() - t0:.1f} s)", flush=True)
    if len(names) > 1:
        print(f"all figures: {time.perf_counter() - t_all:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
