"""One handler per case kind (:data:`HANDLERS`): build the call, check its outputs once with
:mod:`.checks`, return what to time (:class:`.timing.TimingSpec`, or None when the case is
not timed or was skipped: then ``row["skipped"]`` says why).

A handler's signature is ``handler(bench, case, row) -> TimingSpec | None``; it appends its
checks to ``row["checks"]`` and may record facts about the call in ``row`` (``ran_as``,
``timeouts``, ``variant_dispatched``). On the GPU every implementation is called once before
the call whose outputs are checked, so that the autotuner has picked the config that is then
timed.
"""

from __future__ import annotations

import gc

from .checks import Criteria, bitwise, check_fused, check_linear, check_sums, check_tokens
from .timing import TimingSpec
from .workloads import Data, LinearData, make_data, make_linear_data, make_rule, sub_layout

HANDLERS: dict = {}


def handler(kind):
    def deco(fn):
        HANDLERS[kind] = fn
        return fn

    return deco


class Bench:
    """What every handler shares: the device, the criteria, the peers, the workload cache."""

    def __init__(self, dev: str, smoke: bool, peers: dict, step: int = 1):
        self.dev, self.smoke, self.peers, self.step = dev, smoke, peers, step
        self.cuda = dev == "cuda"
        self.crit = Criteria(interpreter=smoke)
        self.data: dict = {}

    def get(self, w) -> Data | LinearData:
        """The tensors of workload ``w`` (built on first use)."""
        if w.key not in self.data:
            from .registry import LinearWorkload

            make = make_linear_data if isinstance(w, LinearWorkload) else make_data
            self.data[w.key] = make(w, self.dev)
        return self.data[w.key]

    def drop_except(self, keep_keys):
        """Free every cached workload not in ``keep_keys``."""
        for k in [k for k in self.data if k not in keep_keys]:
            del self.data[k]
        self.free()

    def free(self):
        gc.collect()
        if self.cuda:
            import torch

            torch.cuda.empty_cache()

    def warm(self, fn):
        """GPU: one call before the checked one (the autotuner picks its config)."""
        if not self.smoke:
            fn()

    def bi_sequences(self, B):
        """Sequences run alone for the batch-invariance check: first and last (smoke: last)."""
        return [B - 1] if self.smoke else sorted({0, B - 1})


# ------------------------------------------------------------------------------ helpers
def floors(d: Data) -> dict:
    """Byte floors of a logits workload: forward reads the scored rows once (2 B/element in
    bf16); fused forward+backward also writes the whole gradient once."""
    es = d.logits.element_size()
    read = d.w.scored_rows * d.w.V * es
    return {"fwd": read, "fused": read + d.w.rows * d.w.V * es}


def spec(d: Data, fn, kind, held=0, restore=None) -> TimingSpec:
    f = floors(d)
    fused = kind == "fused"
    return TimingSpec(fn, f[kind], d.logits_bytes, held=held, restore=restore,
                      floor_per_elem=4 if fused else 2,
                      read=f["fwd"] if fused else None)  # fmt: skip


def ran_as(variant, V, device, block_v=None):
    """The variant the launcher actually runs: ``split`` runs as ``split_2pass`` when a row
    may have more chunks than the GPU has SMs (``kernels.triton.split_falls_back``)."""
    if variant != "split":
        return variant
    import torch

    from kernels import triton as kt

    dev = torch.device(device)
    n_sm = None
    if dev.type == "cuda":
        n_sm = torch.cuda.get_device_properties(dev).multi_processor_count
    return "split_2pass" if kt.split_falls_back(V, n_sm, block_v) else "split"


def _timeouts_check(row) -> dict:
    return {"check": "no cooperative wait timed out", "ok": not row["timeouts"],
            "timeouts": row["timeouts"]}  # fmt: skip


def _leaf(d: Data, inplace):
    """The logits leaf a case works on: the shared one, or (in place) a scratch copy and a
    function that restores it."""
    import torch

    if not inplace:
        return d.logits, None
    if d.scratch is None:
        d.scratch = d.logits.detach().clone().requires_grad_(True)

    def restore():
        with torch.no_grad():
            d.scratch.copy_(d.logits.detach())

    restore()
    return d.scratch, restore


# ------------------------------------------------------------------------------ ours, logits
@handler("copy")
def h_copy(b: Bench, case, row):
    import torch

    d = b.get(case.work)
    buf = torch.empty_like(d.logits, requires_grad=False)
    src = d.logits.detach()
    return TimingSpec(lambda: buf.copy_(src), 2 * d.logits_bytes, d.logits_bytes)


