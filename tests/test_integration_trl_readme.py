"""The "Train with TRL" README section's Python block runs as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
#: the README section whose python block this file runs (tests/test_readme.py skips it)
SECTION = "## Train with TRL"


def _section() -> str:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end >= 0 else None]


def _blocks():
    return re.findall(r"```python\n(.*?)```", _section(), re.S)


def test_section_has_a_python_block():
    assert len(_blocks()) == 1


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_trl_readme_block_runs(index, tmp_path, monkeypatch, capsys):
    try:
        import trl  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"trl is missing: pip install -e '.[trl]' ({exc})", pytrace=False)
        pytest.skip("trl is not installed")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model runs fastest on one thread
    code = compile(_blocks()[index], f"README.md[{SECTION}, block {index}]", "exec")
    try:
        exec(code, {"__name__": "__readme__"})
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "tsallis/max_amplified_advantage" in out
    assert (tmp_path / "out-likelihood").exists()


TRL_PAGE = README.parent / "docs" / "trainers" / "trl.md"


def test_trl_page_block_runs(tmp_path, monkeypatch, capsys):
    """docs/trainers/trl.md's example (both modes) runs as written."""
    if not os.environ.get("CI"):  # under CI a missing extra must fail, not skip
        pytest.importorskip("trl")
    (block,) = re.findall(r"```python\n(.*?)```", TRL_PAGE.read_text(), re.S)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(block, "docs/trainers/trl.md", "exec"), {"__name__": "__trl_page__"})
    finally:
        torch.set_num_threads(threads)
    assert "tsallis/" in capsys.readouterr().out
    assert (tmp_path / "out-verifier").exists() and (tmp_path / "out-likelihood").exists()
