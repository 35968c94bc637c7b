"""The one correctness policy of the benchmark: float64 oracles and the criteria a result is
judged by. Used by the timed cases (each checks its own output once, at the timed shape, with
the config that is then timed) and by ``tests/test_kernels_gpu.py`` (the CUDA test file), so a
configuration passes or fails by the same rule wherever it is checked.

Criteria:

- logits gradients, element by element, against low-precision torch's own error:
  ``|ours - ref| <= |torch_lowp - ref| + slack`` with ``slack`` a fraction of one unit in the
  last place of ``ref`` in the output dtype (:data:`SLACK_ULP_GPU` on the GPU, which rounds to
  nearest; one unit under the interpreter, which truncates), and on average
  ``mean |ours - ref| <= mean |torch_lowp - ref|`` (:class:`GradStats`);
- per-sequence log-prob sums: ``3e-6 * sum |logp| + 1e-3`` (:func:`sum_tol`); per-token
  log-probs ``2e-5 (1 + ln V)``;
- hidden-state losses (``d hidden``, ``d weight``, sums), normwise against a chunked torch
  yardstick in the inputs' dtype (:func:`check_linear`): the relative Frobenius error at most
  :data:`LINEAR_FACTOR` times the yardstick's plus :data:`LINEAR_FLOOR`.
"""

from __future__ import annotations

import math

from .workloads import Data, LinearData, make_rule

#: slack of the elementwise gradient criterion, in units in the last place of the reference
SLACK_ULP_GPU = 0.125
SLACK_ULP_INTERPRETER = 1.0
#: allowed ratio of our mean gradient error to low-precision torch's (interpreter: truncation)
MEAN_FACTOR_INTERPRETER = 2.0
#: fp32 gradients (no low-precision yardstick): 64 ulp, plus this fraction of max |ref|
FP32_REL_TO_MAX = 4e-6
#: hidden-state losses: allowed multiple of the yardstick's normwise error, and an absolute floor
LINEAR_FACTOR = 2.0
LINEAR_FLOOR = 1e-6

_MANTISSA_BITS = {"bfloat16": 7, "float16": 10, "float32": 23, "float64": 52}
_MIN_EXP = {"bfloat16": -126, "float16": -14, "float32": -126, "float64": -1022}


def _dt_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def ulp(ref, dtype_name: str):
    """Spacing of the ``dtype_name`` numbers at ``|ref|`` (elementwise, float64 tensor):
    ``2^(floor(log2 |ref|) - mantissa_bits)``, never below the dtype's subnormal spacing."""
    import torch

    a = ref.abs()
    _, e = torch.frexp(a)  # a = m 2^e, m in [0.5, 1); frexp(0) gives e = 0
    e = torch.where(a > 0, e.to(torch.float64) - 1, float(_MIN_EXP[dtype_name]))
    e = torch.clamp(e, min=_MIN_EXP[dtype_name])
    return torch.exp2(e - _MANTISSA_BITS[dtype_name])


class GradStats:
    """Accumulates the elementwise gradient criterion over chunks of sequences."""

    def __init__(self, dtype_name: str, slack_ulp: float, mean_factor=1.0, rel_to_max=0.0):
        self.dtype_name, self.slack_ulp = dtype_name, slack_ulp
        self.mean_factor, self.rel_to_max = mean_factor, rel_to_max
        self.n = self.n_bad = 0
        self.sum_k = self.sum_t = 0.0
        self.max_k = self.max_t = self.max_k_ulp = 0.0
        self.first_bad = None
        self.nan = False

    def add(self, got, ref, lowp, offset=0):
        """``got``: ours, ``ref``: float64 oracle, ``lowp``: torch in the logits' dtype (or None:
        then the bound is ``slack`` alone)."""
        import torch

        g = got.detach().double()
        r = ref.detach().double()
        ek = (g - r).abs()
        if not bool(torch.isfinite(g).all()):
            self.nan = True
        et = (lowp.detach().double() - r).abs() if lowp is not None else torch.zeros_like(ek)
        u = ulp(r, self.dtype_name)
        floor = self.rel_to_max * float(r.abs().max()) if r.numel() else 0.0
        bad = ek > et + self.slack_ulp * u + floor + 1e-30
        nb = int(bad.sum())
        if nb and self.first_bad is None:
            i = int(torch.nonzero(bad.reshape(-1))[0, 0])
            self.first_bad = {
                "flat_index": offset + i,
                "ours": float(g.reshape(-1)[i]),
                "ref": float(r.reshape(-1)[i]),
                "torch_lowp": None if lowp is None else float(lowp.reshape(-1)[i]),
            }
        self.n += ek.numel()
        self.n_bad += nb
        self.sum_k += float(ek.sum())
        self.sum_t += float(et.sum())
        self.max_k = max(self.max_k, float(ek.max()) if ek.numel() else 0.0)
        self.max_t = max(self.max_t, float(et.max()) if et.numel() else 0.0)
        nz = u > 0
        if bool(nz.any()):
            self.max_k_ulp = max(self.max_k_ulp, float((ek[nz] / u[nz]).max()))

    def result(self, name: str, vs_lowp: bool = True) -> dict:
        mean_k = self.sum_k / max(self.n, 1)
        mean_t = self.sum_t / max(self.n, 1)
        ok = self.n_bad == 0 and not self.nan and (
            not vs_lowp or mean_k <= mean_t * self.mean_factor
        )
        return {
            "check": name,
            "ok": ok,
            "criterion": (
                f"|ours-ref| <= |torch_{self.dtype_name}-ref| + {self.slack_ulp} ulp elementwise, "
                f"mean |ours-ref| <= {self.mean_factor} mean |torch_{self.dtype_name}-ref|"
                if vs_lowp
                else f"|ours-ref| <= {self.slack_ulp} ulp + {self.rel_to_max} max|ref| elementwise"
            ),
            "elements": self.n,
            "elements_failing": self.n_bad,
            "max_err": self.max_k,
            "max_err_torch_lowp": self.max_t if vs_lowp else None,
            "mean_err": mean_k,
            "mean_err_torch_lowp": mean_t if vs_lowp else None,
            "max_err_in_ulp": self.max_k_ulp,
            "nonfinite": self.nan,
            "first_failure": self.first_bad,
        }