def call_fused(d: Data, x, b0, b1, variant, mode, inplace, upstream=1.0):
    """``fused_sequence_loss`` on sequences b0:b1 of ``x`` (the whole leaf when the range is
    the full batch), gradient of ``upstream * loss``: returns (FusedLoss, grad)."""
    import torch

    from kernels import fused_sequence_loss

    full = (b0, b1) == (0, d.w.B)
    xs = x if full else x[b0:b1].detach().clone().requires_grad_(True)
    lay = d.layout if full else sub_layout(d, b0, b1)
    c = d.c[b0:b1]
    coefs = make_rule(c, d.w.answer_len) if mode == "likelihood" else (c, c)
    res = fused_sequence_loss(
        xs, d.ids[b0:b1], lay, coefs, normalizer=d.norm, temperature=d.w.temperature,
        inplace_grad=inplace, impl="triton", variant=variant,
    )  # fmt: skip
    loss = res.loss if upstream == 1.0 else res.loss * upstream
    (gx,) = torch.autograd.grad(loss, xs)
    return res, gx


@handler("fused")
def h_fused(b: Bench, case, row):
    d = b.get(case.work)
    x, restore = _leaf(d, case.inplace)
    B = d.w.B

    def call():
        return call_fused(d, x, 0, B, case.variant, case.mode, case.inplace, case.upstream)

    if case.variant is None:
        from kernels import choose_variant

        row["variant_dispatched"] = choose_variant(d.w.V)
    timed = spec(d, lambda: call()[1], "fused", held=0 if case.inplace else d.logits_bytes,
                 restore=restore)  # fmt: skip
    if not (case.check or case.batch_invariance):
        return timed  # timed only: case.checked_by checked this configuration
    b.warm(call)
    if restore:
        restore()
    res, gx = call()
    gx = gx.clone() if case.inplace else gx
    row["timeouts"] = int(res.timeouts) if res.timeouts is not None else None
    row["ran_as"] = ran_as(case.variant or row.get("variant_dispatched"), d.w.V, d.logits.device)
    checks = row.setdefault("checks", [])
    if case.check:
        checks += check_fused(d, b.crit, case.mode, gx, res.logp_z, res.logp_y, step=b.step,
                              upstream=case.upstream)  # fmt: skip
        if restore:
            restore()
        res2, gx2 = call()
        checks.append(bitwise("repeatable (bitwise: loss, logp_z, logp_y, grad)",
                              [(res.loss.detach(), res2.loss.detach()),
                               (res.logp_z, res2.logp_z), (res.logp_y, res2.logp_y),
                               (gx, gx2)]))  # fmt: skip
        del res2, gx2
        if not b.smoke:  # the interpreter runs programs one by one: its waits time out
            checks.append(_timeouts_check(row))
    if case.batch_invariance:
        pairs = []
        for s in b.bi_sequences(B):
            one, g1 = call_fused(d, d.logits, s, s + 1, case.variant, case.mode, False,
                                 case.upstream)  # fmt: skip
            pairs += [(one.logp_z[0], res.logp_z[s]), (one.logp_y[0], res.logp_y[s])]
            if not case.inplace:
                pairs.append((g1[0], gx[s]))
        checks.append(bitwise("batch invariant (bitwise: sequence alone vs in the batch)",
                              pairs))  # fmt: skip
    del res, gx
    return timed


def _call_fwd(d: Data, b0, b1):
    import torch

    from kernels import sequence_logprobs

    full = (b0, b1) == (0, d.w.B)
    lay = d.layout if full else sub_layout(d, b0, b1)
    with torch.no_grad():
        return sequence_logprobs(d.logits[b0:b1].detach(), d.ids[b0:b1], lay,
                                 temperature=d.w.temperature, impl="triton")  # fmt: skip


@handler("fwd")
def h_fwd(b: Bench, case, row):
    d = b.get(case.work)
    B = d.w.B
    b.warm(lambda: _call_fwd(d, 0, B))
    out = _call_fwd(d, 0, B)
    tok = out.token_logp.view(B, -1)
    checks = row.setdefault("checks", [])
    if case.check:
        checks += check_tokens(d, tok, step=b.step)
        checks += check_sums(d, out.logp_z, out.logp_y, step=b.step)
        out2 = _call_fwd(d, 0, B)
        checks.append(bitwise("repeatable (bitwise: logp_z, logp_y, token logp)",
                              [(out.logp_z, out2.logp_z), (out.logp_y, out2.logp_y),
                               (out.token_logp, out2.token_logp)]))  # fmt: skip
    if case.batch_invariance:
        pairs = []
        for s in b.bi_sequences(B):
            one = _call_fwd(d, s, s + 1)
            pairs += [(one.logp_z[0], out.logp_z[s]), (one.token_logp, tok[s])]
        checks.append(bitwise("batch invariant (bitwise: sequence alone vs in the batch)",
                              pairs))  # fmt: skip
    return spec(d, lambda: _call_fwd(d, 0, B), "fwd")


