"""docs/api-contract.md stays true: its signatures are the code's, and it names every public name.

A documented signature is an indented line ``tsallis.<path>(<params>)`` in the document; it is
parsed as Python (``def f(<params>): ...``) and compared with ``inspect.signature`` of the object:
parameter names, order, kinds and defaults (annotations are not compared).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

import tsallis
from tsallis import estimators, theory

DOC = Path(__file__).resolve().parents[1] / "docs" / "api-contract.md"
_LINE = re.compile(r"^ {4}(tsallis(?:\.\w+)+)\((.*)\)\s*$")


def _documented() -> dict[str, str]:
    out = {}
    for line in DOC.read_text().splitlines():
        m = _LINE.match(line)
        if m:
            assert m.group(1) not in out, f"{m.group(1)} is documented twice"
            out[m.group(1)] = m.group(2)
    return out


def _resolve(path: str):
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise LookupError(path)


def _doc_params(params: str):
    fn = ast.parse(f"def f({params}): pass").body[0]
    a = fn.args
    P = inspect.Parameter
    out = []
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    for arg, d in zip(positional, defaults, strict=True):
        out.append((arg.arg, P.POSITIONAL_OR_KEYWORD, _lit(d)))
    if a.vararg:
        out.append((a.vararg.arg, P.VAR_POSITIONAL, P.empty))
    for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        out.append((arg.arg, P.KEYWORD_ONLY, _lit(d)))
    if a.kwarg:
        out.append((a.kwarg.arg, P.VAR_KEYWORD, P.empty))
    return out


def _lit(node):
    return inspect.Parameter.empty if node is None else ast.literal_eval(node)


def _code_params(obj, *, method: bool):
    sig = inspect.signature(obj)
    params = list(sig.parameters.values())
    if method and params and params[0].name == "self":
        params = params[1:]
    kind = {inspect.Parameter.POSITIONAL_ONLY: inspect.Parameter.POSITIONAL_OR_KEYWORD}
    return [(p.name, kind.get(p.kind, p.kind), p.default) for p in params]


DOCUMENTED = _documented()


@pytest.mark.parametrize("path", sorted(DOCUMENTED))
def test_documented_signature_is_the_code(path):
    obj = _resolve(path)
    method = inspect.isfunction(obj) and "." in obj.__qualname__
    assert _doc_params(DOCUMENTED[path]) == _code_params(obj, method=method), path


def _public(module, names):
    return [f"{module}.{n}" for n in names]


def test_every_public_name_is_documented():
    text = DOC.read_text()
    names = (
        _public("tsallis", tsallis.__all__)
        + _public("tsallis.estimators", estimators.__all__)
        + _public("tsallis.theory", theory.__all__)
    )
    missing = []
    for full in names:
        obj = _resolve(full)
        short = full.rsplit(".", 1)[1]
        if callable(obj) and not inspect.ismodule(obj):
            # a callable is documented by a signature under its own or its defining module's name
            home = f"{getattr(obj, '__module__', '')}.{short}"
            aliases = {full, home, f"tsallis.{short}", f"tsallis.estimators.{short}"}
            if not aliases & set(DOCUMENTED):
                missing.append(full)
        elif f"`{full}`" not in text and f"`{short}`" not in text:
            missing.append(full)
    assert not missing, f"public names missing from {DOC.name}: {missing}"


def test_every_registered_estimator_is_documented():
    for name in estimators.ESTIMATORS:
        assert f"tsallis.estimators.{name}" in DOCUMENTED
        assert f'"{name}"' in DOC.read_text()


def test_the_checker_catches_a_stale_signature():
    # the comparison itself can fail: a renamed argument and a changed default are caught
    code = _code_params(tsallis.sequence_loss, method=False)
    assert _doc_params(
        'logp_z, logp_y, coef_z, coef_y=None, *, reduction="mean", num_groups=None'
    ) != code
    assert _doc_params(
        'logp_z, logp_y, coef_z, coef_y=None, *, group_size=None, reduction="sum"'
    ) != code
