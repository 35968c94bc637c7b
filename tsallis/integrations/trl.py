r"""J_Q training with TRL: ``TsallisGRPOConfig`` and ``TsallisGRPOTrainer`` (extra ``trl``).

A drop-in replacement for TRL's ``GRPOConfig`` / ``GRPOTrainer`` that trains with the GARL and
PAFT estimators of the Tsallis loss continuum (Lin & Ie 2026) at any q ∈ [0, 1] (or a schedule
of q, :mod:`tsallis.schedules`), in either mode:

* ``mode="verifier"``: the reward functions' combined reward r_b = Σ_k weight_k·r_bk of each
  completion must lie in [0, 1] (a ValueError otherwise); log w_b = log r_b goes through the
  estimator per group of ``num_generations`` completions of one prompt. A reward function may
  return None for some completions: as in TRL, the sum skips it (nansum over functions); a
  completion for which every function returned None is a ValueError.
* ``mode="likelihood"`` (the paper's main setting): each sampled completion is rebuilt as
  z (+ forced marker) + y* by :func:`tsallis.rollouts.likelihood_rows`, under the package's
  marker convention: a *sampled* marker ``answer_marker`` is part of the rationale z (the
  policy's decision to stop thinking: rationale span, ``coef_z``); a sampled end-of-sequence
  token before any marker also stays in z and the marker is forced after it; at the length
  budget z is every sampled token and the marker is forced; a *forced* marker is context in no
  span. The gold answer y* (tokens of the ``answer_column`` text) is appended and
  log w_b = log π(y* | x_b, z_b) is the sum of its tokens' log-probs, from one extra no-grad
  pass whose LM head projects only the answer rows. The marker is matched as its own token ids
  and otherwise in the decoded text (BPE merges such as ``" ####"``), see
  :func:`tsallis.rollouts.split_rationale`. ``coef_z`` weighs the rationale tokens and
  ``coef_y`` the answer tokens.

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
``loss_type``, PPO ratio clipping and KL options play no part (options that would change the
gradient are rejected by :class:`TsallisGRPOConfig`).

"Exactly ∇L" is the gradient *before* gradient clipping: with ``max_grad_norm > 0`` (TRL's
default 1.0) the optimiser gets the clipped gradient, the same direction with norm at most
``max_grad_norm``. Set ``max_grad_norm=0`` for the unclipped estimator gradient.

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

Logged every generation step (TRL's logs): the fields of the seam's
:class:`tsallis.rollouts.RolloutStats`, the names every host logs: ``tsallis/q``,
``tsallis/frac_stalled`` (groups without a positive weight), ``tsallis/log_w_mean`` (mean over
non-stalled groups of log w̄; not logged when every group stalled), ``tsallis/w_mean``,
``tsallis/max_amplified_advantage`` (the paper's Fig. 3 monitor) and, in likelihood mode,
``tsallis/frac_forced_marker``; plus ``entropy`` (mean per-token entropy of the trained tokens).

Not supported (a ValueError rather than a silently wrong gradient): multimodal inputs
(``pixel_values``, ``image_grid_thw``, ``token_type_ids``, ``mm_token_type_ids``, ...), tools in
likelihood mode, ``mask_truncated_completions``, and a ``q`` that cannot be pickled (a lambda or
closure: every checkpoint saves ``torch.save(args)``; use a :mod:`tsallis.schedules` schedule or
a module-level function). On the command line (``HfArgumentParser`` / ``TrlParser``) ``--q``
takes a float; schedules are given in Python.

The loss never builds ``[B, T, V]`` logits. With ``logprob_impl="auto" | "torch" |
"triton"`` (default ``"auto"``: the fused Triton kernel on CUDA, chunked torch on CPU) it is the
package's own loss from the hidden states, :func:`kernels.fused_linear_sequence_loss`, run
inside the model's forward (so DDP / FSDP hooks see it; an FSDP2 DTensor or ZeRO-3 LM head is
gathered as TRL's own head does, and ``final_logit_softcapping`` / logit scales are applied as
TRL applies them); the teacher-forced pass projects only the answer rows
(:func:`kernels.linear_token_logprobs`). ``"trl"`` uses TRL's fused LM head
(``ChunkedLogProbFunction``) for the per-token log-probs and the package's weighting on top.

vLLM: ``use_vllm=True`` trains on vLLM's samples as if they were the policy's
(``vllm_importance_sampling_correction=False`` is required; TRL's correction reweighs the
per-token loss of the *sampled* completion, which likelihood mode rebuilds, and would also have
to enter the group coefficients, so the combination is rejected at start-up rather than applied
half-way).

Supported TRL: ``>=1.16,<1.17`` (private methods are overridden; importing this module with
another TRL raises ImportError).
"""

