"""The peers the benchmark times ours against, each loaded only when importable.

- Liger-Kernel (``pip install liger-kernel``): ``fused_selective_log_softmax`` and
  ``triton_grpo_loss`` (logits), ``LigerFusedLinearGRPOLoss`` (hidden states);
- TRL (``pip install trl``): ``ChunkedLogProbFunction``, the chunked LM head of its trainers;
- cut-cross-entropy (``pip install cut-cross-entropy``): ``linear_cross_entropy``.

:func:`load_peers` never raises: a peer that cannot be imported is ``None`` with the reason,
and every case that needs it is recorded as skipped with that reason. Peers are imported as
installed; ``--wheels DIR`` also unpacks the newest pure-Python wheel of each into a temporary
folder put first on ``sys.path`` (a wheel is a zip), for a machine without pip.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field

#: peer name -> (distribution name, wheel file prefix, top-level module)
DISTRIBUTIONS = {
    "liger": ("liger-kernel", "liger_kernel", "liger_kernel"),
    "trl": ("trl", "trl", "trl"),
    "cce": ("cut-cross-entropy", "cut_cross_entropy", "cut_cross_entropy"),
}


@dataclass
class Peer:
    """One peer library: its entry points (name -> callable or class), version, or why not."""

    name: str
    entry: dict = field(default_factory=dict)
    version: str | None = None
    why_not: str | None = None

    def get(self, key):
        return self.entry.get(key)

    def reason(self, key=None) -> str:
        """Why ``key`` (or the peer) is not available, for a skipped case."""
        if self.why_not:
            return f"{self.name}: {self.why_not}"
        return f"{self.name} {self.version}: no {key}"

    def describe(self) -> str:
        if self.why_not:
            return f"not available ({self.why_not})"
        return f"{self.version} ({', '.join(sorted(self.entry))})"


def newest_wheel(whl_dir, prefix):
    """Path of the newest ``<prefix>-*.whl`` in ``whl_dir`` (by name), or None."""
    if not whl_dir or not os.path.isdir(whl_dir):
        return None
    wheels = sorted(f for f in os.listdir(whl_dir)
                    if f.startswith(prefix + "-") and f.endswith(".whl"))  # fmt: skip
    return os.path.join(whl_dir, wheels[-1]) if wheels else None


def _unpack(wheel, module):
    """Unzip ``wheel`` into a temporary folder, put it first on ``sys.path``, forget any
    imported ``module``."""
    dest = tempfile.mkdtemp(prefix=f"{module}_whl_")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(dest)
    sys.path.insert(0, dest)
    for mod in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        del sys.modules[mod]


def _version(dist, wheel):
    if wheel is not None:
        m = re.match(r"[^-]+-([^-]+)-", os.path.basename(wheel))
        return (m.group(1) if m else "unknown") + f" (from {os.path.basename(wheel)})"
    try:
        return md.version(dist)
    except Exception:
        return "unknown"


def load_peer(name, importer, whl_dir=None) -> Peer:
    """``importer()`` -> {entry name: object}, as installed, else from the newest wheel of
    ``name`` in ``whl_dir``; never raises."""
    dist, prefix, module = DISTRIBUTIONS[name]
    try:
        return Peer(name, importer(), _version(dist, None))
    except Exception as first:
        wheel = newest_wheel(whl_dir, prefix)
        if wheel is None:
            return Peer(name, why_not=f"not importable ({type(first).__name__}: {first}); "
                        f"pip install {dist}")  # fmt: skip
        try:
            _unpack(wheel, module)
            return Peer(name, importer(), _version(dist, wheel))
        except Exception as e:
            return Peer(name, why_not=f"not importable from {wheel}: {type(e).__name__}: {e}")


def _import_liger() -> dict:
    from liger_kernel.ops.grpo_loss import fused_selective_log_softmax

    out = {"fused_selective_log_softmax": fused_selective_log_softmax}
    try:
        from liger_kernel.transformers.grpo_loss import triton_grpo_loss
    except Exception:  # the transformers side of Liger failed to import: the same kernel
        from liger_kernel.ops.grpo_loss import GrpoLossFunction

        def triton_grpo_loss(logits, old_logp, ref_logp, completion_ids, advantages,
                             completion_mask=None, temperature=0.9, beta=0.04, eps_low=0.2,
                             eps_high=0.4, inplace=True, loss_type="dapo",
                             reduce=False):  # fmt: skip
            res = GrpoLossFunction.apply(logits, old_logp, ref_logp, completion_ids, advantages,
                                         completion_mask, temperature, beta, eps_low, eps_high,
                                         inplace, loss_type, None, reduce)  # fmt: skip
            return (res[0], list(res[1:])) if reduce else res

    out["triton_grpo_loss"] = triton_grpo_loss
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

        out["LigerFusedLinearGRPOLoss"] = LigerFusedLinearGRPOLoss
    except Exception:  # older Liger: the logits kernels only
        pass
    return out


def _import_trl() -> dict:
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    out = {"ChunkedLogProbFunction": ChunkedLogProbFunction}
    try:  # the vocabulary tile width TRL's trainers use
        from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

        out["chunk_size"] = int(_CHUNKED_LOGPROB_CHUNK_SIZE)
    except Exception:
        out["chunk_size"] = 32768
    return out


def _import_cce() -> dict:
    from cut_cross_entropy import linear_cross_entropy

    return {"linear_cross_entropy": linear_cross_entropy}


IMPORTERS = {"liger": _import_liger, "trl": _import_trl, "cce": _import_cce}


def load_peers(whl_dir=None, disabled=()) -> dict:
    """``{name: Peer}`` for every peer of :data:`DISTRIBUTIONS` (``disabled``: not loaded)."""
    return {name: Peer(name, why_not="disabled (--no-peers)") if name in disabled
            else load_peer(name, IMPORTERS[name], whl_dir)
            for name in DISTRIBUTIONS}  # fmt: skip
