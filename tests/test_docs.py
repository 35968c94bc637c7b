"""The README and the documentation site stay true without building the site: every page is in
the navigation, every internal link and anchor resolves, install lines work from a clone, no
internal execution instructions, the paper-index snippets build their configs, and the numbers
the README copies from cheap commands are what those commands print.

(CI also runs ``mkdocs build --strict``, which checks the same links with mkdocs' own rules and
renders the API reference.)"""

from __future__ import annotations

import doctest
import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_ext" not in p.parts)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"```.*?```", re.S)


def _nav_pages() -> list[str]:
    """The .md paths named in mkdocs.yml's nav (read as text: mkdocs is an optional extra)."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:") :]
    return re.findall(r"(?:^|\s)([\w./-]+\.md)\s*$", nav, re.M)


def _slug(heading: str) -> str:
    """The anchor mkdocs (toc) and GitHub give a heading: lower case, punctuation dropped,
    spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return re.sub(r"\s", "-", text)


def _anchors(md: Path) -> set[str]:
    text = _FENCE.sub("", md.read_text())
    return {_slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)}


def _links(md: Path):
    text = _FENCE.sub("", md.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # links inside inline code are not links
    for m in _LINK.finditer(text):
        target = m.group(1) or m.group(2)
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        yield target


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    nav = _nav_pages()
    assert nav, "mkdocs.yml has no nav"
    missing = [p for p in nav if not (DOCS / p).is_file()]
    assert not missing, f"nav entries without a page: {missing}"
    pages = {str(p.relative_to(DOCS)) for p in PAGES}
    assert pages - set(nav) == set(), f"pages not in the nav: {sorted(pages - set(nav))}"


@pytest.mark.parametrize("md", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_internal_links_and_anchors_resolve(md):
    bad = []
    for target in _links(md):
        path, _, anchor = target.partition("#")
        dest = (md.parent / path).resolve() if path else md
        if not dest.exists():
            bad.append(f"{target}: {dest} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.name}")
        elif md != README and path and not dest.is_relative_to(DOCS):
            bad.append(f"{target}: outside docs/, the site cannot link it")
    assert not bad, "\n".join(bad)


def test_readme_is_a_door():
    lines = README.read_text().splitlines()
    assert 180 <= len(lines) <= 285, len(lines)
    text = "\n".join(lines)
    for heading in ("## Install", "## Set-up", "## Train with TRL", "## Train with verl",
                    "## Choosing q and the estimator", "## Results", "## Layout"):  # fmt: skip
        assert heading in text, heading
    for extra in ("trl", "verl", "triton", "docs"):
        assert f'pip install -e ".[{extra}]"' in text, extra


@pytest.mark.parametrize("md", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_registry_install_lines_are_marked_as_not_yet_published(md):
    """Until the package is on PyPI, a `pip install tsallis-continuum...` line fails, so every
    one says that it is for later and sits beside a from-a-clone line."""
    for line in md.read_text().splitlines():
        if re.search(r"pip install ['\"]?tsallis-continuum", line):
            assert "once" in line.lower() and "publish" in line.lower(), line


def _tracked_text_files():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    files = [ROOT / f for f in out.stdout.splitlines()]
    kinds = {".md", ".py", ".txt", ".toml", ".sh", ".yml", ".yaml", ""}
    return [f for f in files if f.is_file() and f.suffix in kinds]


#: how the internal remote-execution tool is called; a person with a GPU types a shell command
_INTERNAL = re.compile(
    r"run\(command=|carry=\[|only `?\$OUT`? comes back|no pip on the GPU|device tool|--out \$OUT"
)


def _internal_hits(files):
    hits = []
    for f in files:
        if f == Path(__file__).resolve():
            continue
        for i, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            if _INTERNAL.search(line):
                hits.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    return hits


def test_no_internal_execution_instructions():
    hits = _internal_hits(_tracked_text_files())
    assert not hits, "\n".join(hits)


def test_paper_index_snippets_build_their_configs(monkeypatch, tmp_path):
    try:
        import tsallis.integrations.trl as trl_integration
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"trl is missing: pip install -e '.[trl]' ({exc})", pytrace=False)
        pytest.skip("trl is not installed")
    import torch

    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "paper-index.md").read_text(), re.S)
    assert len(blocks) >= 5
    base = trl_integration.TsallisGRPOConfig
    if not torch.cuda.is_available():  # the snippets are for a GPU; here the CPU stands in

        class OnCpu(base):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **{"use_cpu": True, "bf16": False, **kwargs})

        monkeypatch.setattr(trl_integration, "TsallisGRPOConfig", OnCpu)
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        scope: dict = {}
        exec(compile(block, "docs/paper-index.md", "exec"), scope)
        configs = [v for v in scope.values() if isinstance(v, base)]
        assert configs, block
        for config in configs:
            assert config.estimator in block and 0.0 <= float(config.q(0) if callable(config.q)
                                                              else config.q) <= 1.0  # fmt: skip


