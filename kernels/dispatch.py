"""Which fused variant :func:`kernels.fused_sequence_loss` runs when ``variant=None``.

The table is data: ``kernels/dispatch_table.json``, read once at import. Its rows
``{"max_V": int | null, "variant": name}`` are tried in order; the first with ``V <= max_V``
(or ``max_V`` null) wins. ``measured`` says whether the rows come from a GPU run and
``provenance`` from which one. ``benchmarks/gpu_bench.py`` writes a candidate file of the same
format from its timings; adopting a measured table is copying that file over this one
(docs/gpu-benchmark.md).

Until a measured table exists the file holds the design defaults (kernels/README.md): ``row``
for V <= 65536 and ``multi`` above.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

#: every fused Triton variant (``fused_sequence_loss(..., variant=name)``), see kernels/README.md
FUSED_VARIANTS = ("row", "row_rev", "multi", "split", "split_2pass")
#: the format version of the table file this module reads
SCHEMA = 1
#: the table file shipped with the package
TABLE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dispatch_table.json")


@dataclass(frozen=True)
class DispatchTable:
    """A validated dispatch table: ``rows`` ``((max_V or None, variant), ...)``."""

    rows: tuple[tuple[int | None, str], ...]
    measured: bool
    provenance: str


def parse_table(data, source: str = "dispatch table") -> DispatchTable:
    """Validate the decoded JSON ``data`` of a table file (``source`` names it in errors).

    Rows must name known variants, carry strictly increasing integer bounds and end with the
    unbounded row (``max_V`` null), so that every V >= 1 has exactly one answer.

    Example:
        >>> t = parse_table({"schema": 1, "measured": False, "provenance": "design defaults",
        ...                  "rows": [{"max_V": 65536, "variant": "row"},
        ...                           {"max_V": None, "variant": "multi"}]})
        >>> t.rows, t.measured
        (((65536, 'row'), (None, 'multi')), False)
    """
    if not isinstance(data, dict):
        raise TypeError(f"{source}: expected a JSON object, got {type(data).__name__}")
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{source}: expected schema {SCHEMA}, got {data.get('schema')!r}")
    measured, provenance = data.get("measured"), data.get("provenance")
    if not isinstance(measured, bool):
        raise TypeError(f"{source}: 'measured' must be true or false, got {measured!r}")
    if not isinstance(provenance, str) or not provenance.strip():
        raise TypeError(f"{source}: 'provenance' must be a non-empty string, got {provenance!r}")
    raw = data.get("rows")
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{source}: 'rows' must be a non-empty list, got {raw!r}")
    rows: list[tuple[int | None, str]] = []
    for i, r in enumerate(raw):
        if not isinstance(r, dict) or set(r) != {"max_V", "variant"}:
            raise ValueError(f"{source}: row {i} must hold exactly 'max_V' and 'variant', "
                             f"got {r!r}")  # fmt: skip
        max_v, name = r["max_V"], r["variant"]
        if name not in FUSED_VARIANTS:
            raise ValueError(f"{source}: row {i} names unknown variant {name!r}; expected one "
                             f"of {FUSED_VARIANTS}")  # fmt: skip
        last = i == len(raw) - 1
        if last != (max_v is None):
            raise ValueError(f"{source}: only the last row has max_V null (row {i} has "
                             f"{max_v!r}; {len(raw)} rows)")  # fmt: skip
        if max_v is not None:
            if isinstance(max_v, bool) or not isinstance(max_v, int) or max_v < 1:
                raise TypeError(f"{source}: row {i} max_V must be a positive integer or null, "
                                f"got {max_v!r}")  # fmt: skip
            if rows and max_v <= rows[-1][0]:
                raise ValueError(f"{source}: max_V must increase, row {i} has {max_v} after "
                                 f"{rows[-1][0]}")  # fmt: skip
        rows.append((max_v, name))
    return DispatchTable(tuple(rows), measured, provenance)


def table_json(table: DispatchTable) -> str:
    """The file text of ``table`` (what :func:`load_table` reads back), newline-terminated.

    Example:
        >>> t = DispatchTable(((None, "multi"),), False, "x")
        >>> parse_table(json.loads(table_json(t))) == t
        True
    """
    data = {"schema": SCHEMA, "measured": table.measured, "provenance": table.provenance,
            "rows": [{"max_V": m, "variant": v} for m, v in table.rows]}  # fmt: skip
    return json.dumps(data, indent=2) + "\n"


def load_table(path: str = TABLE_FILE) -> DispatchTable:
    """Read and validate the table file at ``path``."""
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    return parse_table(data, path)


_LOADED = load_table()
#: ``(max_V inclusive or None for no bound, variant)``, first match wins (from TABLE_FILE)
TABLE: tuple[tuple[int | None, str], ...] = _LOADED.rows
#: True once ``TABLE`` comes from a GPU measurement
MEASURED: bool = _LOADED.measured
#: where ``TABLE`` comes from
PROVENANCE: str = _LOADED.provenance


def choose_variant(V: int, table=None) -> str:
    """The fused variant for vocabulary size ``V`` according to ``table`` (default ``TABLE``).

    Example:
        >>> table = ((65536, "row"), (None, "multi"))
        >>> choose_variant(32000, table), choose_variant(151936, table)
        ('row', 'multi')
    """
    for max_v, name in TABLE if table is None else table:
        if max_v is None or V <= max_v:
            if name not in FUSED_VARIANTS:
                raise ValueError(f"dispatch table names unknown variant {name!r}")
            return name
    raise ValueError(f"dispatch table has no row for V = {V} (add a final (None, variant) row)")