def kernel_args(d: Data):
    """Prepared launcher arguments: [B, T+1, V] rows, clean ids, span codes, dL/dlogp."""
    import torch

    from kernels.reference import as_rows

    x3 = as_rows(d.logits.detach())
    span = d.layout.span.to(d.logits.device)
    ids = torch.where(d.active.reshape(-1), d.ids.reshape(-1), 0).contiguous()
    seq = torch.arange(d.w.B, device=d.logits.device).repeat_interleave(d.w.T + 1)
    g_tok = torch.where(span != 0, -d.c[seq] / d.norm, 0.0).float().contiguous()
    return x3, ids, span, g_tok


@handler("kernel_fwd")
def h_kernel_fwd(b: Bench, case, row):
    from kernels import triton as kt

    d = b.get(case.work)
    x3, ids, span, _ = kernel_args(d)
    inv = 1.0 / d.w.temperature

    def call():
        return kt.forward_rows(x3, ids, inv, False, span=span, select=kt.SELECT_ACTIVE)[0]

    b.warm(call)
    lp = call()
    if case.check:
        checks = row.setdefault("checks", [])
        checks += check_tokens(d, lp.view(d.w.B, -1), step=b.step)
        checks.append(bitwise("repeatable (bitwise)", [(lp, call())]))
    return spec(d, call, "fwd")


@handler("kernel_fused")
def h_kernel_fused(b: Bench, case, row):
    import torch

    from kernels import triton as kt

    d = b.get(case.work)
    x3, ids, span, g_tok = kernel_args(d)
    out3 = torch.empty_like(x3)
    inv = 1.0 / d.w.temperature

    def call():
        return kt.fused_rows(x3, ids, span, g_tok, inv, False, out3, variant=case.variant)

    b.warm(call)
    logp, _, err = call()
    row["timeouts"] = int(err.sum())
    row["ran_as"] = ran_as(case.variant, d.w.V, x3.device)
    checks = row.setdefault("checks", [])
    if not b.smoke:
        checks.append(_timeouts_check(row))
    if case.check:
        gx = out3.clone()
        checks += check_fused(d, b.crit, "verifier", gx, step=b.step)
        checks += check_tokens(d, logp.view(d.w.B, -1), step=b.step)
        call()
        checks.append(bitwise("repeatable (bitwise: grad)", [(gx, out3)]))
        del gx
    return spec(d, call, "fused")


@handler("two_pass")
def h_two_pass(b: Bench, case, row):
    import torch

    from kernels import sequence_logprobs

    d = b.get(case.work)
    x = d.logits

    def call():
        o = sequence_logprobs(x, d.ids, d.layout, temperature=d.w.temperature, impl="triton")
        loss = -(d.c * (o.logp_z + o.logp_y)).sum() / d.norm
        return torch.autograd.grad(loss, x)[0]

    b.warm(call)
    gx = call()
    if case.check:
        checks = row.setdefault("checks", [])
        checks += check_fused(d, b.crit, "verifier", gx, step=b.step)
        checks.append(bitwise("repeatable (bitwise: grad)", [(gx, call())]))
    del gx
    return spec(d, call, "fused", held=d.logits_bytes)


# ------------------------------------------------------------------------------ peers, logits
def _liger_inputs(d: Data):
    T = d.w.T
    return d.ids[:, :T].contiguous(), d.active[:, :T].int().contiguous()


def _peer_entry(b: Bench, peer, key, row):
    fn = b.peers[peer].get(key)
    if fn is None:
        row["skipped"] = b.peers[peer].reason(key)
    return fn


@handler("liger_fwd")
def h_liger_fwd(b: Bench, case, row):
    import torch

    sel = _peer_entry(b, "liger", "fused_selective_log_softmax", row)
    if sel is None:
        return None
    d = b.get(case.work)
    ids, mask = _liger_inputs(d)
    src = d.logits.detach()

    def call():
        return sel(src, ids, d.w.temperature, mask)

    lp = call()
    if case.check:
        tok = torch.zeros(d.w.B, d.w.T + 1, dtype=lp.dtype, device=lp.device)
        tok[:, : d.w.T] = lp
        row.setdefault("checks", []).extend(check_tokens(d, tok, step=b.step))
    return spec(d, call, "fwd")


