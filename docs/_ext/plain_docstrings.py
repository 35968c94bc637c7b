"""A griffe extension for the API reference: the package's docstrings are plain text (formulas
with brackets, doctests, Sphinx roles), so each is turned into the Markdown that shows it as
written before mkdocstrings renders it.

- a run of doctest lines (``>>>``, ``...`` and the output under them) becomes a ``pycon`` fence,
  instead of nested block quotes;
- ``:func:`x``` and the other Sphinx roles become inline code ``x``;
- ``[`` and ``]`` outside code are escaped, so that ``E[w](1 - E[w])`` stays a formula and
  ``[1.0, 0.0]`` is not read as a link.
"""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:func|mod|class|meth|data|attr|obj|exc|const|py:\w+):`~?([^`]+)`")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def _escape_brackets(line: str) -> str:
    """Backslash-escape [ and ] outside inline code spans."""
    out, pos = [], 0
    for m in _CODE_SPAN.finditer(line):
        out.append(line[pos : m.start()].replace("[", r"\[").replace("]", r"\]"))
        out.append(m.group(0))
        pos = m.end()
    out.append(line[pos:].replace("[", r"\[").replace("]", r"\]"))
    return "".join(out)


def to_markdown(text: str) -> str:
    r"""The Markdown that renders the plain-text docstring ``text`` as written.

    >>> md = to_markdown("Sum E[w].\n\n" + ">" * 3 + " f([1])\n[2]\n\nSee :func:`g`.")
    >>> md.splitlines()
    ['Sum E\\[w\\].', '', '```pycon', '>>> f([1])', '[2]', '```', '', 'See `g`.']
    """
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    in_fence = False
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            in_fence = not in_fence
            out.append(line)
            i += 1
            continue
        if not in_fence and stripped.startswith(">>>"):
            indent = len(line) - len(line.lstrip())
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i].strip())
                i += 1
            out += ["```pycon", *block, "```"]
            continue
        if in_fence or line.startswith("    "):  # fenced or indented code: shown as it is
            out.append(line)
        else:
            out.append(_escape_brackets(_ROLE.sub(r"`\1`", line)))
        i += 1
    return "\n".join(out)


class PlainDocstrings(griffe.Extension):
    """Rewrite every docstring with :func:`to_markdown` once griffe has loaded it."""

    def on_instance(self, *, obj, **kwargs) -> None:  # noqa: ARG002 - griffe's hook signature
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
