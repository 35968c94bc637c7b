r"""J_Q training with TRL: ``TsallisGRPOConfig`` and ``TsallisGRPOTrainer`` (extra ``trl``).

A drop-in replacement for TRL's ``GRPOConfig`` / ``GRPOTrainer`` that trains with the GARL and
PAFT estimators of the Tsallis loss continuum (Lin & Ie 2026) at any q ∈ [0, 1] (or a schedule
of q, :mod:`tsallis.schedules`), in either mode:

* ``mode="verifier"``: the reward functions' combined reward r_b = Σ_k weight_k·r_bk of each
  completion must lie in [0, 1] (a ValueError otherwise); log w_b = log r_b goes through the
  estimator per group of ``num_generations`` completions of one prompt. A reward function may
  return None for some completions: as in TRL, the sum skips it (nansum over functions); a
  completion for which every function returned None is a ValueError.
* ``mode="likelihood"`` (the paper's main setting): each sampled completion is cut just before
  the first occurrence of ``answer_marker`` (or before its end-of-sequence token, or at the
  length budget, when it never emits the marker: the marker is then forced, as the paper forces
  ``</think>``); the rationale z_b is what precedes the cut. The marker is matched as its own
  token ids, and otherwise in the decoded text (a BPE / SentencePiece tokenizer may merge it
  with its neighbours, e.g. ``" ####"``): the cut is then before the token that holds the
  marker's first character (:func:`split_rationale`). The teacher-forced answer
  y* = tokens(answer_marker) + tokens(gold answer from ``answer_column``) is appended, and
  log w_b = log π(y* | prompt_b, z_b) comes from one extra no-grad forward pass. ``coef_z``
  weighs the rationale tokens and ``coef_y`` the answer tokens (per-token advantages).

Scale convention (what the optimiser sees)
------------------------------------------
With ``G`` prompts (groups) in one optimiser step over all processes and micro-batches
(``G = num_processes · per_device_train_batch_size · gradient_accumulation_steps /
num_generations``), the accumulated, all-reduced gradient handed to the optimiser is exactly

    ∇ L,   L = -(1/G) · Σ_b [ coef_z[b]·log π(z_b | x_b) + coef_y[b]·log π(y_b | x_b, z_b) ]

evaluated on-policy, with the estimator's detached coefficients (which already average over the
M samples of a group: e.g. GARL-RLOO's coef_z = c_m/M, Eq. 12), i.e. the mean over prompts of
the per-prompt surrogate loss of :func:`tsallis.sequence_loss` (``reduction="mean"``). In
verifier mode y is empty and z is the whole completion. Each micro-batch returns
``-(M / (per_device_train_batch_size · gradient_accumulation_steps)) · Σ_{b,t} adv[b,t]·log π_t``:
DDP averages over processes and the micro-batches add up, which gives L. Hence the learning rate
means the same thing whatever the number of processes or accumulation steps. The returned loss
value is L (per optimiser step, summed over micro-batches, averaged over processes); TRL's
``loss_type``, clipping and KL options play no part (options that would change the gradient are
rejected by :class:`TsallisGRPOConfig`).

Groups across processes
-----------------------
TRL gives each process consecutive rows of the global generation batch; a group of M completions
may straddle processes. Every process gathers the per-sequence log-weights (one float each: log
rewards, or the teacher-forced answer log-probs; never logits), runs the estimator on the whole
groups of the global batch (PAFT's resampling with a generator seeded identically on every
process, so all agree) and keeps its own rows.

PAFT's resampling draws from a generator seeded with ``args.seed``; its state is saved with each
checkpoint (``tsallis_estimator_rng.pt``) and restored on resume; evaluation draws from a
separate generator, so evaluating does not shift the training draws.

Logged every generation step (TRL's logs, keys prefixed ``tsallis/``): ``q`` (the value used),
``log_w_mean`` (mean over non-stalled groups of log w̄), ``w_mean`` (mean over all groups of w̄),
``max_amplified_advantage`` (max over groups of max_m M·coef_z/M^q, the paper's Fig. 3
monitor), ``frac_stalled`` (groups without a positive weight) and ``frac_forced_marker``
(likelihood mode), plus ``entropy`` (mean per-token entropy of the trained tokens).

Not supported (a ValueError rather than a silently wrong gradient): multimodal inputs
(``pixel_values``, ``image_grid_thw``, ``token_type_ids``, ``mm_token_type_ids``, ...), tools in
likelihood mode, ``mask_truncated_completions``, and a ``q`` that cannot be pickled (a lambda or
closure: every checkpoint saves ``torch.save(args)``; use a :mod:`tsallis.schedules` schedule or
a module-level function). On the command line (``HfArgumentParser`` / ``TrlParser``) ``--q``
takes a float; schedules are given in Python.

Per-token log-probs: ``logprob_impl="auto" | "torch" | "triton"`` runs the model for its logits
and computes log-probs and entropies with :func:`kernels.token_logprobs` (the fused Triton kernel
on CUDA, the chunked torch path on CPU); ``"trl"`` uses TRL's own fused LM head.

Supported TRL: ``>=1.16,<1.17`` (private methods are overridden; importing this module with
another TRL raises ImportError).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field

import torch

from ..estimators import RANDOMIZED, get_estimator, rewards_to_log_w
from ..schedules import Schedule, as_schedule

TRL_RANGE = (">=1.16", "<1.17")
_TRL_MIN, _TRL_MAX = "1.16", "1.17"


def _check_trl_version(version: str) -> None:
    """Raise ImportError unless ``version`` lies in the tested TRL range [1.16, 1.17)."""
    from packaging.version import Version

    v = Version(version)
    if not (Version(_TRL_MIN) <= v < Version(_TRL_MAX)):
        raise ImportError(
            f"tsallis.integrations.trl supports TRL {','.join(TRL_RANGE)} (it overrides private "
            f"GRPOTrainer methods), but TRL {version} is installed; "
            f'install the tested range: pip install "trl{",".join(TRL_RANGE)}"'
        )


try:
    import trl as _trl
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "tsallis.integrations.trl needs TRL: pip install -e '.[trl]' in a clone of "
        f"tsallis-continuum, or pip install 'trl{','.join(TRL_RANGE)}'"
    ) from exc
_check_trl_version(_trl.__version__)

from trl import GRPOConfig, GRPOTrainer  # noqa: E402

__all__ = [
    "TRL_RANGE",
    "TsallisGRPOConfig",
    "TsallisGRPOTrainer",
    "answer_match_reward",
    "split_rationale",
]

_MODES = ("verifier", "likelihood")
_LOGPROB_IMPLS = ("auto", "torch", "triton", "trl")
#: file in each checkpoint holding the estimator generators' states (PAFT's resampling)
GENERATOR_STATE_FILE = "tsallis_estimator_rng.pt"
#: inputs of vision-language models that TRL forwards to the model; this trainer's forward
#: passes (the loss and the teacher-forced log w) do not, so they are rejected
_MULTIMODAL_KEYS = (
    "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
    "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids",
)  # fmt: skip


# ----------------------------------------------------------------------------- pure helpers


def split_rationale(
    completion_ids: list[int],
    marker_ids: list[int],
    stop_ids: set[int] | frozenset[int] = (),
    *,
    decode=None,
    marker_text: str | None = None,
) -> tuple[list[int], bool]:
    """Cut a sampled completion into its rationale z: the tokens before the first occurrence of
    the marker, or before the first stop (end-of-sequence / pad) token, or all of them (the
    length budget ran out). Returns ``(z, forced)``: ``forced`` is True when the completion never
    emitted the marker (it is then appended by the caller, as the paper forces ``</think>``).

    The marker is first looked for as its own token sequence ``marker_ids`` (the fast path).
    BPE / SentencePiece tokenizers often tokenize it differently inside text (``" ####"`` or
    ``"#4"`` as one token), so with ``decode`` (token ids -> text) and ``marker_text`` the
    completion before its first stop token is decoded and the marker is searched in the text:
    z ends just before the first token whose decoded prefix reaches the marker's first
    character (that token, which may also hold text before the marker, is dropped with the
    rest). An id match is kept only when the text before it holds no earlier marker.

    >>> split_rationale([5, 6, 9, 9, 7], [9, 9])
    ([5, 6], False)
    >>> split_rationale([5, 6, 1, 0], [9], stop_ids={1, 0})
    ([5, 6], True)
    >>> split_rationale([5, 6, 7], [9])
    ([5, 6, 7], True)
    """
    if not marker_ids:
        raise ValueError("the answer marker must tokenize to at least one token")
    if (decode is None) != (marker_text is None):
        raise ValueError("split_rationale: give both decode and marker_text, or neither")
    if marker_text is not None and not marker_text:
        raise ValueError("split_rationale: marker_text must be a non-empty string")
    ids = list(completion_ids)
    marker = list(marker_ids)
    k = len(marker)
    end = next((i for i, t in enumerate(ids) if t in stop_ids), len(ids))
    hit = next((i for i in range(end - k + 1) if ids[i : i + k] == marker), None)
    if decode is None:
        return (ids[:hit], False) if hit is not None else (ids[:end], True)
    if hit is not None and marker_text not in decode(ids[:hit]):
        return ids[:hit], False  # fast path: the id match is the first occurrence
    text = decode(ids[:end])
    pos = text.find(marker_text)
    if pos < 0:
        return ids[:end], True
    # smallest n with len(decode(ids[:n])) > pos: token n - 1 reaches the marker's start
    lo, hi = 1, end
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(ids[:mid])) > pos:
            hi = mid
        else:
            lo = mid + 1
    return ids[: lo - 1], False


def answer_match_reward(answer_marker: str, answer_column: str = "answer"):
    """A reward function for TRL: 1.0 when the text after the first ``answer_marker`` of a
    completion, stripped, equals the gold answer (dataset column ``answer_column``), else 0.0.

    Likelihood mode uses it (by default) only as a monitor; it does not enter the gradient.

    >>> f = answer_match_reward("=")
    >>> f(completions=["ab=12", "ab=1", "ab"], answer=["12", "12", "12"])
    [1.0, 0.0, 0.0]
    """

    def answer_match(completions, **kwargs):
        answers = kwargs[answer_column]
        out = []
        for c, a in zip(completions, answers, strict=True):
            text = c if isinstance(c, str) else c[-1]["content"]
            _, sep, after = text.partition(answer_marker)
            out.append(float(bool(sep) and after.strip() == str(a).strip()))
        return out

    return answer_match


# ----------------------------------------------------------------------------- config


@dataclass
class TsallisGRPOConfig(GRPOConfig):
    r"""TRL's ``GRPOConfig`` plus the J_Q options (all validated in ``__post_init__``).

    Args:
        q: the Tsallis index, a float in [0, 1] (a numeric string is converted), a
            :class:`tsallis.schedules.Schedule` or a picklable callable ``step -> q``
            (required: there is no default q).
        estimator: a name of ``tsallis.ESTIMATORS`` (default ``"garl_rloo"``, Eq. 12).
        mode: ``"verifier"`` (rewards in [0, 1]) or ``"likelihood"`` (teacher-forced gold answer).
        answer_column: dataset column with the gold answer (likelihood mode).
        answer_marker: the text that ends the rationale and starts the answer, e.g.
            ``"</think>"`` (required in likelihood mode).
        paper_normalization: multiply GARL/PAFT coefficients by M^(-q) (the paper's rescale).
        logprob_impl: ``"auto"``, ``"torch"`` or ``"triton"`` (:func:`kernels.token_logprobs`
            with that ``impl``) or ``"trl"`` (TRL's own per-token log-probs).
    """

    # annotated float so HfArgumentParser / TrlParser parse ``--q 0.5``; in Python a
    # tsallis.schedules schedule or a picklable callable passes through unchanged
    q: float | None = field(
        default=None,
        metadata={"help": "Tsallis index q in [0, 1], or (in Python) a schedule step -> q."},
    )
    estimator: str = field(default="garl_rloo", metadata={"help": "tsallis.ESTIMATORS name."})
    mode: str = field(default="verifier", metadata={"help": "'verifier' or 'likelihood'."})
    answer_column: str = field(default="answer", metadata={"help": "Gold answer column."})
    answer_marker: str | None = field(
        default=None, metadata={"help": "Text ending the rationale (likelihood mode)."}
    )
    paper_normalization: bool = field(
        default=False, metadata={"help": "Multiply GARL/PAFT coefficients by M^(-q)."}
    )
    logprob_impl: str = field(
        default="auto", metadata={"help": "'auto', 'torch', 'triton' (kernels) or 'trl'."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.q is None:
            raise ValueError(
                "TsallisGRPOConfig: q is required (a float in [0, 1], a tsallis.schedules "
                "schedule or a callable step -> q); e.g. q=0.75"
            )
        if isinstance(self.q, str):  # from a command line, YAML or environment variable
            try:
                self.q = float(self.q)
            except ValueError:
                raise TypeError(
                    "TsallisGRPOConfig: q must be a float in [0, 1], a tsallis.schedules "
                    f"schedule or a callable step -> q, got the string {self.q!r}"
                ) from None
        schedule = as_schedule(self.q)
        schedule(0)  # a callable that fails at step 0 fails here, not mid-training
        try:  # Trainer saves torch.save(args) with every checkpoint
            pickle.dumps(self.q)
        except Exception as exc:
            raise ValueError(
                f"TsallisGRPOConfig: q={self.q!r} cannot be pickled ({type(exc).__name__}: {exc}), "
                "so every checkpoint save (torch.save(args)) would fail; use a "
                "tsallis.schedules schedule (Constant, Linear, Cosine, Step) or a module-level "
                "function instead of a lambda or closure"
            ) from None
        get_estimator(self.estimator)
        if self.mode not in _MODES:
            raise ValueError(f"TsallisGRPOConfig: mode must be one of {_MODES}, got {self.mode!r}")
        if self.logprob_impl not in _LOGPROB_IMPLS:
            raise ValueError(
                f"TsallisGRPOConfig: logprob_impl must be one of {_LOGPROB_IMPLS}, "
                f"got {self.logprob_impl!r}"
            )
        if not isinstance(self.paper_normalization, bool):
            raise TypeError(
                f"TsallisGRPOConfig: paper_normalization must be a bool, "
                f"got {self.paper_normalization!r}"
            )
        if not isinstance(self.answer_column, str) or not self.answer_column:
            raise ValueError(
                f"TsallisGRPOConfig: answer_column must be a non-empty string, "
                f"got {self.answer_column!r}"
            )
        if self.mode == "likelihood":
            if not isinstance(self.answer_marker, str) or not self.answer_marker:
                raise ValueError(
                    "TsallisGRPOConfig: mode='likelihood' needs answer_marker, the text that ends "
                    f"the rationale and starts the answer (e.g. '</think>'), got "
                    f"{self.answer_marker!r}"
                )
        bad = []
        if self.mask_truncated_completions:
            bad.append(
                "mask_truncated_completions=True (it drops truncated completions from the "
                "gradient; in likelihood mode a rationale cut at the length budget gets the "
                "forced marker)"
            )
        if self.beta != 0.0:
            bad.append(f"beta={self.beta} (a KL penalty is not part of J_Q; use beta=0.0)")
        if self.num_iterations != 1:
            bad.append(f"num_iterations={self.num_iterations} (the gradient is on-policy; use 1)")
        if self.steps_per_generation != self.gradient_accumulation_steps:
            bad.append(
                f"steps_per_generation={self.steps_per_generation} != gradient_accumulation_steps="
                f"{self.gradient_accumulation_steps} (one generation batch per optimiser step)"
            )
        if self.top_entropy_quantile != 1.0:
            bad.append(f"top_entropy_quantile={self.top_entropy_quantile} (use 1.0)")
        if self.off_policy_mask_threshold is not None:
            bad.append(f"off_policy_mask_threshold={self.off_policy_mask_threshold} (use None)")
        if self.entropy_coef != 0.0 or self.use_adaptive_entropy:
            bad.append("an entropy bonus (entropy_coef / use_adaptive_entropy)")
        if self.use_liger_kernel:
            bad.append("use_liger_kernel=True (use logprob_impl='auto' for fused kernels)")
        if self.multi_objective_aggregation != "sum_then_normalize":
            bad.append(
                f"multi_objective_aggregation={self.multi_objective_aggregation!r} (rewards are "
                "combined as Σ_k weight_k·r_k; use 'sum_then_normalize')"
            )
        if bad:
            raise ValueError(
                "TsallisGRPOConfig: these GRPO options would change the J_Q gradient and are not "
                "supported: " + "; ".join(bad)
            )

    @property
    def q_schedule(self) -> Schedule:
        return as_schedule(self.q)

    def to_dict(self):
        d = super().to_dict()
        if not isinstance(d.get("q"), (int, float)):
            d["q"] = repr(self.q)
        return d


# ----------------------------------------------------------------------------- trainer


class TsallisGRPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` training J_Q (GARL / PAFT / RL baselines) at q (see the module doc).

    Same constructor as ``GRPOTrainer``; ``args`` must be a :class:`TsallisGRPOConfig`. In
    likelihood mode ``reward_funcs`` is optional: the rewards are only logged (default: exact
    match of the text after the marker, :func:`answer_match_reward`).
    """

    def __init__(self, model, reward_funcs=None, args: TsallisGRPOConfig | None = None, **kwargs):
        if not isinstance(args, TsallisGRPOConfig):
            raise TypeError(
                "TsallisGRPOTrainer needs args=TsallisGRPOConfig(..., q=...), got "
                f"{type(args).__name__}"
            )
        if args.mode == "likelihood":
            if reward_funcs is None:
                reward_funcs = [answer_match_reward(args.answer_marker, args.answer_column)]
            ds = kwargs.get("train_dataset")
            cols = getattr(ds, "column_names", None)
            if cols is not None and args.answer_column not in cols:
                raise ValueError(
                    f"likelihood mode reads the gold answer from column {args.answer_column!r}, "
                    f"which the train dataset lacks (columns: {cols})"
                )
        super().__init__(model, reward_funcs, args=args, **kwargs)
        if args.mode == "likelihood" and self.tools:
            raise ValueError(
                "TsallisGRPOTrainer: tools are not supported in likelihood mode (the rationale "
                "is rebuilt from the sampled ids and the tool-result mask would be lost); use "
                "mode='verifier' or no tools"
            )
        self.q_schedule = as_schedule(args.q)
        self._estimator_fn = get_estimator(args.estimator)
        # PAFT's draws: one stream for training (saved with each checkpoint, restored on resume)
        # and a separate one for evaluation, so evaluating never shifts the training draws
        self._estimator_generator = torch.Generator().manual_seed(int(args.seed))
        self._eval_estimator_generator = torch.Generator().manual_seed(int(args.seed) + 1)
        self._marker_ids: list[int] | None = None
        if args.mode == "likelihood":
            self._marker_ids = self._tokenize_text(args.answer_marker)
            if not self._marker_ids:
                raise ValueError(f"answer_marker {args.answer_marker!r} tokenizes to no tokens")
        self._last_rewards_per_func: torch.Tensor | None = None
        self.last_coefficients = None  # the last generation batch's Coefficients (global)

    # ------------------------------------------------------------------ helpers

    def _tokenize_text(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def current_q(self) -> float:
        """q for the optimiser step about to be taken (``state.global_step`` steps done)."""
        return float(self.q_schedule(int(self.state.global_step)))

    def _coefficients(self, log_w: torch.Tensor, q: float, mode: str, group_size: int,
                      split: str = "train"):  # fmt: skip
        """Estimator on the gathered [N] log-weights, as [N / M, M] groups (CPU, float64)."""
        n = log_w.numel()
        if n % group_size != 0:
            raise ValueError(
                f"the gathered batch holds {n} completions, not a multiple of the group size "
                f"{group_size}"
            )
        lw = log_w.detach().to("cpu", torch.float64).reshape(-1, group_size)
        options = {"mode": mode, "paper_normalization": self.args.paper_normalization}
        if self.args.estimator in RANDOMIZED:
            options["generator"] = (self._estimator_generator if split == "train"
                                    else self._eval_estimator_generator)  # fmt: skip
        return self._estimator_fn(lw, q, **options)

    def _token_logps(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                     compute_entropy=False):  # fmt: skip
        """Per-token log-probs [B, K] (and entropies) of the last K tokens of ``input_ids``."""
        if self.args.logprob_impl == "trl":
            logps, ent, _ = self._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy,
            )  # fmt: skip
            return logps, ent
        from kernels import token_logprobs

        batch_size = batch_size or input_ids.size(0)
        K = logits_to_keep
        logps, ents = [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids = input_ids[start : start + batch_size]
            att = attention_mask[start : start + batch_size]
            with self.accelerator.autocast():
                logits = model(input_ids=ids, attention_mask=att, logits_to_keep=K + 1,
                               use_cache=False).logits  # fmt: skip
            out = token_logprobs(
                logits[:, :-1], ids[:, -K:], temperature=self.temperature,
                return_entropy=compute_entropy, impl=self.args.logprob_impl,
            )  # fmt: skip
            if compute_entropy:
                logps.append(out[0])
                ents.append(out[1])
            else:
                logps.append(out)
        return torch.cat(logps), (torch.cat(ents) if compute_entropy else None)

    def _split_completion(self, ids: list[int], stop_ids) -> tuple[list[int], bool]:
        """:func:`split_rationale` with the marker also searched in the decoded text."""
        return split_rationale(
            ids, self._marker_ids, stop_ids, marker_text=self.args.answer_marker,
            decode=lambda t: self._tokenizer.decode(
                t, skip_special_tokens=False, clean_up_tokenization_spaces=False
            ),
        )  # fmt: skip

    def _check_supported_inputs(self, output) -> None:
        """Reject generation outputs this trainer would silently mistrain on."""
        for key in _MULTIMODAL_KEYS:
            if output.get(key) is not None:
                raise ValueError(
                    f"TsallisGRPOTrainer does not support multimodal inputs: the batch holds "
                    f"{key!r}, which its forward passes (loss and log w) do not pass to the model"
                )
        if self.args.mode == "likelihood" and output.get("tool_mask") is not None:
            raise ValueError(
                "TsallisGRPOTrainer: tools (a 'tool_mask' in the batch) are not supported in "
                "likelihood mode"
            )

    def _local_slice(self, n_local: int) -> slice:
        p = self.accelerator.process_index
        return slice(p * n_local, (p + 1) * n_local)

    def _replace_logged_advantages(self, values: torch.Tensor) -> None:
        logged = self._logs.get("advantages")
        if logged is None:
            return
        for _ in range(min(len(logged), values.numel())):
            logged.pop()
        logged.extend(values.tolist())

    # ------------------------------------------------------------------ TRL overrides

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        if self.args.process_index == 0:  # the streams are identical on every process
            os.makedirs(output_dir, exist_ok=True)
            states = {"train": self._estimator_generator.get_state(),
                      "eval": self._eval_estimator_generator.get_state()}  # fmt: skip
            torch.save(states, os.path.join(output_dir, GENERATOR_STATE_FILE))

    def _load_rng_state(self, checkpoint: str | None) -> None:
        super()._load_rng_state(checkpoint)
        path = None if checkpoint is None else os.path.join(checkpoint, GENERATOR_STATE_FILE)
        if path is not None and os.path.isfile(path):
            states = torch.load(path, weights_only=True)
            self._estimator_generator.set_state(states["train"])
            self._eval_estimator_generator.set_state(states["eval"])

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions,
                                                      completion_ids_list)  # fmt: skip
        self._last_rewards_per_func = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        self._check_supported_inputs(output)
        split = "train" if self.model.training else "eval"
        M = self.num_generations if split == "train" else self.num_generations_eval
        q = self.current_q()
        n_local = output["completion_ids"].size(0)
        device = output["completion_ids"].device
        if self.args.mode == "verifier":
            rpf = self._last_rewards_per_func
            weights = self.reward_weights.to(rpf.device, rpf.dtype)
            unscorable = torch.isnan(rpf).all(dim=1)
            if bool(unscorable.any()):
                rows = torch.nonzero(unscorable).reshape(-1).tolist()
                raise ValueError(
                    f"verifier mode: every reward function returned None for completion(s) "
                    f"{rows[:8]} of the gathered batch (reward functions: "
                    f"{self.reward_func_names}); a completion needs a reward from at least one "
                    "function (None from some functions is skipped, as TRL does: nansum)"
                )
            rewards = (rpf * weights.unsqueeze(0)).nansum(dim=1)
            if bool(torch.isnan(rewards).any()) or bool(((rewards < 0) | (rewards > 1)).any()):
                bad = rewards[torch.isnan(rewards) | (rewards < 0) | (rewards > 1)]
                raise ValueError(
                    "verifier mode needs each completion's combined reward Σ_k weight_k·r_k in "
                    f"[0, 1] (GARL's weights are probabilities), got e.g. {bad[:4].tolist()} "
                    f"(reward functions: {self.reward_func_names}, weights: {weights.tolist()})"
                )
            coefs = self._coefficients(rewards_to_log_w(rewards.double()), q, "verifier", M,
                                       split)  # fmt: skip
            adv = coefs.coef_z.reshape(-1)[self._local_slice(n_local)]
            output["advantages"] = adv.to(device=device, dtype=torch.float32)
            forced = None
        else:
            output, coefs, forced = self._likelihood_batch(output, inputs, q, M, split)
        self.last_coefficients = coefs
        self._replace_logged_advantages(M * coefs.coef_z.reshape(-1).float())
        self._log_coefficients(split, q, coefs, forced)
        return output

    def _likelihood_batch(self, output, inputs, q, M, split="train"):
        device = output["completion_ids"].device
        pad_id = self._tokenizer.pad_token_id
        stop_ids = frozenset(int(i) for i in [*self.eos_token_ids, pad_id] if i is not None)
        comp_ids, comp_mask = output["completion_ids"], output["completion_mask"]
        rows, spans, forced = [], [], []
        for b, example in enumerate(inputs):
            if self.args.answer_column not in example:
                raise ValueError(
                    f"likelihood mode: example {b} has no {self.args.answer_column!r} column "
                    f"(keys: {sorted(example)})"
                )
            ids = comp_ids[b][comp_mask[b].bool()].tolist()
            z, was_forced = self._split_completion(ids, stop_ids)
            y = self._marker_ids + self._tokenize_text(str(example[self.args.answer_column]))
            rows.append(z + y)
            spans.append((len(z), len(y)))
            forced.append(was_forced)
        T = max(len(r) for r in rows)
        B = len(rows)
        new_ids = torch.full((B, T), pad_id, dtype=comp_ids.dtype)
        rationale = torch.zeros((B, T), dtype=torch.long)
        answer = torch.zeros((B, T), dtype=torch.long)
        for b, (r, (lz, ly)) in enumerate(zip(rows, spans, strict=True)):
            new_ids[b, : len(r)] = torch.tensor(r, dtype=comp_ids.dtype)
            rationale[b, :lz] = 1
            answer[b, lz : lz + ly] = 1
        new_ids, rationale, answer = new_ids.to(device), rationale.to(device), answer.to(device)
        new_mask = rationale + answer
        input_ids = torch.cat([output["prompt_ids"], new_ids], dim=1)
        attention = torch.cat([output["prompt_mask"], new_mask], dim=1)
        batch_size = (self.args.per_device_train_batch_size if self.model.training
                      else self.args.per_device_eval_batch_size)  # fmt: skip
        with torch.no_grad():  # the teacher-forced pass: log w_b = log π(y* | x_b, z_b)
            logps, _ = self._token_logps(self.model, input_ids, attention, T, batch_size)
        log_w_local = (logps.double() * answer).sum(dim=1)
        log_w = self.accelerator.gather(log_w_local)
        coefs = self._coefficients(log_w, q, "likelihood", M, split)
        local = self._local_slice(B)
        cz = coefs.coef_z.reshape(-1)[local].to(device, torch.float32)
        cy = coefs.coef_y.reshape(-1)[local].to(device, torch.float32)
        output["completion_ids"] = new_ids
        output["completion_mask"] = new_mask
        output["advantages"] = cz[:, None] * rationale + cy[:, None] * answer
        output["num_items_in_batch"] = self.accelerator.gather(new_mask.sum()).sum()
        for key in ("old_per_token_logps", "ref_per_token_logps", "sampling_per_token_logps",
                    "importance_sampling_ratio", "tool_mask"):  # fmt: skip
            output.pop(key, None)
        forced_all = self.accelerator.gather(torch.tensor(forced, device=device, dtype=torch.float))
        return output, coefs, forced_all

    def _log_coefficients(self, split, q, coefs, forced):
        metrics = self._metrics[split]
        lwm = coefs.log_w_mean.double()
        finite = lwm[~coefs.stalled]
        metrics["tsallis/q"].append(q)
        if finite.numel():  # a step where every group stalled has no finite log w̄: skip it
            metrics["tsallis/log_w_mean"].append(float(finite.mean()))
        metrics["tsallis/w_mean"].append(float(torch.exp(lwm).mean()))
        metrics["tsallis/max_amplified_advantage"].append(
            float(coefs.max_amplified_advantage.max())
        )
        metrics["tsallis/frac_stalled"].append(float(coefs.stalled.double().mean()))
        if forced is not None:
            metrics["tsallis/frac_forced_marker"].append(float(forced.mean()))

    def _compute_loss(self, model, inputs):
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        K = completion_ids.size(1)
        mask = completion_mask
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        logps, entropies = self._token_logps(model, input_ids, attention_mask, K,
                                             compute_entropy=True)  # fmt: skip
        adv = inputs["advantages"]
        if adv.dim() == 1:
            adv = adv.unsqueeze(1)
        split = "train" if self.model.training else "eval"
        if split == "train":
            rows_per_step = (
                self.args.per_device_train_batch_size * self.current_gradient_accumulation_steps
            )
            scale = self.num_generations / rows_per_step
        else:
            scale = self.num_generations_eval / completion_ids.size(0)
        weighted = adv.to(logps.dtype) * logps * mask.to(logps.dtype)
        loss = -weighted.sum() * scale
        m = mask.to(entropies.dtype)
        totals = self.accelerator.reduce(
            torch.stack([(entropies.detach() * m).sum(), m.sum()]), reduction="sum"
        )
        self._metrics[split]["entropy"].append(float(totals[0] / totals[1].clamp(min=1.0)))
        return loss
