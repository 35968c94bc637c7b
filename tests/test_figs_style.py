"""The transformer figure is readable at a glance: one style per estimator (PAFT never in
GARL-RLOO's style), and the comparison panels show at most six methods."""

from __future__ import annotations

import itertools

from paper_figs import lm_cold_start as fig


def _rec(estimator, q, schedule=None):
    label = "sft10->rlvr" if schedule else (estimator if q is None else f"{estimator} q={q:g}")
    return {"estimator": estimator, "q": q, "schedule": schedule, "label": label}


ALL = [
    *(_rec(e, q) for e in ("garl_rloo", "paft") for q in (0.0, 0.25, 0.5, 0.75, 1.0)),
    _rec("grpo", None),
    _rec("garl_rloo", 1.0, schedule="step"),
]


def _look(r):
    st = fig._style(r)
    return st["color"], st["ls"], st["marker"], st.get("mfc", st["color"])


def test_comparison_panels_show_at_most_six_methods():
    shown = [r for r in ALL if fig._shown(r)]
    assert 4 <= len(shown) <= 6, [r["label"] for r in shown]


def test_every_shown_method_has_its_own_look_and_name():
    shown = [r for r in ALL if fig._shown(r)]
    for a, b in itertools.combinations(shown, 2):
        assert _look(a) != _look(b), (a["label"], b["label"])
        assert fig._pretty(a) != fig._pretty(b)


def test_paft_is_never_drawn_in_garl_rloo_style():
    for q in (0.0, 0.25, 0.5, 0.75, 1.0):
        garl, paft = _look(_rec("garl_rloo", q)), _look(_rec("paft", q))
        assert garl[0] != paft[0] and garl[1:] != paft[1:]