def value_check(name, got, ref, tol) -> dict:
    """Absolute-error check of fp32 values against the float64 oracle (``tol`` scalar)."""
    import torch

    g = got.detach().double().reshape(-1)
    r = ref.detach().double().reshape(-1).to(g.device)
    finite = torch.isfinite(g).all()
    err = float((g - r).abs().max()) if g.numel() else 0.0
    ok = bool(finite) and err <= tol
    return {"check": name, "ok": ok, "max_err": err, "tol": tol}


def bitwise(name, pairs) -> dict:
    """``pairs``: [(a, b), ...] that must be the same bits."""
    import torch

    same = all(a.shape == b.shape and torch.equal(a, b) for a, b in pairs)
    return {"check": name, "ok": bool(same)}


def sum_tol(ref_tokens, active):
    """Tolerance of an fp32 per-sequence sum of log-probs: 3e-6 of sum |logp| (accumulated fp32
    rounding of the per-token values and of the sum) plus 1e-3."""
    return 3e-6 * float((ref_tokens.abs() * active).sum(-1).max()) + 1e-3


class Criteria:
    """The device-dependent constants of the criteria: ``interpreter`` (CPU, Triton's
    interpreter truncates its stores) or compiled GPU kernels (round to nearest)."""

    def __init__(self, interpreter: bool):
        self.interpreter = interpreter
        self.slack = SLACK_ULP_INTERPRETER if interpreter else SLACK_ULP_GPU
        self.mean_factor = MEAN_FACTOR_INTERPRETER if interpreter else 1.0


def chunks(B: int, step: int | None):
    """``[(b0, b1), ...]`` covering ``range(B)`` in steps of ``step`` sequences (None: one)."""
    step = B if step is None else step
    return [(b, min(B, b + step)) for b in range(0, B, step)]


# ------------------------------------------------------------------------ logits: oracles
def oracle_fused(d: Data, b0, b1, mode, upstream=1.0):
    """float64 oracle of sequences b0:b1: (token logp [b, T+1], z, y, grad [b, T+1, V]) of
    ``upstream * L`` (``upstream``: the scalar gradient flowing into the loss, e.g. 1 / GA)."""
    import torch

    from kernels.reference import naive_logp_entropy

    x = d.logits[b0:b1].detach().to(torch.float64).requires_grad_(True)
    lp, _ = naive_logp_entropy(x, d.ids[b0:b1], d.w.temperature)
    z = (lp * d.rat[b0:b1]).sum(1)
    y = (lp * d.ans[b0:b1]).sum(1)
    c = d.c[b0:b1].double()
    if mode == "likelihood":
        cz, cy = make_rule(c, d.w.answer_len)(y.detach())
        cz, cy = cz.double(), cy.double()
    else:
        cz = cy = c
    loss = -(cz * z + cy * y).sum() / d.norm * upstream
    (gx,) = torch.autograd.grad(loss, x)
    return lp.detach(), z.detach(), y.detach(), gx


