"""Per-sequence span sums of the per-token log-probs, in a fixed order (one program per sequence).

``sum_z[b] = sum_{t in b, span_t = RATIONALE} v_t`` and ``sum_y[b]`` likewise over the answer
span, in blocks of ``SUM_BLOCK_T`` tokens aligned to the sequence's first token: bitwise
independent of the rest of the batch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import INTERPRET, SPAN_ANSWER, SPAN_RATIONALE, vsum

#: block of tokens of the per-sequence sum (fixed: the sum order must not depend on the batch)
SUM_BLOCK_T = 256


@triton.jit
def _segsum_kernel(
    VALS,  # [N] fp32 per-token values
    SPAN,  # [N] int8 span codes
    CU,  # [B + 1] int64 sequence boundaries
    OUT_Z,  # [B] fp32 rationale sums
    OUT_Y,  # [B] fp32 answer sums
    BLOCK_T: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    start = tl.load(CU + b)
    end = tl.load(CU + b + 1)
    acc_z = 0.0
    acc_y = 0.0
    for s0 in range(start, end, BLOCK_T):
        idx = s0 + tl.arange(0, BLOCK_T)
        m = idx < end
        v = tl.load(VALS + idx, mask=m, other=0.0)
        code = tl.load(SPAN + idx, mask=m, other=0)
        acc_z += vsum(tl.where(code == SPAN_RATIONALE, v, 0.0))
        acc_y += vsum(tl.where(code == SPAN_ANSWER, v, 0.0))
    tl.store(OUT_Z + b, acc_z)
    tl.store(OUT_Y + b, acc_y)


def segment_sums(values, layout):
    """Per-sequence rationale / answer sums of ``values [N]`` (fp32), fixed order per sequence."""
    B = layout.num_sequences
    out_z = torch.zeros(B, dtype=torch.float32, device=values.device)
    out_y = torch.zeros(B, dtype=torch.float32, device=values.device)
    if B == 0 or layout.num_tokens == 0:
        return out_z, out_y
    _segsum_kernel[(B,)](values.to(torch.float32).contiguous(), layout.span, layout.cu_seqlens,
                         out_z, out_y, BLOCK_T=SUM_BLOCK_T,
                         num_warps=1 if INTERPRET else 4)  # fmt: skip
    return out_z, out_y
