"""Triton kernels of :mod:`kernels`, one module per kernel family (``kernels/README.md``).

* :mod:`.forward` - per-row log-prob, logsumexp, entropy (2 bytes/element).
* :mod:`.backward` - their gradient (4 bytes/element), and the upstream-scalar scaling.
* :mod:`.fused_row` - fused forward + gradient, one program per row: ``row``, ``row_rev``.
* :mod:`.fused_split` - fused, several programs per row: ``split``, ``split_2pass``, ``multi``.
* :mod:`.segsum` - per-sequence span sums in a fixed order.

Imported lazily (by :mod:`kernels.ops` on the first Triton call), because whether
``@triton.jit`` builds a compiled or an interpreted kernel is decided at import: set
``TRITON_INTERPRET=1`` before that to run the kernels on CPU tensors. The launchers below take
already-validated tensors and never synchronise with the host.
"""

from __future__ import annotations

import torch

from ..dispatch import FUSED_VARIANTS
from ._common import INTERPRET, INTERPRET_BLOCK_V, autotune_enabled
from .backward import backward_rows, scale_
from .forward import SELECT_ACTIVE, SELECT_ALL, SELECT_ANSWER, forward_rows
from .fused_row import launch_fused_row
from .fused_split import launch_fused_split, programs_per_row, split_falls_back
from .segsum import SUM_BLOCK_T, segment_sums

__all__ = [
    "FUSED_VARIANTS",
    "INTERPRET",
    "INTERPRET_BLOCK_V",
    "SELECT_ACTIVE",
    "SELECT_ALL",
    "SELECT_ANSWER",
    "SUM_BLOCK_T",
    "autotune_enabled",
    "backward_rows",
    "forward_rows",
    "fused_rows",
    "launch_fused_row",
    "launch_fused_split",
    "programs_per_row",
    "scale_",
    "segment_sums",
    "split_falls_back",
]


def fused_rows(
    x3,
    ids,
    span,
    g_tok,
    inv_temp,
    with_entropy,
    out3,
    norm_in=None,
    ent_in=None,
    variant="row",
    block_v=None,
    nprog=None,
    max_spin=None,
):
    """One visit per row: per-row logp (and entropy) and the gradient ``g (onehot - p) / tau``.

    ``x3 [B, T, V]`` logits; ``ids [N]`` int64 in [0, V); ``span [N]`` int8 codes; ``g_tok [N]``
    = dL/dlogp per token (0 at ignored rows); ``out3``: gradient out (may alias ``x3``: in
    place). ``norm_in [2, N]`` (row maximum, log s) / ``ent_in``: values of the answer rows
    already scored (likelihood mode; those rows are not swept again). ``variant``: one of
    :data:`FUSED_VARIANTS`; ``block_v``: fixed block width (no autotuning); ``nprog``:
    programs per row of ``multi``.

    Returns ``(logp [N], entropy [N] or None, err [1] int32)``; ``err`` counts the cooperative
    waits that timed out (split/multi; the results are the same bits, see
    :mod:`.fused_split`). Ignored rows get logp 0 and a zero gradient.
    """
    if variant not in FUSED_VARIANTS:
        raise ValueError(f"variant must be one of {FUSED_VARIANTS}, got {variant!r}")
    B, T, V = x3.shape
    N = B * T
    dev = x3.device
    logp = torch.zeros(N, dtype=torch.float32, device=dev)
    ent = torch.zeros(N, dtype=torch.float32, device=dev) if with_entropy else logp
    err = torch.zeros(1, dtype=torch.int32, device=dev)
    if N == 0:
        return logp, (ent if with_entropy else None), err
    g_tok = g_tok.to(torch.float32).contiguous()
    if norm_in is not None:
        norm_in = norm_in.to(torch.float32).contiguous()
    if variant in ("row", "row_rev"):
        launch_fused_row(x3, ids, span, g_tok, norm_in, inv_temp, logp, ent, out3,
                         with_entropy=with_entropy, reverse=variant == "row_rev",
                         block_v=block_v)  # fmt: skip
    else:
        launch_fused_split(x3, ids, span, g_tok, norm_in, inv_temp, logp, ent, out3, err,
                    with_entropy=with_entropy, variant=variant, block_v=block_v, nprog=nprog,
                    max_spin=max_spin)  # fmt: skip
    if norm_in is not None and with_entropy and ent_in is not None:
        # rows whose normaliser came in were not written by the kernel: keep the first pass's values
        from ..layout import ANSWER

        ent = torch.where(span == ANSWER, ent_in.to(torch.float32), ent)
    return logp, (ent if with_entropy else None), err
