#!/usr/bin/env python3
"""GPU benchmark of the fused log-prob kernels and the hidden-state loss: the kernel tests on
the GPU, then every case checked once at its timed shape and timed against Liger-Kernel, TRL,
cut-cross-entropy, naive torch and torch.compile, all in one run (docs/gpu-benchmark.md).

On a machine with one CUDA GPU, from the repository root (about 9 minutes, compilation
included; it ends by itself):

    python3 benchmarks/gpu_bench.py --out DIR

DIR receives the result JSON, ``dispatch_table.json`` (the candidate dispatch table, when the
run measured every variant) and the kernel tests' log. On a CPU machine, the same table and
runner at tiny shapes under the Triton interpreter (CI):

    python3 benchmarks/gpu_bench.py --smoke --out DIR

Other modes: ``--list`` prints the case table with estimated costs; ``--only REGEX`` runs a
subset; ``--dispatch-candidate RESULT_JSON --out DIR`` rebuilds the candidate table from a
result file. The modules are in ``benchmarks/gpu/`` (its ``__init__`` lists them).
"""

from __future__ import annotations

import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def load_package():
    """Import ``benchmarks/gpu`` by path as ``tsallis_gpu_bench`` (so that no other
    ``benchmarks`` or ``gpu`` package on ``sys.path`` can shadow it) and return it."""
    name = "tsallis_gpu_bench"
    if name in sys.modules:
        return sys.modules[name]
    pkg_dir = os.path.join(HERE, "gpu")
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(pkg_dir, "__init__.py"), submodule_search_locations=[pkg_dir]
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--smoke" in argv:  # must precede the first import of triton
        os.environ["TRITON_INTERPRET"] = "1"
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    load_package()
    from tsallis_gpu_bench import run

    return run.main(argv)


if __name__ == "__main__":
    sys.exit(main())
