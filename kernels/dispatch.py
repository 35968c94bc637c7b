"""Which fused variant :func:`kernels.fused_sequence_loss` runs when ``variant=None``.

``TABLE`` rows ``(max_V, variant)`` are tried in order; the first with ``V <= max_V`` (or
``max_V is None``) wins. The table is meant to hold measured results: ``benchmarks/gpu_bench.py``
times every variant against each other and against Liger on one GPU, and the row it reports
as best per vocabulary is copied here, with the result file named in ``PROVENANCE``.

Status: UNMEASURED. No GPU run of these kernels exists yet, so the table keeps the design
defaults (``kernels/README.md``): ``row`` for V <= 65536 (an H100 probe of that design ran at
0.74x Liger's fused loss at V = 32000) and ``split`` above (rows too long for L2; untimed).
"""

from __future__ import annotations

#: every fused Triton variant (``fused_sequence_loss(..., variant=name)``), see kernels/README.md
FUSED_VARIANTS = ("row", "row_rev", "multi", "split", "split_2pass")

#: True once ``TABLE`` comes from a GPU measurement
MEASURED = False
#: where ``TABLE`` comes from
PROVENANCE = (
    "unmeasured: design defaults (row for V <= 65536, split above); no GPU run of these "
    "kernels yet - benchmarks/gpu_bench.py writes the numbers that will set this table"
)
#: ``(max_V inclusive or None for no bound, variant)``, first match wins
TABLE: tuple[tuple[int | None, str], ...] = ((65536, "row"), (None, "split"))


def choose_variant(V: int, table=None) -> str:
    """The fused variant for vocabulary size ``V`` according to ``table`` (default ``TABLE``).

    Example:
        >>> table = ((65536, "row"), (None, "split"))
        >>> choose_variant(32000, table), choose_variant(151936, table)
        ('row', 'split')
    """
    for max_v, name in TABLE if table is None else table:
        if max_v is None or V <= max_v:
            if name not in FUSED_VARIANTS:
                raise ValueError(f"dispatch table names unknown variant {name!r}")
            return name
    raise ValueError(f"dispatch table has no row for V = {V} (add a final (None, variant) row)")
