"""Contracts of the public kernel ops beyond values: no host sync on the Triton path, ignored
rows that never leak, zero weights against zero probabilities, device-side id checks, the
dispatch table, span codes by name. Triton runs under TRITON_INTERPRET=1 on tiny shapes."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re

import pytest

os.environ["TRITON_INTERPRET"] = "1"
if importlib.util.find_spec("triton") is None:  # pragma: no cover
    pytest.skip("triton is not installed", allow_module_level=True)

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import kernels  # noqa: E402
from kernels import (  # noqa: E402
    FUSED_VARIANTS,
    TokenLayout,
    fused_sequence_loss,
    reference,
    sequence_logprobs,
    token_logprobs,
)
from kernels.testing import enable_triton_interpreter  # noqa: E402

kt = enable_triton_interpreter()

#: aten ops that make the host wait for the device (a value read on the host, or an output
#: whose size depends on the data)
SYNC_OPS = {"_local_scalar_dense", "item", "is_nonzero", "equal", "nonzero", "masked_select",
            "unique", "_unique", "_unique2", "unique_consecutive", "allclose"}  # fmt: skip


class CountSyncs(TorchDispatchMode):
    """Counts (and names) the aten calls that synchronise the host with the device."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in SYNC_OPS or (
            name == "repeat_interleave" and kwargs.get("output_size") is None and
            len(args) >= 2 and isinstance(args[1], torch.Tensor)
        ):  # fmt: skip
            self.calls.append(str(func))
        return func(*args, **kwargs)


def _batch(V=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, V, generator=g) * 2
    ids = torch.randint(0, V, (2, 4), generator=g)
    rat = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    ans = torch.tensor([[0, 0, 0, 1], [0, 0, 1, 0]], dtype=torch.bool)
    ids[0, 0] = -100  # ignored positions may hold anything
    ids[1, 3] = 10**6
    return x, ids, rat, ans


def test_no_host_sync_on_the_triton_path():
    """token_logprobs, sequence_logprobs and fused_sequence_loss (every variant; both modes;
    upstream gradient 1 and not 1), forward and backward: zero syncing aten calls."""
    x, ids, rat, ans = _batch()
    lay = TokenLayout.from_masks(rat, ans)  # built outside: constructing a layout may sync
    ids_ok = ids.clamp(0, 12)
    coefs = (torch.tensor([0.5, -1.0]), torch.tensor([1.0, 0.0]))

    def rule(y):  # a sync-free coefficient rule
        return torch.softmax(y, 0), torch.ones_like(y)

    with CountSyncs() as mode:
        a = x.clone().requires_grad_(True)
        lp, h = token_logprobs(a, ids_ok, impl="triton", return_entropy=True)
        (lp.sum() + h.sum()).backward()
        o = sequence_logprobs(a, ids, lay, impl="triton", return_entropy=True)
        (o.logp_z.sum() - o.logp_y.sum() + o.entropy.sum()).backward()
        for variant in FUSED_VARIANTS:
            b = x.clone().requires_grad_(True)
            fused_sequence_loss(b, ids, lay, coefs, impl="triton", variant=variant).loss.backward()
        for variant in ("row", "multi"):  # likelihood mode, upstream gradient != 1
            b = x.clone().requires_grad_(True)
            res = fused_sequence_loss(b, ids, lay, rule, impl="triton", variant=variant)
            (2.0 * res.loss).backward()
        b = x.clone().requires_grad_(True)
        fused_sequence_loss(b, ids, lay, coefs, impl="triton").loss.backward()  # dispatch table
    assert mode.calls == [], mode.calls


def test_inputs_moved_to_the_logits_device_without_blocking():
    """A tensor already on the device is used as is (no copy); one elsewhere is copied with
    ``non_blocking`` (checked here through the call ``Tensor.to`` receives)."""
    from kernels.ops import _on

    t = torch.arange(3)
    assert _on(t, t.device) is t
    seen = {}

    class Probe(torch.Tensor):
        def to(self, *args, **kwargs):
            seen.update(kwargs, args=args)
            return torch.Tensor.to(self, "cpu")

    p = torch.arange(3).as_subclass(Probe)
    _on(p, torch.device("meta"))
    assert seen == {"non_blocking": True, "args": (torch.device("meta"),)}


