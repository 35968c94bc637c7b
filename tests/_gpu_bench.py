"""The GPU benchmark's package (benchmarks/gpu), loaded by path for the tests that use its
modules: ``benchmarks/`` is not a package and stays off ``sys.path``."""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ("registry", "workloads", "peers", "checks", "timing", "handlers", "correctness",
           "report", "run")  # fmt: skip


def load_entry_point():
    """benchmarks/gpu_bench.py as a module."""
    path = os.path.join(ROOT, "benchmarks", "gpu_bench.py")
    spec = importlib.util.spec_from_file_location("tsallis_gpu_bench_entry", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_bench() -> SimpleNamespace:
    """The benchmark's modules by name (``bench.checks``, ``bench.report``, ...)."""
    pkg = load_entry_point().load_package()
    return SimpleNamespace(package=pkg, **{m: importlib.import_module(f"{pkg.__name__}.{m}")
                                           for m in MODULES})