@handler("liger_grpo")
def h_liger_grpo(b: Bench, case, row):
    import torch

    grpo = _peer_entry(b, "liger", "triton_grpo_loss", row)
    if grpo is None:
        return None
    d = b.get(case.work)
    ids, mask = _liger_inputs(d)
    x, restore = _leaf(d, case.inplace)

    def call():
        loss = grpo(x, None, None, ids, d.adv, completion_mask=mask,
                    temperature=d.w.temperature, beta=0.0, inplace=case.inplace,
                    loss_type="grpo", reduce=True)[0]  # fmt: skip
        return torch.autograd.grad(loss, x)[0]

    gx = call()
    if case.check:
        # the same gradient as ours: dL/dlogp_t = -adv_b / (n_b B) = -c_b / norm
        g = gx.clone() if case.inplace else gx
        row.setdefault("checks", []).extend(check_fused(d, b.crit, "verifier", g, step=b.step))
    del gx
    held = 0 if case.inplace else d.logits_bytes
    return spec(d, call, "fused", held=held, restore=restore)


def _naive(d: Data):
    T = d.w.T
    ids = d.ids[:, :T].contiguous()
    act = d.active[:, :T]
    coef = (d.c[:, None] * act).float()
    tau = d.w.temperature

    def fwd(z):
        u = z[:, :-1].float() / tau
        return u.log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1) * act

    def loss(z):
        u = z[:, :-1].float() / tau
        lp = u.log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        return -(lp * coef).sum() / d.norm

    return fwd, loss


def _peer_fwd(b: Bench, case, row, fwd):
    import torch

    d = b.get(case.work)
    src = d.logits.detach()

    def call():
        with torch.no_grad():
            return fwd(src)

    lp = call()
    if case.check:
        tok = torch.zeros(d.w.B, d.w.T + 1, dtype=lp.dtype, device=lp.device)
        tok[:, : d.w.T] = lp
        row.setdefault("checks", []).extend(check_tokens(d, tok, step=b.step))
    return spec(d, call, "fwd")


def _peer_fused(b: Bench, case, row, loss):
    import torch

    d = b.get(case.work)
    x = d.logits

    def call():
        return torch.autograd.grad(loss(x), x)[0]

    gx = call()
    if case.check:
        row.setdefault("checks", []).extend(check_fused(d, b.crit, "verifier", gx, step=b.step))
    del gx
    return spec(d, call, "fused", held=d.logits_bytes)


@handler("naive_fwd")
def h_naive_fwd(b: Bench, case, row):
    return _peer_fwd(b, case, row, _naive(b.get(case.work))[0])


@handler("naive_fused")
def h_naive_fused(b: Bench, case, row):
    return _peer_fused(b, case, row, _naive(b.get(case.work))[1])


@handler("compile_fwd")
def h_compile_fwd(b: Bench, case, row):
    import torch

    return _peer_fwd(b, case, row, torch.compile(_naive(b.get(case.work))[0], dynamic=False))


@handler("compile_fused")
def h_compile_fused(b: Bench, case, row):
    import torch

    return _peer_fused(b, case, row, torch.compile(_naive(b.get(case.work))[1], dynamic=False))


# ------------------------------------------------------------------------------ hidden states
def linear_loss_fn():
    """``kernels.fused_linear_sequence_loss``, or None with the reason."""
    try:
        from kernels import fused_linear_sequence_loss
    except ImportError as e:
        return None, f"kernels.fused_linear_sequence_loss is not importable ({e})"
    return fused_linear_sequence_loss, None


def linear_spec(ld: LinearData, fn) -> TimingSpec:
    """Hidden-state losses are GEMM bound: the floor is reading hidden and weight and writing
    their gradients once; ``flops`` counts the three GEMMs of one forward + backward
    (``Z = H W^T``, ``dH = G W``, ``dW = G^T H``: 6 N H V), the same count for every
    implementation, so ``TFLOPs`` compares like for like (TRL, Liger and cut-cross-entropy
    recompute Z in the backward and do 8 N H V)."""
    N, H = ld.hidden.shape
    V = ld.weight.shape[0]
    io = 2 * (N * H + V * H) * ld.hidden.element_size()
    # held=None: the gradients each implementation returns (in its own dtype) are not extra
    return TimingSpec(fn, io, ld.logits_bytes, held=None, flops=6.0 * N * H * V)


