"""``python -m tsallis``: print the theory's sigmoid escape-time table (Eq. 15).

python -m tsallis [--q 0 0.25 0.5 0.75 1] [--p0 1e-2 1e-4 1e-6] [--delta 0.5] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys

from .theory import sigmoid_escape_time, sigmoid_escape_time_asymptotic


def escape_time_table(qs, p0s, delta=0.5):
    """Rows of {p0, q, T, T_asymptotic} for the sigmoid model under gradient flow."""
    return [
        {
            "p0": p0,
            "q": q,
            "T": sigmoid_escape_time(p0, q, delta),
            "T_asymptotic": sigmoid_escape_time_asymptotic(p0, q),
        }
        for p0 in p0s
        for q in qs
    ]


def format_table(rows, qs, p0s, delta) -> str:
    by = {(r["p0"], r["q"]): r["T"] for r in rows}
    head = f"Sigmoid gradient-flow escape time T_q(p0 -> {delta:g}) (Eq. 15; unit rate)"
    cols = "p0 \\ q".ljust(10) + "".join(f"{q:>14g}" for q in qs)
    lines = [head, cols, "-" * len(cols)]
    for p0 in p0s:
        lines.append(f"{p0:<10.0e}" + "".join(f"{by[(p0, q)]:>14.6g}" for q in qs))
    lines.append(
        "q = 0 grows like 1/p0 (RLVR), 0 < q < 1 like p0^-(1-q)/(1-q), q = 1 like log(1/p0)."
    )
    return "\n".join(lines)


def _typed(argv, dest: str) -> str:
    """The spelling of option ``--dest`` that the user typed (argparse accepts any unambiguous
    prefix, e.g. ``--del`` for ``--delta``), so that an error names what is on their screen."""
    full = f"--{dest}"
    typed = full
    for arg in argv:
        name = arg.split("=", 1)[0]
        if name.startswith("--") and len(name) > 2 and full.startswith(name):
            typed = name  # the last occurrence wins, as in argparse
    return typed


def _option_errors(args, argv) -> list[str]:
    """Each option's values checked against its range, the error naming the option as typed:
    ``--q`` in [0, 1], ``--delta`` in (0, 1), every ``--p0`` in (0, delta)."""
    errors = []
    bad_q = [q for q in args.q if not 0.0 <= q <= 1.0]  # NaN fails both comparisons
    if bad_q:
        errors.append(f"{_typed(argv, 'q')}: q must lie in [0, 1], got {bad_q[0]:g}")
    delta_ok = 0.0 < args.delta < 1.0
    if not delta_ok:
        errors.append(
            f"{_typed(argv, 'delta')}: the escape threshold must lie in (0, 1), "
            f"got {args.delta:g}"
        )
    bound = args.delta if delta_ok else 1.0
    bad_p0 = [p for p in args.p0 if not (0.0 < p < bound)]
    if bad_p0:
        where = f"(0, delta = {args.delta:g})" if delta_ok else "(0, 1)"
        errors.append(f"{_typed(argv, 'p0')}: p0 must lie in {where}, got {bad_p0[0]:g}")
    return errors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tsallis",
        description="Print the sigmoid model's gradient-flow escape time T_q(p0 -> delta) "
        "(Eq. 15, unit rate) for each q and p0.",
    )
    parser.add_argument(
        "--q",
        type=float,
        nargs="+",
        default=[0.0, 0.25, 0.5, 0.75, 1.0],
        metavar="Q",
        help="Tsallis indices q in [0, 1], one column each (q = 0: RL/RLVR, q = 1: maximum "
        "likelihood; default: 0 0.25 0.5 0.75 1)",
    )
    parser.add_argument(
        "--p0",
        type=float,
        nargs="+",
        default=[1e-2, 1e-4, 1e-6],
        metavar="P0",
        help="initial success probabilities p0 in (0, delta), one row each "
        "(default: 1e-2 1e-4 1e-6)",
    )
    parser.add_argument(
        "--delta",
        type=float,
        default=0.5,
        help="escape threshold: the time counted is until P first reaches delta, in (0, 1) "
        "(default: 0.5)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the rows as JSON (p0, q, exact time T, leading-order T_asymptotic) "
        "instead of the table",
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    errors = _option_errors(args, argv)
    if errors:
        parser.error("; ".join(errors))
    try:
        rows = escape_time_table(args.q, args.p0, args.delta)
    except ValueError as err:
        parser.error(str(err))
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
    else:
        print(format_table(rows, args.q, args.p0, args.delta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
