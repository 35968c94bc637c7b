"""Import every module of the installed tsallis-continuum distribution, as a user of the wheel
would: run from outside the source tree (the check fails if a module came from a checkout).

    python .ci/import_all.py [--extras triton,trl,verl,dev]

Modules that need an extra are imported only when it is named; without it, importing them must
fail with an ImportError that says what to install (never another error).  Prints one line per
module and exits non-zero on the first problem.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import pkgutil
import subprocess
import sys
from pathlib import Path

PACKAGES = ("tsallis", "kernels", "sims", "paper_figs")
#: module prefix -> the extra it needs
NEEDS = {
    "tsallis.integrations.trl": "trl",
    "tsallis.integrations.verl": "verl",
    "tsallis.integrations.verl_likelihood": "verl",
    "kernels.triton": "triton",
}


def _modules():
    for name in PACKAGES:
        pkg = importlib.import_module(name)
        yield name
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{name}."):
            if info.name.split(".")[-1] == "__main__":
                continue
            yield info.name


def _need(module: str) -> str | None:
    return next((e for p, e in NEEDS.items() if module == p or module.startswith(p + ".")), None)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--extras", default="", help="comma-separated extras that are installed")
    extras = {e for e in parser.parse_args().extras.split(",") if e}
    dist = md.distribution("tsallis-continuum")
    print(f"tsallis-continuum {dist.version} from {dist.locate_file('')}")
    root = Path(__file__).resolve().parents[1]
    problems = []
    for module in _modules():
        need = _need(module)
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            if need and need not in extras:
                print(f"  {module}: needs the '{need}' extra ({exc})")
                continue
            problems.append(f"{module}: {type(exc).__name__}: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - any other failure is the finding
            problems.append(f"{module}: {type(exc).__name__}: {exc}")
            continue
        where = Path(mod.__file__).resolve()
        if where.is_relative_to(root):
            problems.append(f"{module}: imported from the source tree ({where}), not the wheel")
        print(f"  {module}: ok")
    if "verl" in extras:  # the plug-in entry point is how verl's workers get the estimators
        eps = md.entry_points(group="verl.plugins")
        if not any(ep.value == "tsallis.integrations.verl" for ep in eps):
            problems.append("the verl.plugins entry point is missing")
    out = subprocess.run([sys.executable, "-m", "tsallis", "--q", "1", "--p0", "1e-6"],
                         capture_output=True, text=True)  # fmt: skip
    if out.returncode != 0 or "14.8155" not in out.stdout:
        problems.append(f"python -m tsallis failed: {out.stderr.strip()}")
    for p in problems:
        print(f"PROBLEM {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
