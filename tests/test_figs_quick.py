"""`python -m paper_figs all --quick` writes every figure (PNG, PDF, table)."""

from __future__ import annotations

import csv

from paper_figs import FIGURES
from paper_figs.__main__ import main


def test_all_quick_figures(tmp_path_factory, capsys):
    results = tmp_path_factory.getbasetemp() / "sims_quick_results"  # shared with sims tests
    figs = tmp_path_factory.mktemp("figs")
    assert main(["all", "--quick", "--out", str(figs), "--results", str(results)]) == 0
    printed = capsys.readouterr().out
    for name in FIGURES:
        folder = figs / "quick" / name
        assert str(folder) in printed
        for ext in ("png", "pdf"):
            assert (folder / f"{name}.{ext}").stat().st_size > 5000
        with open(folder / f"{name}.csv") as f:
            assert len(list(csv.DictReader(f))) > 3
