#!/usr/bin/env python3
"""GPU benchmark of the fused log-prob kernels: correctness of exactly what is timed, then
timings against Liger-Kernel, naive torch and torch.compile, all in one run.

The cases are a table (``benchmarks/gpu/cases.py``), run in order by one runner
(``benchmarks/gpu/run.py``) that prints a line per case, saves the JSON after each, and ends
with the goals table (met / missed / not measured) and the dispatch table the timings support.

On the GPU machine (one call, from the repository root; the Liger-Kernel wheel carried in
``.whl/`` is unpacked onto ``sys.path`` by the script itself):

    GIT_COMMIT=<sha> timeout 560 python3 benchmarks/gpu_bench.py --out $OUT

On a CPU machine, the same table and runner at tiny shapes under the Triton interpreter (CI):

    TRITON_INTERPRET=1 python3 benchmarks/gpu_bench.py --smoke --commit <sha> --out /tmp/bench

Other modes: ``--list`` prints the case table with estimated costs; ``--only REGEX`` runs a
subset; ``--write-dispatch RESULT_JSON`` rewrites ``kernels/dispatch.py``'s table from the
measured result file (``benchmarks/results/README.md``).
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