def test_sync_counter_counts():
    """The counter sees the syncs it is meant to see (so the test above can fail)."""
    x, ids, rat, ans = _batch()
    with CountSyncs() as mode:
        token_logprobs(x, ids.clamp(0, 12), impl="triton", check_ids=True)  # host range check
        float(x.sum())
    assert len(mode.calls) >= 2, mode.calls


def _poison(x, rat, ans):
    """Copies of ``x`` whose ignored rows hold NaN / +inf / -inf, and zeros."""
    ign = ~(rat | ans)
    bad = x.clone()
    rows = bad[ign]
    rows[:, 0] = float("nan")
    rows[:, 1] = float("inf")
    rows[:, 2] = float("-inf")
    rows[0] = float("nan")
    bad[ign] = rows
    clean = x.clone()
    clean[ign] = 0.0
    return bad, clean, ign


def _run_paths():
    """(name, fn(logits) -> (values, grad)) for every path that takes a layout."""
    x, ids, rat, ans = _batch(seed=1)
    lay = TokenLayout.from_masks(rat, ans)
    coefs = (torch.tensor([0.5, -1.0]), torch.tensor([1.0, 2.0]))

    def seq(impl, dtype):
        def f(z):
            z = z.detach().to(dtype).clone().requires_grad_(True)
            o = sequence_logprobs(z, ids, lay, impl=impl, return_entropy=True)
            (o.logp_z.sum() + 2 * o.logp_y.sum() + o.entropy.sum()).backward()
            return torch.cat([o.logp_z, o.logp_y, o.entropy]), z.grad

        return f

    def fused(impl, dtype, variant=None):
        def f(z):
            z = z.detach().to(dtype).clone().requires_grad_(True)
            r = fused_sequence_loss(z, ids, lay, coefs, impl=impl, variant=variant,
                                    return_entropy=True)  # fmt: skip
            r.loss.backward()
            return torch.cat([r.loss[None], r.logp_z, r.logp_y, r.entropy]), z.grad

        return f

    paths = [("torch f64", seq("torch", torch.float64)), ("torch f32", seq("torch", torch.float32)),
             ("triton", seq("triton", torch.float32)),
             ("fused torch", fused("torch", torch.float64))]  # fmt: skip
    # (row_rev and split_2pass share their ignored-row code with row and split)
    paths += [(f"fused {v}", fused("triton", torch.float32, v)) for v in ("row", "multi", "split")]
    return x, rat, ans, paths


def test_nonfinite_logits_at_ignored_rows_never_leak(monkeypatch):
    """inf/NaN logits at ignored rows: same values as with zeros there, gradient rows exactly 0,
    on every path (torch float64 / float32 chunked, Triton forward+backward, every fused)."""
    monkeypatch.setattr(reference, "CHUNK_ELEMENTS", 2 * 13)  # several chunks: chunked path
    x, rat, ans, paths = _run_paths()
    bad, clean, ign = _poison(x, rat, ans)
    for name, f in paths:
        v_bad, g_bad = f(bad)
        v_clean, g_clean = f(clean)
        assert torch.isfinite(v_bad).all(), (name, v_bad)
        assert torch.equal(v_bad, v_clean), name
        assert torch.isfinite(g_bad).all(), name
        assert (g_bad[ign] == 0).all(), name
        assert torch.equal(g_bad, g_clean), name


@pytest.mark.parametrize("impl,variant", [("torch", None), ("triton", "row"),
                                          ("triton", "split")])  # fmt: skip
def test_zero_probability_answer_token(impl, variant):
    """A gold answer token of probability 0 (-inf logit): logp_y = -inf is valid; with weight 0
    the loss is finite and the sequence contributes nothing; with a nonzero weight the loss is
    +inf (not NaN). The gradient is finite either way."""
    x, ids, rat, ans = _batch(seed=2)
    lay = TokenLayout.from_masks(rat, ans)
    x[0, 3, ids[0, 3]] = float("-inf")  # row (0, 3) is sequence 0's answer token
    cz = torch.tensor([0.5, -1.0])
    for cy0, finite in ((0.0, True), (1.0, False)):
        z = x.clone().requires_grad_(True)
        cy = torch.tensor([cy0, 2.0])
        r = fused_sequence_loss(z, ids, lay, (cz, cy), impl=impl, variant=variant)
        assert r.logp_y[0] == float("-inf") and torch.isfinite(r.logp_y[1])
        assert not torch.isnan(r.loss)
        assert bool(torch.isfinite(r.loss)) == finite
        r.loss.backward()
        assert torch.isfinite(z.grad).all()
        if finite:
            z2 = x.clone()
            z2[0, 3] = 0.0  # the zero-weighted row's logits do not matter
            r2 = fused_sequence_loss(z2, ids, lay, (cz, cy), impl=impl, variant=variant)
            assert torch.equal(r.loss.detach(), r2.loss.detach())