def lowp_fused(d: Data, b0, b1, mode, upstream=1.0):
    """The same loss in plain torch in the logits' dtype (no upcast): its gradient is the
    yardstick of the elementwise criterion."""
    import torch

    x = d.logits[b0:b1].detach().clone().requires_grad_(True)
    u = x if d.w.temperature == 1.0 else x / d.w.temperature
    lp = u.log_softmax(-1).gather(-1, d.ids[b0:b1].unsqueeze(-1)).squeeze(-1).float()
    z = (lp * d.rat[b0:b1]).sum(1)
    y = (lp * d.ans[b0:b1]).sum(1)
    c = d.c[b0:b1]
    if mode == "likelihood":
        cz, cy = make_rule(c, d.w.answer_len)(y.detach())
    else:
        cz = cy = c
    loss = -(cz * z + cy * y).sum() / d.norm * upstream
    (gx,) = torch.autograd.grad(loss, x)
    return gx


# ------------------------------------------------------------------------ logits: checks
def check_fused(d: Data, crit: Criteria, mode, grad, z=None, y=None, *, step=1, upstream=1.0,
                lowp=True, name="") -> list:
    """Checks of a logits gradient ``grad [B, T+1, V]`` (and the sums ``z``, ``y`` [B] when
    given) of ``upstream * L`` against the float64 oracle, ``step`` sequences at a time."""
    import torch

    gs = GradStats(_dt_name(d.logits.dtype), crit.slack, crit.mean_factor)
    refz, refy, lps = [], [], []
    for b0, b1 in chunks(d.w.B, step):
        lp, rz, ry, rg = oracle_fused(d, b0, b1, mode, upstream)
        lg = lowp_fused(d, b0, b1, mode, upstream) if lowp else None
        gs.add(grad[b0:b1], rg, lg, offset=b0 * rg[0].numel())
        refz.append(rz)
        refy.append(ry)
        lps.append(lp)
        del rg, lg
    out = [gs.result(f"{name}grad vs float64", vs_lowp=lowp)]
    if z is not None:
        lp = torch.cat(lps)
        tol = sum_tol(lp, d.active)
        out.append(value_check(f"{name}logp_z vs float64", z, torch.cat(refz), tol))
        out.append(value_check(f"{name}logp_y vs float64", y, torch.cat(refy), tol))
    return out


def check_tokens(d: Data, logp_tokens, *, step=1, name="") -> list:
    """Per-token log-probs ``[B, T+1]`` (0 at ignored rows) against the float64 oracle."""
    from kernels.reference import naive_logp_entropy

    errs = [0.0]
    for b0, b1 in chunks(d.w.B, step):
        ref, _ = naive_logp_entropy(d.logits[b0:b1].detach(), d.ids[b0:b1], d.w.temperature)
        act = d.active[b0:b1]
        got = logp_tokens[b0:b1].double()
        errs.append(float(((got - ref).abs() * act).max()))
        if got.numel() and bool((got * ~act).abs().max() > 0):
            errs.append(float("inf"))
    err = max(errs)
    tol = 2e-5 * (1 + math.log(max(d.w.V, 2)))
    return [{"check": f"{name}token logp vs float64 (0 at ignored rows)", "ok": err <= tol,
             "max_err": err, "tol": tol}]  # fmt: skip


def check_sums(d: Data, z, y, *, step=1) -> list:
    """Per-sequence sums ``z``, ``y`` [B] against the float64 oracle."""
    import torch

    from kernels.reference import naive_logp_entropy

    lp = torch.cat([naive_logp_entropy(d.logits[b0:b1].detach(), d.ids[b0:b1],
                                       d.w.temperature)[0]
                    for b0, b1 in chunks(d.w.B, step)])  # fmt: skip
    tol = sum_tol(lp, d.active)
    return [value_check("logp_z vs float64", z, (lp * d.rat).sum(1), tol),
            value_check("logp_y vs float64", y, (lp * d.ans).sum(1), tol)]  # fmt: skip


