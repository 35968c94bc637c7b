"""examples/plain_loop.py: a third host is a thin file over the seam and the loss; it trains."""

import importlib.util
import math
from pathlib import Path

import pytest

pytest.importorskip("transformers")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plain_loop.py"


def test_plain_loop_trains_in_likelihood_mode():
    spec = importlib.util.spec_from_file_location("plain_loop", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    hist = mod.train()  # 30 steps
    assert len(hist) == 30
    assert all(math.isfinite(s.log_w_mean) and s.frac_stalled == 0.0 for s in hist)
    first = sum(s.w_mean for s in hist[:5]) / 5
    last = sum(s.w_mean for s in hist[-5:]) / 5
    assert last > first + 0.03, (first, last)  # P rises from chance (1/7 at the start)
    assert len(EXAMPLE.read_text().splitlines()) <= 60  # thin: the seam and the loss do the work