def _linear_case(b: Bench, case, row, call, *, sums=None, own=False):
    """Shared body of the hidden-state handlers: warm, check ``call()``'s ``(d_hidden,
    d_weight)`` (and, for ours, the sums and token log-probs), repeat bitwise (ours)."""
    ld = b.get(case.work)
    b.warm(call)
    out = call()
    gh, gw = out[0], out[1]
    checks = row.setdefault("checks", [])
    if case.check:
        extra = sums(out) if sums is not None else {}
        checks += check_linear(ld, case.mode, gh, gw, upstream=case.upstream, **extra)
        if own:
            again = call()
            checks.append(bitwise("repeatable (bitwise: d_hidden, d_weight)",
                                  [(gh, again[0]), (gw, again[1])]))  # fmt: skip
            del again
    del out, gh, gw
    return linear_spec(ld, lambda: call()[:2])


@handler("linear")
def h_linear(b: Bench, case, row):
    import torch

    fn, why = linear_loss_fn()
    if fn is None:
        row["skipped"] = why
        return None
    ld = b.get(case.work)
    coefs = make_rule(ld.c, ld.w.answer_len) if case.mode == "likelihood" else (ld.c, ld.c)
    leaves = (ld.hidden, ld.weight)

    def call():
        res = fn(ld.hidden, ld.weight, ld.ids, ld.layout, coefs, normalizer=ld.norm,
                 impl="triton")
        loss = res.loss if case.upstream == 1.0 else res.loss * case.upstream
        gh, gw = torch.autograd.grad(loss, leaves)
        return gh, gw, res

    def sums(out):
        res = out[2]
        return {"z": res.logp_z, "y": res.logp_y, "token_logp": res.token_logp}

    return _linear_case(b, case, row, call, sums=sums, own=True)


@handler("liger_linear")
def h_liger_linear(b: Bench, case, row):
    import torch

    cls = _peer_entry(b, "liger", "LigerFusedLinearGRPOLoss", row)
    if cls is None:
        return None
    ld = b.get(case.work)
    B, T, H = ld.w.B, ld.w.T, ld.w.H
    # on-policy GRPO with beta 0: per-token weight adv_b / (n_b B), our verifier-mode loss
    mod = cls(beta=0.0, use_ref_model=False, loss_type="grpo", temperature=1.0)
    ids, mask = ld.ids.view(B, T), ld.active.float()  # as Liger's own tests pass it
    leaves = (ld.hidden, ld.weight)

    def call():
        out = mod(ld.hidden.view(B, T, H), ld.weight, ids, mask, ld.adv)
        loss = out[0] if isinstance(out, (tuple, list)) else out
        return torch.autograd.grad(loss, leaves)

    return _linear_case(b, case, row, call)


@handler("trl_chunked")
def h_trl_chunked(b: Bench, case, row):
    import torch

    fn = _peer_entry(b, "trl", "ChunkedLogProbFunction", row)
    if fn is None:
        return None
    ld = b.get(case.work)
    chunk = b.peers["trl"].get("chunk_size")
    mask = ld.active.reshape(-1)
    coef = ld.coef_tok[mask]
    leaves = (ld.hidden, ld.weight)

    def call():
        # as TRL's trainers call it: only the scored rows, no optional outputs
        lp = fn.apply(ld.hidden[mask], ld.weight, None, ld.ids[mask], 1.0, chunk, None, 1.0, ())
        loss = -(coef * lp[0].float()).sum() / ld.norm
        return torch.autograd.grad(loss, leaves)

    row["params"] = {"chunk_size": chunk}
    return _linear_case(b, case, row, call)


@handler("cce")
def h_cce(b: Bench, case, row):
    import torch

    lce = _peer_entry(b, "cce", "linear_cross_entropy", row)
    if lce is None:
        return None
    ld = b.get(case.work)
    mask = ld.active.reshape(-1)
    targets = torch.where(mask, ld.ids, torch.full_like(ld.ids, -100))
    coef = ld.coef_tok
    leaves = (ld.hidden, ld.weight)

    def call():
        # its per-token loss is -logp: L = sum_t coef_t nll_t / norm (its default options)
        nll = lce(ld.hidden, ld.weight, targets, reduction="none")
        loss = torch.where(mask, coef * nll.float(), 0.0).sum() / ld.norm
        return torch.autograd.grad(loss, leaves)

    return _linear_case(b, case, row, call)