from __future__ import annotations

import functools
import os
import pickle
import types
from dataclasses import dataclass, field

import torch

from kernels.layout import ANSWER, RATIONALE, TokenLayout

from ..estimators import RANDOMIZED, get_estimator
from ..rollouts import (
    RowCoefficients,
    answer_match_reward,
    likelihood_rows,
    reward_log_w,
    row_coefficients,
    split_rationale,
)
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
        if self.use_vllm and self.vllm_importance_sampling_correction:
            bad.append(
                "use_vllm=True with vllm_importance_sampling_correction=True (TRL's correction "
                "reweighs the per-token loss of the sampled completions, which likelihood mode "
                "rebuilds, and leaves the group coefficients uncorrected; set "
                "vllm_importance_sampling_correction=False to train on vLLM's samples as "
                "on-policy)"
            )
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
    match of the text after the marker, :func:`tsallis.rollouts.answer_match_reward`).

    Attributes set at each generation step: ``last_rows`` (the global batch's
    :class:`tsallis.rollouts.RowCoefficients`, with its ``stats``) and ``last_coefficients``
    (the estimator's :class:`~tsallis.estimators.Coefficients`, ``[G, M]``).
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
        if args.logprob_impl != "trl":
            _add_tsallis_head(self.model.get_base_model() if hasattr(self.model, "get_base_model")
                              else self.model)  # fmt: skip
        self._last_rewards_per_func: torch.Tensor | None = None
        self.last_rows: RowCoefficients | None = None
        self.last_coefficients = None  # the last generation batch's Coefficients (global)

    # ------------------------------------------------------------------ helpers

    def _tokenize_text(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def current_q(self) -> float:
        """q for the optimiser step about to be taken (``state.global_step`` steps done)."""
        return float(self.q_schedule(int(self.state.global_step)))

    def _rows(self, log_w: torch.Tensor, q: float, mode: str, group_size: int, split: str,
              forced=None) -> RowCoefficients:  # fmt: skip
        """The seam on the gathered [N] log-weights: contiguous groups of M (TRL's layout)."""
        n = log_w.numel()
        if n % group_size != 0:
            raise ValueError(
                f"the gathered batch holds {n} completions, not a multiple of the group size "
                f"{group_size}"
            )
        generator = None
        if self.args.estimator in RANDOMIZED:
            generator = (self._estimator_generator if split == "train"
                         else self._eval_estimator_generator)  # fmt: skip
        return row_coefficients(
            log_w, q, group_size=group_size, estimator=self.args.estimator, mode=mode,
            generator=generator, forced=forced,
            paper_normalization=self.args.paper_normalization,
        )  # fmt: skip

    def _split_completion(self, ids: list[int]):
        """:func:`tsallis.rollouts.split_rationale` with the marker also searched in text."""
        return split_rationale(ids, self._marker_ids, self._stop_ids(), **self._text_search())

    def _stop_ids(self) -> frozenset[int]:
        return frozenset(int(i) for i in self.eos_token_ids if i is not None)

    def _text_search(self) -> dict:
        return dict(
            marker_text=self.args.answer_marker,
            decode=lambda t: self._tokenizer.decode(
                t, skip_special_tokens=False, clean_up_tokenization_spaces=False
            ),
        )

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
            rows = self._rows(reward_log_w(self._combined_rewards()), q, "verifier", M, split)
            cz = rows.coef_z[self._local_slice(n_local)].to(device=device, dtype=torch.float32)
            output["advantages"] = cz
            mask = output["completion_mask"]
            if output.get("tool_mask") is not None:
                mask = mask * output["tool_mask"]
            output["tsallis_span"] = mask.to(torch.int8) * RATIONALE
            output["tsallis_coef"] = torch.stack([cz, cz], dim=1)
        else:
            output, rows = self._likelihood_batch(output, inputs, q, M, split)
        self.last_rows = rows
        self.last_coefficients = rows.coefficients[0]  # one bucket: TRL's groups all have M
        self._replace_logged_advantages(rows.adv_z.float())
        metrics = self._metrics[split]
        for name, value in rows.stats.as_metrics().items():
            if name != "tsallis/num_groups":
                metrics[name].append(value)
        return output

    def _combined_rewards(self) -> torch.Tensor:
        """Σ_k weight_k·r_k per completion (TRL's nansum over functions), gathered, [N]."""
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
        try:
            reward_log_w(rewards)
        except ValueError as e:
            raise ValueError(
                f"verifier mode needs each completion's combined reward Σ_k weight_k·r_k in "
                f"[0, 1] (GARL's weights are probabilities): {e} (reward functions: "
                f"{self.reward_func_names}, weights: {weights.tolist()})"
            ) from None
        return rewards

    def _likelihood_batch(self, output, inputs, q, M, split):
        """Rebuild each completion as z (+ forced marker) + y* (the seam's convention), score
        the gold answer (one no-grad pass; the LM head runs on the answer rows only), gather
        log w and run the estimator on whole groups."""
        device = output["completion_ids"].device
        comp_ids, comp_mask = output["completion_ids"], output["completion_mask"]
        answers = []
        for b, example in enumerate(inputs):
            if self.args.answer_column not in example:
                raise ValueError(
                    f"likelihood mode: example {b} has no {self.args.answer_column!r} column "
                    f"(keys: {sorted(example)})"
                )
            answers.append(self._tokenize_text(str(example[self.args.answer_column])))
        completions = [comp_ids[b][comp_mask[b].bool()].tolist() for b in range(len(inputs))]
        batch = likelihood_rows(
            completions, answers, self._marker_ids, stop_ids=self._stop_ids(),
            pad_id=self._tokenizer.pad_token_id, **self._text_search(),
        )  # fmt: skip
        new_ids = batch.ids.to(device=device, dtype=comp_ids.dtype)
        attention = batch.attention_mask.to(device)
        span = (batch.rationale_mask.to(torch.int8) * RATIONALE
                + batch.answer_mask.to(torch.int8) * ANSWER).to(device)  # fmt: skip
        input_ids = torch.cat([output["prompt_ids"], new_ids], dim=1)
        full_mask = torch.cat([output["prompt_mask"], attention], dim=1)
        batch_size = (self.args.per_device_train_batch_size if self.model.training
                      else self.args.per_device_eval_batch_size)  # fmt: skip
        with torch.no_grad():  # log w_b = log π(y* | x_b, z_b): the answer tokens only
            log_w_local = self._answer_logprob(input_ids, full_mask, new_ids, span == ANSWER,
                                               batch_size)  # fmt: skip
        log_w = self.accelerator.gather(log_w_local)
        forced = self.accelerator.gather(batch.forced.to(device=device, dtype=torch.float32))
        rows = self._rows(log_w, q, "likelihood", M, split, forced=forced.cpu() > 0.5)
        local = self._local_slice(new_ids.size(0))
        cz = rows.coef_z[local].to(device, torch.float32)
        cy = rows.coef_y[local].to(device, torch.float32)
        rat, ans = (span == RATIONALE), (span == ANSWER)
        output["completion_ids"] = new_ids
        output["completion_mask"] = attention  # the forced marker is attended, not trained
        output["advantages"] = cz[:, None] * rat + cy[:, None] * ans
        output["tsallis_span"] = span
        output["tsallis_coef"] = torch.stack([cz, cy], dim=1)
        output["num_items_in_batch"] = self.accelerator.gather((rat | ans).sum()).sum()
        for key in ("old_per_token_logps", "ref_per_token_logps", "sampling_per_token_logps",
                    "importance_sampling_ratio", "tool_mask"):  # fmt: skip
            output.pop(key, None)  # computed for the sampled completions, not these rows
        return output, rows

    def _answer_logprob(self, input_ids, attention_mask, completion_ids, answer, batch_size):
        """Σ over answer tokens of log π(token | prefix), [B] float64, in micro-batches."""
        K = completion_ids.size(1)
        out = []
        for start in range(0, input_ids.size(0), batch_size):
            sl = slice(start, start + batch_size)
            if self.args.logprob_impl == "trl":
                logps, _, _ = self._get_per_token_logps_and_entropies(
                    self.model, input_ids[sl], attention_mask[sl], K)
                out.append((logps.double() * answer[sl]).sum(dim=1))
                continue
            head = functools.partial(_answer_head, ids=completion_ids[sl], answer=answer[sl],
                                     temperature=self.temperature, impl=self.args.logprob_impl)
            with self.accelerator.autocast():
                out.append(self.model(input_ids=input_ids[sl], attention_mask=attention_mask[sl],
                                      tsallis_head=head))  # fmt: skip
        return torch.cat(out)

    def _compute_loss(self, model, inputs):
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        span, coef = inputs["tsallis_span"], inputs["tsallis_coef"]
        split = "train" if self.model.training else "eval"
        if split == "train":
            accumulation = getattr(self, "current_gradient_accumulation_steps",
                                   self.args.gradient_accumulation_steps)  # set in train()
            rows_per_step = self.args.per_device_train_batch_size * accumulation
            normalizer = rows_per_step / self.num_generations
        else:
            normalizer = completion_ids.size(0) / self.num_generations_eval
        if self.args.logprob_impl == "trl":
            logps, entropies, _ = self._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True)
            adv = torch.where(span == ANSWER, coef[:, 1:2], torch.where(span == RATIONALE,
                              coef[:, 0:1], torch.zeros_like(coef[:, :1])))  # fmt: skip
            loss = -(adv.to(logps.dtype) * logps).sum() / normalizer
            trained = (span != 0).to(entropies.dtype)
            ent_sum = (entropies.detach() * trained).sum()
        else:
            head = functools.partial(_loss_head, ids=completion_ids, span=span, coef=coef,
                                     normalizer=normalizer, temperature=self.temperature,
                                     impl=self.args.logprob_impl)  # fmt: skip
            with self.accelerator.autocast():
                loss, ent_sum = model(input_ids=input_ids, attention_mask=attention_mask,
                                      tsallis_head=head)  # fmt: skip
            trained = (span != 0).to(torch.float32)
        totals = self.accelerator.reduce(
            torch.stack([ent_sum.detach().float(), trained.sum().float()]), reduction="sum"
        )
        self._metrics[split]["entropy"].append(float(totals[0] / totals[1].clamp(min=1.0)))
        return loss


# ----------------------------------------------------------------------------- the LM head


def _logit_transform(model) -> tuple[float, float | None]:
    """(logit_scale, final_logit_softcapping) of ``model``'s config, read as TRL's fused head
    reads them (``trl.trainer.utils.add_fused_lm_head``), so both heads score the same logits."""
    cfg = model.config.get_text_config()
    softcap = getattr(cfg, "final_logit_softcapping", None)
    scale = getattr(cfg, "logit_scale", None)
    if scale is None:
        scale = getattr(cfg, "output_multiplier", None)
    if scale is None:
        scale = getattr(cfg, "lm_head_multiplier", None)
    if scale is None and getattr(cfg, "logits_scaling", None) is not None:
        scaling = cfg.logits_scaling
        scale = scaling if cfg.model_type == "hyperclovax" else 1 / scaling
    return (1.0 if scale is None else float(scale)), softcap


def _lm_head(model):
    """The LM head's (weight, bias, gather context): a DeepSpeed ZeRO-3 head is gathered inside
    TRL's ``maybe_gather_lm_head_ctx``, as TRL's own head does; an FSDP2 DTensor is gathered by
    the kernel (:func:`kernels.gather_lm_head`)."""
    from trl.trainer.utils import maybe_gather_lm_head_ctx

    head = model.get_output_embeddings()
    return head.weight, head.bias, maybe_gather_lm_head_ctx(head.weight, head.bias)


def _completion_hidden(hidden: torch.Tensor, K: int) -> torch.Tensor:
    """Hidden states at the positions that predict the last K tokens: [B, K, H]."""
    return hidden[:, -K - 1 : -1]


def _loss_head(model, hidden, *, ids, span, coef, normalizer, temperature, impl):
    """The J_Q loss from the hidden states (:func:`kernels.fused_linear_sequence_loss`); returns
    (loss, Σ entropy over trained tokens)."""
    from kernels import fused_linear_sequence_loss

    K = ids.size(1)
    h = _completion_hidden(hidden, K)
    layout = TokenLayout.from_masks(span == RATIONALE, span == ANSWER)
    weight, bias, ctx = _lm_head(model)
    scale, softcap = _logit_transform(model)
    with ctx:
        res = fused_linear_sequence_loss(
            h, weight, ids, layout, (coef[:, 0].float(), coef[:, 1].float()), bias=bias,
            normalizer=float(normalizer), temperature=temperature, logit_scale=scale,
            final_logit_softcapping=softcap, return_entropy=True, impl=impl,
        )  # fmt: skip
    return res.loss, res.entropy.detach().sum()


def _answer_head(model, hidden, *, ids, answer, temperature, impl):
    """Σ over the answer tokens of their log-probs, [B] float64; the LM head projects only the
    answer rows (:func:`kernels.linear_token_logprobs`)."""
    from kernels import linear_token_logprobs

    h = _completion_hidden(hidden, ids.size(1))[answer]
    weight, bias, ctx = _lm_head(model)
    scale, softcap = _logit_transform(model)
    with ctx:
        lp = linear_token_logprobs(h, weight, ids[answer], bias=bias, temperature=temperature,
                                   logit_scale=scale, final_logit_softcapping=softcap,
                                   impl=impl)  # fmt: skip
    row = torch.nonzero(answer)[:, 0]
    return torch.zeros(ids.size(0), dtype=torch.float64, device=lp.device).index_add_(
        0, row, lp.double()
    )


def _add_tsallis_head(model) -> None:
    """Let ``model(..., tsallis_head=fn)`` run the backbone and return ``fn(model, hidden)``.

    The head runs inside the model's forward (through DDP / FSDP wrappers, so their hooks see
    the call), like TRL's ``fused_lm_head=True``; without ``tsallis_head`` the forward is the one
    it wraps (TRL's patched forward, so generation and TRL's own head are unchanged). The
    backbone is looked up on each call, since FSDP and PEFT replace modules after patching.
    """
    inner = model.forward

    @functools.wraps(type(model).forward)
    def forward(self, *args, tsallis_head=None, **kwargs):
        if tsallis_head is None:
            return inner(*args, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        return tsallis_head(self, hidden)

    model.forward = types.MethodType(forward, model)
