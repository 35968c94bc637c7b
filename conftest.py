"""Repository-level pytest configuration (collection only; test fixtures live in tests/).

Doctests are collected from the packages themselves (``--doctest-modules``). The Triton kernel
module cannot be imported without Triton (an optional extra), so it is left out of collection
there; its tests in ``tests/`` skip themselves in the same case.
"""

import importlib.util

collect_ignore = []
if importlib.util.find_spec("triton") is None:
    collect_ignore.append("kernels/triton_impl.py")
