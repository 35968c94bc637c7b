"""The GPU benchmark of the fused log-prob kernels and the hidden-state loss, by concern:

- :mod:`.registry`: the case table (what is timed, in which order, at what estimated cost);
- :mod:`.workloads`: the tensors of each workload and the loss every implementation computes;
- :mod:`.peers`: Liger-Kernel, TRL, cut-cross-entropy, each loaded only when importable;
- :mod:`.checks`: the one correctness policy (float64 oracles and criteria), shared with
  ``tests/test_kernels_gpu.py``;
- :mod:`.handlers`: one handler per case kind (build, check once, return what to time);
- :mod:`.timing`: ``do_bench`` medians, peak extra memory, bytes and flops;
- :mod:`.correctness`: the kernel tests run by pytest on the device before the cases;
- :mod:`.report`: ratios, goals, summary, JSON, the candidate dispatch table;
- :mod:`.run`: the command line and the case loop.

Entry point: ``benchmarks/gpu_bench.py`` (it loads this package by path, so no other
``benchmarks`` package on ``sys.path`` can shadow it); docs/gpu-benchmark.md.
"""
