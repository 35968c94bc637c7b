"""``python -m tsallis`` prints the sigmoid escape-time table the README promises."""

import json
import subprocess
import sys

import pytest

from tsallis.__main__ import main


def test_table_json_rows(capsys):
    assert main(["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 15  # q ∈ {0,.25,.5,.75,1} × p0 ∈ {1e-2,1e-4,1e-6}
    by = {(r["p0"], r["q"]): r["T"] for r in rows}
    assert by[(1e-6, 0.0)] == pytest.approx(1000027, rel=1e-6)
    assert by[(1e-6, 1.0)] == pytest.approx(14.82, rel=1e-3)


def test_table_text_and_bad_q():
    out = subprocess.run(
        [sys.executable, "-m", "tsallis"], capture_output=True, text=True, check=True
    )
    assert "p0 \\ q" in out.stdout and "1e-06" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "tsallis", "--q", "2"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "q must lie in [0, 1]" in bad.stderr


def test_help_explains_every_option():
    out = subprocess.run(
        [sys.executable, "-m", "tsallis", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "escape time" in out
    for opt, words in (
        ("--q", "Tsallis indices"),
        ("--p0", "initial success probabilities"),
        ("--delta", "escape threshold"),
        ("--json", "JSON"),
    ):
        assert opt in out and words in out, (opt, out)
