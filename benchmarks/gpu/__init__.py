"""The GPU benchmark of the fused log-prob kernels: a case table (:mod:`.cases`) and one runner
(:mod:`.run`). Entry point: ``benchmarks/gpu_bench.py`` (it loads this package by path, so no
other ``benchmarks`` package on ``sys.path`` can shadow it)."""
