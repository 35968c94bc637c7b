"""The case table of the GPU benchmark: what is checked and timed, in which order, at what cost.

Every row of :func:`build_cases` is one :class:`Case`; :func:`benchmarks.gpu.run.run_cases`
runs them in order, one handler per ``kind``, and saves the JSON after each. The table is the
same for the GPU run and for ``--smoke`` (CPU, Triton interpreter); only the shapes
(:data:`PROFILES`) differ.

Order = priority (a run cut short by ``--deadline-s`` keeps the head of the table):

1. the goal rows at V = 32000 then V = 151936, all out of place: the byte-floor copy, Liger's
   ``fused_selective_log_softmax`` and ours forward, Liger's ``triton_grpo_loss`` and ours
   fused for every variant and the dispatched default (checked against the float64 oracle
   with the config that is then timed, repeated bitwise, batch invariance bitwise), then the
   launchers alone with the same tuned configs. At V = 151936 the logits hold
   16 * 1025 * 151936 > 2^31 elements and every sequence is checked: int64 offsets;
2. awkward small shapes (dtypes, V prime, one row, temperature, entropy, non-contiguous) and
   one sequence of 70000 tokens (grid limits), with the kernels' fixed default configs
   (autotuning every odd shape would cost minutes; these cases are not timed);
3. in place (ours every variant, Liger ``inplace=True``), naive torch, ours two-pass,
   likelihood mode (answer rows scored first: new autotuning keys);
4. ``torch.compile`` of naive torch (slow compiles: last).

``est_s`` is the estimated wall time of a case on one H200, compiles and autotuning included
(about 1 s per Triton compile, an autotuned kernel benchmarks 4-5 configs on its first call;
``do_bench`` takes ~0.2 s per timing; a ``torch.compile`` ~30-40 s). ``python3
benchmarks/gpu_bench.py --list`` prints the table with the running total.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: what a case does (the runner has one handler per kind)
KINDS = {
    "copy": "device-to-device copy of the logits (the bandwidth ceiling); timed only",
    "fwd": "ours: sequence_logprobs (public API, no grad) over the scored rows",
    "fused": "ours: fused_sequence_loss (public API) forward + gradient, one variant",
    "kernel_fwd": "ours: the forward kernel's launcher alone (prepared arguments, no glue)",
    "kernel_fused": "ours: the fused kernel's launcher alone (prepared coefficients, no glue)",
    "two_pass": "ours: sequence_logprobs + autograd (forward kernel, then backward kernel)",
    "liger_fwd": "Liger-Kernel fused_selective_log_softmax (forward only)",
    "liger_grpo": "Liger-Kernel triton_grpo_loss (on-policy, beta 0, loss_type grpo) fwd+bwd",
    "naive_fwd": "naive torch: logits.float().log_softmax(-1).gather(...)",
    "naive_fused": "naive torch forward + autograd of the same loss",
    "compile_fwd": "torch.compile of naive_fwd",
    "compile_fused": "torch.compile of naive_fused's loss",
    "rows": "ours: token_logprobs on a small awkward shape, values, entropy and gradient",
    "noncontig": "ours: token_logprobs on a non-contiguous [B, T, V] view",
    "long": "ours: one sequence of 70000 tokens (no grid limit), sums and fused gradient",
    "same_bits": "ours: at temperature 0.7, split and multi with every wait forced to time out "
    "(max_spin=0), split_2pass and split falling back to it give the normal run's bits",
    "sync_debug": "ours: every public entry point once, forward and backward, under "
    "torch.cuda.set_sync_debug_mode('error') (any host sync raises; CPU: the calls only)",
}

#: kinds whose results are peers (recorded, never a failure of ours)
PEER_KINDS = ("copy", "liger_fwd", "liger_grpo", "naive_fwd", "naive_fused", "compile_fwd",
              "compile_fused")  # fmt: skip


@dataclass(frozen=True)
class Workload:
    """One batch: ``B`` sequences of ``T`` response tokens (logits carry ``T + 1`` positions,
    the last one ignored, as a causal LM's shifted logits), vocabulary ``V``.

    Mask pattern ``tail``: the last ``masked_tail`` tokens of each sequence are ignored
    (padding), the ``answer_len`` tokens before them are the answer span, the rest rationale.
    """

    B: int
    T: int
    V: int
    dtype: str = "bfloat16"
    masked_tail: int = 100
    answer_len: int = 32
    temperature: float = 1.0

    @property
    def key(self) -> str:
        return f"B{self.B}xT{self.T}xV{self.V}-{self.dtype}"

    @property
    def rows(self) -> int:
        """Rows of the logits tensor ``[B, T + 1, V]``."""
        return self.B * (self.T + 1)

    @property
    def scored_rows(self) -> int:
        return self.B * (self.T - self.masked_tail)


@dataclass(frozen=True)
class Case:
    """One row of the table.

    ``mode``: ``verifier`` (coefficients known before the kernel) or ``likelihood`` (a rule of
    the answer log-probs). ``check``: correctness against the float64 oracle with the config
    that is then timed, bitwise repeatability, and (``batch_invariance``) bitwise equality of
    one sequence alone against the same sequence inside the batch. ``time``: median of
    ``triton.testing.do_bench`` and peak extra memory (GPU; one wall-clock call in smoke).
    """

    name: str
    kind: str
    work: Workload | None = None
    variant: str | None = None
    mode: str = "verifier"
    inplace: bool = False
    check: bool = True
    time: bool = True
    batch_invariance: bool = False
    est_s: float = 1.0
    params: dict = field(default_factory=dict)
    note: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown case kind {self.kind!r}; expected one of {sorted(KINDS)}")
        if self.mode not in ("verifier", "likelihood"):
            raise ValueError(f"mode must be 'verifier' or 'likelihood', got {self.mode!r}")

    @property
    def peer(self) -> bool:
        return self.kind in PEER_KINDS


@dataclass(frozen=True)
class Profile:
    """Shapes of one run: the timing workloads and the small correctness shapes."""

    name: str
    timing: tuple[Workload, ...]
    #: token_logprobs shapes: (leading shape, V, dtype)
    rows: tuple[tuple[tuple[int, ...], int, str], ...]
    #: one long sequence: (T, V)
    long: tuple[int, int]
    #: non-contiguous view: (B, T, V)
    noncontig: tuple[int, int, int]
    #: same-bits and sync-debug workload, and the split chunk width that makes split fall
    #: back to split_2pass on the GPU (None: no fallback check)
    same_bits: Workload = Workload(2, 2, 37, masked_tail=0, answer_len=1, temperature=0.7)
    fallback_block_v: int | None = None


PROFILES = {
    "gpu": Profile(
        name="gpu",
        timing=(Workload(16, 1024, 32000), Workload(16, 1024, 151936)),
        rows=(
            ((1,), 37, "float32"),
            ((7,), 1009, "bfloat16"),
            ((3, 5), 257, "float16"),
            ((4, 300), 4099, "bfloat16"),
            ((2, 3), 151936, "bfloat16"),
        ),
        long=(70000, 1024),
        noncontig=(6, 4, 301),
        # V = 151936: 38 chunks of 4096 (split proper); of 1024, 149 > the SMs of an H100/H200
        same_bits=Workload(4, 256, 151936, masked_tail=16, temperature=0.7),
        fallback_block_v=1024,
    ),
    # every program costs ~0.1 s under the interpreter: 2 sequences of 2 tokens (+1 ignored
    # position), V = 37 = one full 32-wide interpreter block and a partial one
    "smoke": Profile(
        name="smoke",
        timing=(Workload(2, 2, 37, masked_tail=0, answer_len=1),),
        rows=(((3,), 37, "float32"), ((2, 2), 45, "bfloat16")),
        long=(9, 33),
        noncontig=(3, 2, 21),
    ),
}


def build_cases(profile: Profile, variants: tuple[str, ...], default_variant=None) -> list[Case]:
    """The case table for ``profile`` and the fused ``variants`` (``kernels.FUSED_VARIANTS``).

    ``default_variant(V)``: the variant ``variant=None`` dispatches to (for the case names).
    Estimated costs are for one H200 (see the module docstring).
    """
    smoke = profile.name == "smoke"
    cases: list[Case] = []
    add = cases.append

    def one_of(i):
        """Smoke (CI) runs every variant once in section 1 and each other configuration with
        one variant (a different one per configuration); the GPU run takes them all."""
        return variants if not smoke else variants[i % len(variants) : i % len(variants) + 1]

    def dflt(V):
        return default_variant(V) if default_variant is not None else "?"

    # 1. the goal rows, out of place, per vocabulary
    for w in profile.timing:
        v = f"V={w.V}"
        add(Case(f"{v} copy", "copy", w, check=False, est_s=1))
        add(Case(f"{v} fwd liger fused_selective_log_softmax", "liger_fwd", w, est_s=3))
        add(Case(f"{v} fwd ours sequence_logprobs", "fwd", w, batch_invariance=True, est_s=8))
        add(Case(f"{v} fwd+bwd liger triton_grpo_loss", "liger_grpo", w, est_s=4))
        for var in variants:
            add(Case(f"{v} fwd+bwd ours fused {var}", "fused", w, variant=var,
                     batch_invariance=not smoke or var == variants[0], est_s=9))  # fmt: skip
        add(Case(f"{v} fwd+bwd ours fused default ({dflt(w.V)})", "fused", w, variant=None,
                 check=False, est_s=1, note="variant=None: the dispatch table"))  # fmt: skip
        # the launchers alone, with the configs tuned just above (no public-API glue)
        add(Case(f"{v} fwd ours forward kernel alone", "kernel_fwd", w, est_s=1))
        for var in one_of(1):
            add(Case(f"{v} fwd+bwd ours {var} kernel alone", "kernel_fused", w, variant=var,
                     est_s=1))  # fmt: skip

    # 2. awkward small shapes and the long sequence (fixed configs: logic, compiled)
    for lead, V, dt in profile.rows:
        add(Case(f"rows {'x'.join(map(str, lead))}xV{V} {dt}", "rows", None, time=False, est_s=3,
                 params={"lead": lead, "V": V, "dtype": dt, "autotune": False}))  # fmt: skip
    add(Case("non-contiguous [B, T, V] view", "noncontig", None, time=False, est_s=2,
             params={"shape": profile.noncontig, "autotune": False}))  # fmt: skip
    lt, lv = profile.long
    add(Case(f"one sequence of {lt} tokens", "long", None, time=False, est_s=5,
             params={"T": lt, "V": lv, "autotune": False}))  # fmt: skip
    sb = profile.same_bits
    add(Case(f"same bits at tau={sb.temperature}: forced timeouts, split_2pass, fallback",
             "same_bits", sb, time=False, est_s=6,
             params={"autotune": False, "fallback_block_v": profile.fallback_block_v}))  # fmt: skip
    add(Case("no host sync: public entry points under set_sync_debug_mode('error')",
             "sync_debug", sb, time=False, est_s=8, params={"autotune": False}))  # fmt: skip

    # 3. in place, likelihood mode, kernels alone, two-pass, naive torch
    for w in profile.timing:
        v = f"V={w.V}"
        for var in one_of(3):
            add(Case(f"{v} fwd+bwd ours fused {var} in-place", "fused", w, variant=var,
                     inplace=True, est_s=4))  # fmt: skip
        add(Case(f"{v} fwd+bwd liger triton_grpo_loss in-place", "liger_grpo", w, inplace=True,
                 est_s=2))  # fmt: skip
    for w in profile.timing:
        v = f"V={w.V}"
        add(Case(f"{v} fwd naive torch", "naive_fwd", w, est_s=2))
        add(Case(f"{v} fwd+bwd naive torch", "naive_fused", w, est_s=3))
        add(Case(f"{v} fwd+bwd ours two-pass", "two_pass", w, est_s=6,
                 note="forward kernel + backward kernel: the 6 bytes/element design"))

    for w in profile.timing:
        v = f"V={w.V}"
        for var in one_of(2):
            add(Case(f"{v} fwd+bwd ours fused {var} likelihood", "fused", w, variant=var,
                     mode="likelihood", est_s=6))  # fmt: skip

    # 4. torch.compile (no compile under the interpreter)
    if not smoke:
        for w in profile.timing:
            v = f"V={w.V}"
            add(Case(f"{v} fwd torch.compile(naive)", "compile_fwd", w, est_s=30))
            add(Case(f"{v} fwd+bwd torch.compile(naive)", "compile_fused", w, est_s=40))
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise ValueError("case names must be unique")
    return cases


def budget_lines(cases: list[Case]) -> list[str]:
    """One line per case with its estimated cost and the running total (``--list``)."""
    out, total = [], 0.0
    for i, c in enumerate(cases):
        total += c.est_s
        out.append(f"{i + 1:3d} {c.est_s:5.0f} s {total:6.0f} s  {c.kind:13s} {c.name}")
    return out
