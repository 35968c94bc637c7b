"""The case registry of the GPU benchmark: what is timed, in which order, at what cost.

Every row of :func:`build_cases` is one :class:`Case`; :func:`.run.run_cases` runs them in
order, one handler per ``kind`` (:mod:`.handlers`), and saves the JSON after each. The table is
the same for the GPU run and for ``--smoke`` (CPU, Triton interpreter); only the shapes
(:data:`PROFILES`) differ.

What is timed is what was checked: a case with ``check=True`` calls its implementation once
(the autotuner picks a config), then checks the next call's outputs against the float64
oracle at the timed shape (:mod:`.checks`), then times that config; a timed case that does not
check itself names in ``checked_by`` the case of the same run that checked the same
configuration. The kernels' behaviour off the timed shapes (awkward shapes, long sequences,
forced timeouts, host syncs) is checked by ``tests/test_kernels_gpu.py``, which the runner
runs with pytest on the GPU before the first case.

Order = priority (a run cut short by ``--deadline-s`` keeps the head of the table):

1. per vocabulary (V = 32000, then V = 151936), out of place: the byte-floor copy, Liger's
   ``fused_selective_log_softmax`` and ours forward, Liger's ``triton_grpo_loss`` and ours
   fused for every variant and the dispatched default, then the default in likelihood mode
   (answer rows scored first) and, at the first V, the default under an upstream gradient
   != 1 (``loss / GA``). At V = 151936 the logits hold 16 * 1025 * 151936 > 2^31 elements:
   int64 offsets;
2. the hidden-state loss (``kernels.fused_linear_sequence_loss``) against Liger's
   ``LigerFusedLinearGRPOLoss``, TRL's ``ChunkedLogProbFunction`` and cut-cross-entropy's
   ``linear_cross_entropy`` at H = 896 and 2048;
3. the launchers alone, in place (ours every variant, Liger ``inplace=True``), naive torch,
   ours two-pass, likelihood mode for every other variant;
4. ``torch.compile`` of naive torch (slow compiles: last).

``est_s`` is the estimated wall time of a case on one H200, compiles and autotuning included
(about 1 s per Triton compile, an autotuned kernel benchmarks 4-5 configs on its first call;
``do_bench`` takes ~0.2 s per timing; a ``torch.compile`` ~30-40 s). ``python3
benchmarks/gpu_bench.py --list`` prints the table with the running total.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: what a case does (the runner has one handler per kind, :data:`.handlers.HANDLERS`)
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
    "linear": "ours: fused_linear_sequence_loss (hidden states, LM head) forward + d hidden, "
    "d weight",
    "liger_linear": "Liger-Kernel LigerFusedLinearGRPOLoss (on-policy, beta 0, loss_type grpo)",
    "trl_chunked": "TRL ChunkedLogProbFunction (its trainers' chunked LM head) + the same loss",
    "cce": "cut-cross-entropy linear_cross_entropy (reduction='none') + the same loss",
}

#: kinds whose results are peers (recorded, never a failure of ours)
PEER_KINDS = ("copy", "liger_fwd", "liger_grpo", "naive_fwd", "naive_fused", "compile_fwd",
              "compile_fused", "liger_linear", "trl_chunked", "cce")  # fmt: skip
#: kinds whose workload is a :class:`LinearWorkload`
LINEAR_KINDS = ("linear", "liger_linear", "trl_chunked", "cce")


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
class LinearWorkload:
    """One batch of hidden states ``[B * T, H]`` and an LM head ``[V, H]`` (the same spans as
    :class:`Workload`, without the shifted extra position)."""

    B: int
    T: int
    V: int
    H: int
    dtype: str = "bfloat16"
    masked_tail: int = 100
    answer_len: int = 32

    @property
    def key(self) -> str:
        return f"B{self.B}xT{self.T}xV{self.V}xH{self.H}-{self.dtype}"

    @property
    def rows(self) -> int:
        return self.B * self.T

    @property
    def scored_rows(self) -> int:
        return self.B * (self.T - self.masked_tail)


@dataclass(frozen=True)
class Case:
    """One row of the table.

    ``mode``: ``verifier`` (coefficients known before the kernel) or ``likelihood`` (a rule of
    the answer log-probs). ``upstream``: the scalar gradient flowing into the loss (1 / GA,
    loss scaling). ``check``: the case's own outputs against the float64 oracle at the timed
    shape with the config that is then timed, and bitwise repeatability; ``batch_invariance``:
    bitwise equality of one sequence alone against the same sequence inside the batch.
    ``checked_by``: for a timed case that does not check itself, the name of the case of the
    same run that checks the same configuration. ``time``: median of
    ``triton.testing.do_bench`` and peak extra memory (GPU; one wall-clock call in smoke).
    """

    name: str
    kind: str
    work: Workload | LinearWorkload | None = None
    variant: str | None = None
    mode: str = "verifier"
    inplace: bool = False
    upstream: float = 1.0
    check: bool = True
    time: bool = True
    batch_invariance: bool = False
    checked_by: str | None = None
    est_s: float = 1.0
    params: dict = field(default_factory=dict)
    note: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown case kind {self.kind!r}; expected one of {sorted(KINDS)}")
        if self.mode not in ("verifier", "likelihood"):
            raise ValueError(f"mode must be 'verifier' or 'likelihood', got {self.mode!r}")
        if self.time and not self.check and self.checked_by is None and self.kind != "copy":
            raise ValueError(f"case {self.name!r} is timed but neither checks itself nor names "
                             "the case that checks its configuration (checked_by)")  # fmt: skip
        linear = self.kind in LINEAR_KINDS
        if self.work is not None and linear != isinstance(self.work, LinearWorkload):
            raise TypeError(f"case {self.name!r}: kind {self.kind!r} needs a "
                            f"{'LinearWorkload' if linear else 'Workload'}, got "
                            f"{type(self.work).__name__}")  # fmt: skip

    @property
    def peer(self) -> bool:
        return self.kind in PEER_KINDS


@dataclass(frozen=True)
class Profile:
    """Shapes of one run: the logits workloads and the hidden-state workloads."""

    name: str
    timing: tuple[Workload, ...]
    linear: tuple[LinearWorkload, ...] = ()


PROFILES = {
    "gpu": Profile(
        name="gpu",
        timing=(Workload(16, 1024, 32000), Workload(16, 1024, 151936)),
        linear=(LinearWorkload(16, 1024, 151936, 896), LinearWorkload(16, 1024, 151936, 2048)),
    ),
    # every program costs ~0.1 s under the interpreter: 2 sequences of 2 tokens (+1 ignored
    # position), V = 37 = one full 32-wide interpreter block and a partial one
    "smoke": Profile(
        name="smoke",
        timing=(Workload(2, 2, 37, masked_tail=0, answer_len=1),),
        linear=(LinearWorkload(2, 3, 37, 8, masked_tail=1, answer_len=1),),
    ),
}


def build_cases(profile: Profile, variants: tuple[str, ...], default_variant=None) -> list[Case]:
    """The case table for ``profile`` and the fused ``variants`` (``kernels.FUSED_VARIANTS``).

    ``default_variant(V)``: the variant ``variant=None`` dispatches to (the default's case
    names the case that checks that variant). Estimated costs are for one H200 (see the
    module docstring).
    """
    smoke = profile.name == "smoke"
    cases: list[Case] = []
    add = cases.append

    def one_of(i):
        """Smoke (CI) runs every variant once in section 1 and each other configuration with
        one variant (a different one per configuration); the GPU run takes them all."""
        return variants if not smoke else variants[i % len(variants) : i % len(variants) + 1]

    def dflt(V):
        return default_variant(V) if default_variant is not None else variants[0]

    def fused_name(v, var):
        return f"{v} fwd+bwd ours fused {var}"

    # 1. per vocabulary: the goal rows out of place, then likelihood mode and an upstream
    # gradient != 1 with the default variant
    for i, w in enumerate(profile.timing):
        v = f"V={w.V}"
        add(Case(f"{v} copy", "copy", w, check=False, est_s=1))
        add(Case(f"{v} fwd liger fused_selective_log_softmax", "liger_fwd", w, est_s=3))
        add(Case(f"{v} fwd ours sequence_logprobs", "fwd", w, batch_invariance=True, est_s=8))
        add(Case(f"{v} fwd+bwd liger triton_grpo_loss", "liger_grpo", w, est_s=4))
        for var in variants:
            add(Case(fused_name(v, var), "fused", w, variant=var,
                     batch_invariance=not smoke or var == variants[0], est_s=9))  # fmt: skip
        d = dflt(w.V)
        add(Case(f"{v} fwd+bwd ours fused default ({d})", "fused", w, variant=None, check=False,
                 checked_by=fused_name(v, d), est_s=1,
                 note="variant=None: the dispatch table"))  # fmt: skip
        add(Case(f"{v} fwd+bwd ours fused default ({d}) likelihood", "fused", w, variant=None,
                 mode="likelihood", est_s=6))  # fmt: skip
        if i == 0:
            add(Case(f"{v} fwd+bwd ours fused default ({d}) upstream gradient 0.25", "fused", w,
                     variant=None, upstream=0.25, est_s=5,
                     note="loss / GA with GA = 4: the upstream gradient is not 1"))  # fmt: skip

    # 2. the hidden-state loss against its peers
    for lw in profile.linear:
        h = f"H={lw.H} V={lw.V}"
        add(Case(f"{h} fwd+bwd ours fused_linear_sequence_loss", "linear", lw, est_s=12))
        add(Case(f"{h} fwd+bwd liger LigerFusedLinearGRPOLoss", "liger_linear", lw, est_s=40))
        add(Case(f"{h} fwd+bwd trl ChunkedLogProbFunction", "trl_chunked", lw, est_s=10))
        add(Case(f"{h} fwd+bwd cce linear_cross_entropy", "cce", lw, est_s=8))
    if profile.linear:
        lw = profile.linear[0]
        add(Case(f"H={lw.H} V={lw.V} fwd+bwd ours fused_linear_sequence_loss likelihood",
                 "linear", lw, mode="likelihood", est_s=8))  # fmt: skip

    # 3. the launchers alone, in place, naive torch, two-pass, the other variants' likelihood
    for w in profile.timing:
        v = f"V={w.V}"
        add(Case(f"{v} fwd ours forward kernel alone", "kernel_fwd", w, est_s=1))
        for var in one_of(1):
            add(Case(f"{v} fwd+bwd ours {var} kernel alone", "kernel_fused", w, variant=var,
                     est_s=1))  # fmt: skip
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
            if var != dflt(w.V):
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
    missing = [c.checked_by for c in cases if c.checked_by and c.checked_by not in names]
    if missing:
        raise ValueError(f"checked_by names cases not in the table: {missing}")
    return cases


def budget_lines(cases: list[Case]) -> list[str]:
    """One line per case with its estimated cost and the running total (``--list``)."""
    out, total = [], 0.0
    for i, c in enumerate(cases):
        total += c.est_s
        out.append(f"{i + 1:3d} {c.est_s:5.0f} s {total:6.0f} s  {c.kind:13s} {c.name}")
    return out