# ------------------------------------------------------------------ hidden states: oracle
def _linear_pass(ld: LinearData, mode, dtype, rows):
    """Per-token log-probs, then the gradients, of the hidden-state loss with every product
    in ``dtype``: float64 (the oracle; logits of the stored bf16/fp32 values, exact to float64)
    or the inputs' dtype (the yardstick: logits rounded to it, softmax in fp32, the gradient
    tile rounded to it before the two gradient GEMMs, accumulated in fp32).

    Returns ``(token_logp [N] float64, z [B], y [B], d_hidden [N, H], d_weight [V, H])``.
    """
    import torch

    f64 = dtype == torch.float64
    h = ld.hidden.detach().to(dtype)
    wt = ld.weight.detach().to(dtype)
    acc = torch.float64 if f64 else torch.float32
    N, B = h.shape[0], ld.w.B
    lp = torch.empty(N, dtype=torch.float64, device=h.device)
    ids = ld.ids
    for r0 in range(0, N, rows):
        zc = (h[r0 : r0 + rows] @ wt.T).to(acc)
        lsm = zc.log_softmax(-1)
        lp[r0 : r0 + rows] = lsm.gather(-1, ids[r0 : r0 + rows, None])[:, 0].double()
        del zc, lsm
    lp2 = lp.view(B, -1)
    z = (lp2 * ld.rat).sum(1)
    y = (lp2 * ld.ans).sum(1)
    c = ld.c.double()
    if mode == "likelihood":
        cz, cy = (t.double() for t in make_rule(c, ld.w.answer_len)(y))
    else:
        cz = cy = c
    coef = (cz[:, None] * ld.rat + cy[:, None] * ld.ans).reshape(-1) / ld.norm
    dh = torch.empty(h.shape, dtype=acc, device=h.device)
    dw = torch.zeros(wt.shape, dtype=acc, device=h.device)
    for r0 in range(0, N, rows):
        hc = h[r0 : r0 + rows]
        p = (hc @ wt.T).to(acc).softmax(-1)
        # dL/dlogit = -coef (onehot - p)
        g = p.mul_(coef[r0 : r0 + rows, None].to(acc))
        g.scatter_add_(1, ids[r0 : r0 + rows, None], -coef[r0 : r0 + rows, None].to(acc))
        g = g.to(dtype)
        dh[r0 : r0 + rows] = (g @ wt).to(acc)
        dw += (g.T @ hc).to(acc)
        del p, g
    return lp, z, y, dh, dw


def _rel_err(got, ref) -> float:
    import torch

    g = got.detach().double()
    if not bool(torch.isfinite(g).all()):
        return float("inf")
    den = float(ref.norm())
    return float((g - ref).norm()) / den if den > 0 else float((g - ref).norm())


def check_linear(ld: LinearData, mode, d_hidden, d_weight, z=None, y=None, token_logp=None,
                 *, rows=2048, upstream=1.0) -> list:
    """Checks of a hidden-state loss's ``d_hidden [N, H]``, ``d_weight [V, H]`` (of
    ``upstream * L``) and, when given, its sums ``z``, ``y`` [B] and per-token log-probs [N]
    (on the active rows) against the float64 oracle, each normwise: the relative Frobenius
    error at most ``LINEAR_FACTOR`` times the chunked low-precision yardstick's plus
    ``LINEAR_FLOOR`` (sums: plus :func:`sum_tol`). ``rows``: row chunk of both passes."""
    import torch

    lp, rz, ry, rdh, rdw = _linear_pass(ld, mode, torch.float64, rows)
    yard = _linear_pass(ld, mode, ld.hidden.dtype, rows)
    out = []
    for name, got, ref, ys in (("d_hidden", d_hidden, rdh, yard[3]),
                               ("d_weight", d_weight, rdw, yard[4])):  # fmt: skip
        if got is None:
            continue
        err, err_y = _rel_err(got * (1.0 / upstream), ref), _rel_err(ys, ref)
        tol = LINEAR_FACTOR * err_y + LINEAR_FLOOR
        out.append({"check": f"{name} vs float64 (normwise)", "ok": err <= tol, "rel_err": err,
                    "rel_err_yardstick": err_y, "tol": tol})  # fmt: skip
    act = ld.active.reshape(-1)
    stol = sum_tol(lp.view(ld.w.B, -1), ld.active)
    for name, got, ref, ys in (("logp_z", z, rz, yard[1]), ("logp_y", y, ry, yard[2])):
        if got is None:
            continue
        err = float((got.detach().double() - ref).abs().max())
        err_y = float((ys - ref).abs().max())
        tol = LINEAR_FACTOR * err_y + stol
        out.append({"check": f"{name} vs float64", "ok": math.isfinite(err) and err <= tol,
                    "max_err": err, "max_err_yardstick": err_y, "tol": tol})  # fmt: skip
    if token_logp is not None:
        got = token_logp.detach().double().reshape(-1)
        err = float(((got - lp).abs() * act).max())
        err_y = float(((yard[0] - lp).abs() * act).max())
        tol = LINEAR_FACTOR * err_y + 2e-5 * (1 + math.log(max(ld.w.V, 2)))
        out.append({"check": "token logp vs float64 (active rows)",
                    "ok": math.isfinite(err) and err <= tol, "max_err": err,
                    "max_err_yardstick": err_y, "tol": tol})  # fmt: skip
    return out
