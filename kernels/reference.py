"""Plain-torch reference path: the CPU implementation and, in float64, the test oracle.

Math (per row t of the logits, temperature tau, u = z / tau):

    lse_t  = log sum_v exp(u_tv)
    logp_t = u_t[id_t] - lse_t                      (log-prob of the given token)
    H_t    = lse_t - sum_v softmax(u_t)_v * u_tv    (entropy of the row's distribution)

Shift invariance: every formula is evaluated on the shifted row ``u - m_t`` (``m_t`` the row
maximum; the subtraction is exact for the entries that matter), with ``m_t`` and ``log s_t``
(``s_t = sum_v exp(u_tv - m_t)``) kept apart and never added up:

    logp_t = (u_t[id_t] - m_t) - log s_t,   p_tv = exp((u_tv - m_t) - log s_t),
    H_t    = log s_t - sum_v exp(u_tv - m_t) (u_tv - m_t) / s_t

so the rounding error does not grow with the size of the logits (``m + log s`` rounded to
fp32 at ``m = 1e5`` is off by up to 4e-3). The row's normaliser travels as ``norm [2, N]``:
``norm[0] = m``, ``norm[1] = log s`` (``lse = m + log s`` only where a caller wants it).

Backward, for upstream gradients g_t = dL/dlogp_t and e_t = dL/dH_t (p = softmax(u_t)):

    dL/dz_tv = (1/tau) * [ g_t * (1[v = id_t] - p_v)  -  e_t * p_v * (u_tv - lse_t + H_t) ]

The logits are visited in row chunks (``CHUNK_ELEMENTS`` to ``MAX_CHUNK_ELEMENTS`` elements,
about 1/16 of the rows), so an fp32 copy of the whole ``[N, V]`` logits never exists: the extra
memory is two chunk-sized work buffers plus ``[N]`` vectors (and the one gradient buffer that
autograd needs anyway). float64 logits are computed in float64
(that is the oracle); every other dtype is accumulated in float32.

Bytes moved (bf16 logits): forward reads the logits once (2 B/elem); backward reads them again
and writes the gradient (4 B/elem). The naive ``logits.float().log_softmax(-1).gather(...)``
materialises two fp32 copies in the forward and two more in the backward.
"""

from __future__ import annotations

import torch

from .layout import ANSWER, RATIONALE, TokenLayout

#: minimum elements of logits per row chunk (2 Mi elements = 8 MiB in fp32)
CHUNK_ELEMENTS = 1 << 21
#: maximum elements per chunk (16 Mi = 64 MiB in fp32); between the two bounds a call uses
#: about ``TARGET_CHUNKS`` chunks, because every torch op on a chunk pays a fixed intra-op
#: thread fork/join cost that dominates small chunks on busy machines
MAX_CHUNK_ELEMENTS = 1 << 24
TARGET_CHUNKS = 16

__all__ = [
    "CHUNK_ELEMENTS",
    "shifted_row_stats_",
    "acc_dtype",
    "as_rows",
    "backward_rows",
    "forward_rows",
    "naive_logp_entropy",
    "segment_sums",
]


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 logits (the oracle), float32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def as_rows(logits: torch.Tensor) -> torch.Tensor:
    """View ``[N, V]`` as ``[1, N, V]``; ``[B, T, V]`` is returned unchanged (no copy)."""
    return logits.unsqueeze(0) if logits.dim() == 2 else logits


def _flat_ok(x3: torch.Tensor) -> bool:
    """True when the rows of ``x3 [B, T, V]`` form one strided 2-D matrix."""
    return x3.shape[0] == 1 or x3.stride(0) == x3.shape[1] * x3.stride(1)


def _chunks(x3: torch.Tensor, rows_per_chunk: int, flat: bool | None = None):
    """Yield ``(r0, r1, view)`` with ``view`` the 2-D ``[r1 - r0, V]`` rows r0:r1 (no copies).

    ``flat``: chunk across batch entries (needs :func:`_flat_ok`); default: when possible.
    """
    B, T, V = x3.shape
    if flat is None:
        flat = _flat_ok(x3)
    if flat:
        x2 = x3.as_strided((B * T, V), (x3.stride(1), x3.stride(2)))
        for r0 in range(0, B * T, rows_per_chunk):
            r1 = min(B * T, r0 + rows_per_chunk)
            yield r0, r1, x2[r0:r1]
    else:
        for b in range(B):
            for t0 in range(0, T, rows_per_chunk):
                t1 = min(T, t0 + rows_per_chunk)
                yield b * T + t0, b * T + t1, x3[b, t0:t1]


