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


def _fake_escape_records():
    recs = []
    for regime, p0s in (("flow", [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]), ("gd", [1e-2, 1e-3, 1e-4])):
        for model in ("sigmoid", "karm_K4", "chain_V10"):
            for q in (0.0, 0.5, 1.0):
                pts = [
                    {"p0": p, "time": 2.0 / p ** (1 - q), "theory": 2.0 / p ** (1 - q),
                     "censored": int(regime == "gd" and p == 1e-4 and q == 0.0)}
                    for p in p0s
                ]
                recs.append({"regime": regime, "model": model, "q": q, "eta": 0.25,
                             "kind": "log" if q == 1 else "power", "slope": 1 - q,
                             "points": pts})
    return recs


def test_escape_time_figure_legends_outside_data_and_missing_points_explained(
    tmp_path, monkeypatch
):
    """Legends never cover data (they sit outside the axes), the marker styles are spelled
    out, and the figure says why gradient descent has no points at small p0."""
    import paper_figs.escape_time as fig_mod

    monkeypatch.setattr(fig_mod, "records", lambda *a, **k: _fake_escape_records())
    captured = {}

    def fake_save(fig, name, folder, rows):
        fig.canvas.draw()
        captured["fig"] = fig
        return folder

    monkeypatch.setattr(fig_mod, "save", fake_save)
    fig_mod.make(quick=True, fig_root=tmp_path)
    fig = captured["fig"]
    r = fig.canvas.get_renderer()
    for ax in fig.axes:
        leg = ax.get_legend()
        assert leg is not None
        assert not leg.get_window_extent(r).overlaps(ax.get_window_extent(r))
    style = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert "exact gradient flow" in style and "gradient descent, η = 1/4" in style
    assert any("censored" in s for s in style)
    text = " ".join(t.get_text() for t in fig.texts)
    assert "not run" in text and "p0 ≥ 1e-04" in text
