"""Repository-level pytest configuration (collection only; test fixtures live in tests/).

Doctests are collected from the packages themselves (``--doctest-modules``). Modules that need
an optional extra cannot be imported without it, so they are left out of collection there:
the Triton kernels (extra ``triton``) and the trainer integrations (extras ``trl``, ``verl``).
Their tests in ``tests/`` skip themselves in the same case, except under CI (``CI=true``), where
CI installs every extra and a missing one must fail, not skip: there nothing is left out here.
"""

import importlib.util
import os

_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

collect_ignore = []
if importlib.util.find_spec("triton") is None:
    collect_ignore += ["kernels/triton"]
if not _IN_CI:
    if importlib.util.find_spec("trl") is None:
        collect_ignore.append("tsallis/integrations/trl.py")
    if importlib.util.find_spec("verl") is None:
        collect_ignore.append("tsallis/integrations/verl.py")
    if any(importlib.util.find_spec(m) is None for m in ("verl", "transfer_queue")):
        collect_ignore.append("tsallis/integrations/verl_likelihood.py")  # verl's v1 trainer