def _rows_per_chunk(V: int, N: int | None = None) -> int:
    lo = max(1, CHUNK_ELEMENTS // max(V, 1))
    if N is None:
        return lo
    hi = max(lo, MAX_CHUNK_ELEMENTS // max(V, 1))
    return min(max(lo, -(-N // TARGET_CHUNKS)), hi)


def _work(rows_per_chunk: int, V: int, acc: torch.dtype, device, n: int):
    """``n`` reusable ``[rows_per_chunk, V]`` work buffers (allocated once per call)."""
    return [torch.empty((rows_per_chunk, V), dtype=acc, device=device) for _ in range(n)]


def forward_rows(
    x3: torch.Tensor,
    ids: torch.Tensor,
    inv_temp: float,
    with_entropy: bool,
    active: torch.Tensor | None = None,
):
    """Per-row ``(logp [N], norm [2, N], entropy [N] or None)``; inactive rows get logp 0.

    ``x3``: logits ``[B, T, V]`` (any strides); ``ids``: ``[N]`` int64 in [0, V). ``norm``:
    the row maximum ``m`` and ``log s`` (module docstring), kept apart for shift invariance.
    Work memory: two ``[chunk, V]`` buffers in the accumulation dtype, reused for every chunk
    (in-place ops only: a fresh allocation per chunk would page-fault on every call).
    """
    B, T, V = x3.shape
    N = B * T
    acc = acc_dtype(x3.dtype)
    logp = torch.zeros(N, dtype=acc, device=x3.device)
    norm = torch.zeros(2, N, dtype=acc, device=x3.device)
    ent = torch.zeros(N, dtype=acc, device=x3.device) if with_entropy else None
    if N == 0:
        return logp, norm, ent
    rpc = min(_rows_per_chunk(V, N), N)
    ubuf, ebuf = _work(rpc, V, acc, x3.device, 2)
    for r0, r1, rows in _chunks(x3, rpc):
        n = r1 - r0
        u = ubuf[:n]
        u.copy_(rows)
        if inv_temp != 1.0:
            u.mul_(inv_temp)
        c_lp, c_m, c_ls, c_ent = shifted_row_stats_(u, ids[r0:r1], with_entropy, ebuf[:n])
        logp[r0:r1] = c_lp
        norm[0, r0:r1] = c_m
        norm[1, r0:r1] = c_ls
        if with_entropy:
            ent[r0:r1] = c_ent
    if active is not None:
        zero = torch.zeros((), dtype=acc, device=x3.device)
        logp = torch.where(active, logp, zero)
        if ent is not None:
            ent = torch.where(active, ent, zero)
    return logp, norm, ent


def shifted_row_stats_(u: torch.Tensor, ids: torch.Tensor, with_entropy: bool,
                       work: torch.Tensor | None = None):  # fmt: skip
    """``(logp, m, log_s, entropy or None)`` of the rows of ``u [n, V]``, shift invariant.

    ``logp = (u[id] - m) - log s`` and ``H = log s - sum exp(u - m) (u - m) / s`` (module
    docstring). Overwrites ``u`` with ``u - m`` (``work``, same shape, receives the
    exponentials and is clobbered; allocated when None). A row of all ``-inf`` gets ``m = 0``
    (no ``inf - inf``) and ``log s = -inf``.
    """
    m = u.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    u.sub_(m)  # exact for every entry within a factor 2 of m; the rest underflow in exp anyway
    e = torch.exp(u, out=work) if work is not None else torch.exp(u)
    s = e.sum(dim=-1, keepdim=True)
    log_s = s.log()
    logp = (u.gather(1, ids[:, None]) - log_s).squeeze(1)
    ent = None
    if with_entropy:
        # terms with exp(u - m) = 0 contribute 0, also where u = -inf (0 * -inf = NaN -> 0);
        # u itself stays intact for a gradient computed after this
        t = e.mul_(u).nan_to_num_(nan=0.0).sum(dim=-1, keepdim=True)
        ent = (log_s - t / s).squeeze(1)
    return logp, m.squeeze(1), log_s.squeeze(1), ent


def backward_rows(
    x3: torch.Tensor,
    ids: torch.Tensor,
    norm: torch.Tensor,
    ent: torch.Tensor | None,
    g_lp: torch.Tensor,
    g_ent: torch.Tensor | None,
    inv_temp: float,
    out3: torch.Tensor,
) -> torch.Tensor:
    """Write dL/dlogits into ``out3`` (same shape as ``x3``; may alias it for in-place).

    ``norm [2, N]``: the forward's row maximum and ``log s``; ``g_lp [N]``, ``g_ent [N]``:
    upstream gradients of the per-row log-prob and entropy.
    Rows whose upstream gradients are both zero (ignored rows) get a gradient of exactly 0,
    whatever their logits hold (also inf/NaN).
    """
    B, T, V = x3.shape
    N = B * T
    if N == 0:
        return out3
    acc = acc_dtype(x3.dtype)
    g_lp = g_lp.to(acc)
    g_ent = None if g_ent is None else g_ent.to(acc)
    norm = norm.to(acc)
    rpc = min(_rows_per_chunk(V, N), N)
    flat = _flat_ok(x3) and _flat_ok(out3)  # the same chunk boundaries for both
    bufs = _work(rpc, V, acc, x3.device, 1 if g_ent is None else 2)
    ubuf, pbuf = bufs[0], bufs[-1]
    pairs = zip(_chunks(x3, rpc, flat), _chunks(out3, rpc, flat), strict=True)
    for (r0, r1, rows), (_, _, orows) in pairs:
        n = r1 - r0
        g = g_lp[r0:r1, None]
        ge = None if g_ent is None else g_ent[r0:r1, None]
        if not bool((g != 0).any()) and (ge is None or not bool((ge != 0).any())):
            orows.zero_()
            continue
        u = ubuf[:n]
        u.copy_(rows)
        if inv_temp != 1.0:
            u.mul_(inv_temp)
        u.sub_(norm[0, r0:r1, None]).sub_(norm[1, r0:r1, None])  # u <- log p, m apart
        if ge is not None:
            # dH/du_v = -p_v (log p_v + H): term = p * (log p + H), 0 where p = 0
            t = pbuf[:n]
            torch.add(u, ent[r0:r1, None].to(acc), out=t)
            u.exp_()  # u <- p
            t.masked_fill_(u == 0, 0.0).mul_(u).mul_(ge)
            u.mul_(-g)
            u.sub_(t)
        else:
            u.exp_().mul_(-g)  # u <- -g p
        u.scatter_add_(1, ids[r0:r1, None], g)
        if inv_temp != 1.0:
            u.mul_(inv_temp)
        idle = g == 0 if ge is None else (g == 0) & (ge == 0)
        u.masked_fill_(idle, 0.0)  # rows without upstream gradient: exactly 0, never NaN
        orows.copy_(u)
    return out3


#: per-sequence sums are taken over fixed blocks of this many tokens, starting at each
#: sequence's first token, then the block sums in order: batch-invariant by construction.
SUM_BLOCK = 64


def _blocked_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum the last dim of ``x [B, L]`` by fixed-size blocks (zero-padded), hierarchically."""
    while x.shape[1] > 1:
        L = x.shape[1]
        Lp = -(-L // SUM_BLOCK) * SUM_BLOCK
        if Lp != L:
            x = torch.nn.functional.pad(x, (0, Lp - L))
        x = x.view(x.shape[0], Lp // SUM_BLOCK, SUM_BLOCK).sum(-1)
    return x[:, 0] if x.shape[1] == 1 else x.new_zeros(x.shape[0])


def segment_sums(values: torch.Tensor, layout: TokenLayout):
    """Per-sequence sums of ``values [N]`` over the rationale and the answer span.

    Returns ``(sum_z [B], sum_y [B])`` in ``values``' dtype. Each sequence is summed over its
    own tokens only, by fixed blocks aligned to its first token, so the result is bitwise
    independent of the other sequences in the batch. Empty/all-masked sequences give 0.
    """
    B = layout.num_sequences
    N = layout.num_tokens
    cu = layout.cu_seqlens
    lengths = cu[1:] - cu[:-1]
    Lmax = int(lengths.max()) if B > 0 else 0
    out = []
    if B == 0:
        z = values.new_zeros(0)
        return z, z.clone()
    seq = layout.seq_index()
    pos = torch.arange(N, device=values.device) - cu[:-1].repeat_interleave(lengths, output_size=N)
    for code in (RATIONALE, ANSWER):
        pad = values.new_zeros(B, max(Lmax, 1))
        v = torch.where(layout.span == code, values, values.new_zeros(()))
        pad[seq, pos] = v
        out.append(_blocked_sum(pad))
    return out[0], out[1]


def naive_logp_entropy(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0):
    """The float64 oracle of tests and benchmarks: textbook ``log_softmax`` + ``gather``.

    ``logp = log_softmax(z / tau)[id]`` and ``H = -sum_v p_v log p_v`` (terms with p_v = 0
    count 0), both float64, shape ``logits.shape[:-1]``. Materialises float64 copies of the
    logits: for small shapes only.

    Example:
        >>> lp, h = naive_logp_entropy(torch.zeros(1, 4), torch.tensor([2]))
        >>> round(float(lp[0]), 4), round(float(h[0]), 4)
        (-1.3863, 1.3863)
    """
    u = logits.to(torch.float64) / temperature
    lsm = u.log_softmax(-1)
    logp = lsm.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    p = lsm.exp()
    ent = -(p * torch.where(p > 0, lsm, torch.zeros((), dtype=torch.float64))).sum(-1)
    return logp, ent