def test_plain_docstrings_extension():
    spec = importlib.util.spec_from_file_location(
        "plain_docstrings", DOCS / "_ext" / "plain_docstrings.py"
    )
    if importlib.util.find_spec("griffe") is None:
        pytest.skip("griffe (the docs extra) is not installed")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert doctest.testmod(mod).failed == 0
    md = mod.to_markdown("See :class:`~tsallis.TsallisLoss` and [x](y).\n    [kept] code")
    assert md.splitlines() == ["See `tsallis.TsallisLoss` and \\[x\\](y).", "    [kept] code"]


# ------------------------------------------------------------------ numbers that cannot drift


def test_readme_escape_time_table_is_the_commands_output():
    """The README's copy of `python -m tsallis` is that command's table, digit for digit."""
    from tsallis.__main__ import escape_time_table, format_table

    qs, p0s = [0.0, 0.25, 0.5, 0.75, 1.0], [1e-2, 1e-4, 1e-6]
    printed = format_table(escape_time_table(qs, p0s), qs, p0s, 0.5).splitlines()
    text = README.read_text()
    block = re.search(r"```\n(p0 \\ q.*?)```", text, re.S).group(1).splitlines()
    assert block == printed[1:-1]


def test_readme_grpo_q_eff_is_what_the_full_preset_gives(tmp_path):
    """README/choosing quote GRPO's q_eff at M = 128 and 512 from `python -m sims run
    grpo_q_axis` (full preset: 8 settings, seconds): within 0.01 of what it gives now."""
    from sims.experiments import get_experiment
    from sims.runner import run_experiment

    exp = get_experiment("grpo_q_axis")
    recs = exp.analyze(run_experiment(exp, quick=False, out=tmp_path, progress=False))
    q_eff = {
        r["M"]: r["slope"] for r in recs if r["estimator"] == "grpo" and r["range"] == "MP>=4"
    }
    for page in (README, DOCS / "choosing.md"):
        text = page.read_text()
        m = re.search(r"q_eff = ([\d.]+) at M = 128, ([\d.]+) at M = 512", text) or re.search(
            r"q_eff ([\d.]+) at M = 128, ([\d.]+) at M = 512", text
        )
        assert m, f"{page.name} no longer quotes GRPO's q_eff"
        assert float(m.group(1)) == pytest.approx(q_eff[128], abs=0.01), page
        assert float(m.group(2)) == pytest.approx(q_eff[512], abs=0.01), page


def test_quoted_full_preset_numbers_say_when_and_where_they_were_measured():
    """Numbers no test recomputes are quoted with the date and machine of their measurement."""
    for page in (README, DOCS / "choosing.md"):
        text = page.read_text()
        assert re.search(r"measured on\s+20\d\d-\d\d-\d\d\s+on a [^.]*CPU", text), page.name


@pytest.mark.parametrize("page", ["usage.md"])
def test_docs_python_blocks_run(page, tmp_path, monkeypatch):
    """The usage page's examples run as written (the trainer pages' run in their own tests)."""
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)
    assert blocks
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/{page}[block {i}]", "exec"), {"__name__": "__docs__"})