def test_token_id_checks_on_the_triton_path():
    x, ids, rat, ans = _batch()
    bad = ids.clamp(0, 12)
    bad[1, 1] = 13
    # default: checked on the device (a device-side assert on CUDA; RuntimeError on CPU)
    with pytest.raises(RuntimeError, match=r"\[0, V\) = \[0, 13\)"):
        token_logprobs(x, bad, impl="triton")
    # check_ids=True: the host check and its ValueError naming the id (one sync)
    with pytest.raises(ValueError, match="found 13 at flat position 5"):
        token_logprobs(x, bad, impl="triton", check_ids=True)
    # check_ids=False: no check; the id is clamped to 0 so nothing reads out of bounds
    lp = token_logprobs(x, bad, impl="triton", check_ids=False)
    assert torch.isfinite(lp).all()
    lay = TokenLayout.from_masks(rat, ans)
    ids_l = ids.clone()
    ids_l[0, 1] = -1  # a rationale row
    with pytest.raises(RuntimeError, match="token ids must lie"):
        fused_sequence_loss(x, ids_l, lay, (torch.ones(2), torch.ones(2)), impl="triton")
    with pytest.raises(TypeError, match="check_ids"):
        token_logprobs(x, ids.clamp(0, 12), impl="triton", check_ids="yes")


def test_dispatch_table_and_explicit_variants(monkeypatch):
    from kernels import dispatch

    if not dispatch.MEASURED:  # the design default (a measured table: test_kernels_dispatch)
        assert "unmeasured" in dispatch.PROVENANCE
        assert [kernels.choose_variant(V) for V in (32000, 65536, 65537, 151936)] == [
            "row", "row", "multi", "multi"]  # fmt: skip
    assert kernels.choose_variant(10, ((5, "multi"), (None, "row_rev"))) == "row_rev"
    with pytest.raises(ValueError, match="unknown variant"):
        kernels.choose_variant(10, ((None, "fast"),))
    x, ids, rat, ans = _batch()
    lay = TokenLayout.from_masks(rat, ans)
    coefs = (torch.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match="variant must be one of"):
        fused_sequence_loss(x, ids, lay, coefs, impl="triton", variant="fast")
    # variant=None follows the table (no environment variable is read)
    seen = []
    real = kt.fused_rows
    monkeypatch.setattr(kt, "fused_rows",
                        lambda *a, **k: seen.append(k["variant"]) or real(*a, **k))  # fmt: skip
    monkeypatch.setenv("TSALLIS_FUSED_VARIANT", "split")
    monkeypatch.setattr(dispatch, "TABLE", ((None, "row_rev"),))
    fused_sequence_loss(x, ids, lay, coefs, impl="triton")
    assert seen == ["row_rev"]


def test_span_codes_used_by_name():
    """No bare span codes (0/1/2) compared with a span in the kernels' sources."""
    root = pathlib.Path(kernels.__file__).parent
    pat = re.compile(r"\b(span|code|SPAN[^,)]*\))\s*[!=]=\s*[0-9]")
    hits = []
    for path in sorted(root.rglob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pat.search(line) and "-1" not in line:
                hits.append(f"{path.name}:{i}: {line.strip()}")
    assert hits == [], hits


def test_kernels_call_no_jit_library_functions():
    """The kernels must not call ``@triton.jit`` functions of triton.language (``tl.sum``,
    ``tl.zeros``, ``tl.cdiv``...): under the interpreter they fail once triton was imported
    before TRITON_INTERPRET was set (as when pytest collects the kernels' doctests first)."""
    import triton.language as tl
    from triton.runtime.jit import JITFunction

    jitted = {n for n in dir(tl) if isinstance(getattr(tl, n), JITFunction)}
    root = pathlib.Path(kernels.__file__).parent / "triton"
    hits = []
    for path in sorted(root.glob("*.py")):
        called = set(re.findall(r"\btl\.(\w+)\(", path.read_text()))
        hits += [f"{path.name}: tl.{n}" for n in sorted(called & jitted)]
    assert hits == [], hits
