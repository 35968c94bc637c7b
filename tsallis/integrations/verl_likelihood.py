r"""The paper's likelihood mode in verl (>= 0.9.1, < 0.10), through verl's plugin points only.

Two components, registered on ``import verl`` (the ``verl.plugins`` entry point imports
:mod:`tsallis.integrations.verl`, which calls :func:`register`):

=========================== ================================================================
agent loop                  ``tsallis_likelihood`` (:class:`TsallisLikelihoodAgentLoop`):
                            samples a rationale z, cuts it at the answer marker and appends the
                            teacher-forced gold answer y* (the row's
                            ``reward_model.ground_truth``)
trainer mode                ``tsallis_sync`` (:class:`TsallisPPOTrainerSync`): verl's
                            synchronous v1 trainer whose advantage step reads
                            ``old_log_probs`` over the answer span and calls
                            :func:`tsallis.integrations.verl.likelihood_advantages`
=========================== ================================================================

The row (the marker convention of :mod:`tsallis.rollouts`)
-----------------------------------------------------------
A response is rebuilt by :func:`tsallis.rollouts.likelihood_row` as
``z (+ forced marker) + y*``: a sampled marker, or a sampled end-of-sequence token before any
marker, belongs to z; when the policy never sampled the marker (EOS, budget, or the marker
merged into a token with text after it) the marker is forced after z. verl's
``response_mask`` is 1 on z and on y* (both are trained) and 0 on a forced marker (context, no
coefficient). The spans are recorded in ``extra_fields`` (:data:`SPAN_FIELDS`), which the trainer
reads back from TransferQueue.

The advantages (Eq. 12 in likelihood mode)
-------------------------------------------
log w_b = Σ_{t in y*} old_log_probs[b, t] = log p(y* | x, z_b) under the policy that sampled
the batch (on-policy: the actor recomputes log-probs over the whole response, so the appended
tokens get the current policy's log-probs). Per group (rows sharing a uid; any order, any
sizes) the estimator gives coef_z and coef_y (:func:`tsallis.rollouts.row_coefficients`), and

    A[b, t] = M_b·coef_z[b] on z,   M_b·coef_y[b] on y*,   0 on a forced marker and padding,

so that verl's on-policy loss with ``loss_agg_mode=seq-mean-token-sum`` has exactly the
gradient of the package's surrogate -(1/G)·Σ_b [coef_z·log π(z_b|x) + coef_y·log π(y*|x, z_b)].

Configuration: docs/trainers/verl.md ("Likelihood mode") lists the overrides;
:func:`check_config` turns every wrong combination into a ValueError when the trainer is
built, before any rollout.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import estimators as _est
from ..rollouts import likelihood_row
from . import verl as _verl_mode

__all__ = [
    "AGENT_LOOP",
    "LIKELIHOOD_KEYS",
    "SPAN_FIELDS",
    "TRAINER_MODE",
    "LikelihoodSettings",
    "TsallisLikelihoodAgentLoop",
    "TsallisPPOTrainerSync",
    "answer_mask_from_spans",
    "check_config",
    "check_datasets",
    "likelihood_advantage_data",
    "register",
]

AGENT_LOOP = "tsallis_likelihood"
"""Agent loop name (``actor_rollout_ref.rollout.agent.default_agent_loop``)."""

TRAINER_MODE = "tsallis_sync"
"""Trainer mode name (``trainer.v1.trainer_mode``)."""

VALIDATION_AGENT_LOOP = "single_turn_agent"
"""The loop validation rows run (verl's plain single-turn loop: no gold answer appended)."""

LIKELIHOOD_KEYS = ("answer_marker", "stop_at_marker")
"""Keys of ``algorithm.tsallis`` read by the likelihood components (besides the estimator's)."""

SPAN_FIELDS = ("tsallis_rationale_len", "tsallis_forced_len", "tsallis_answer_len", "tsallis_end")
"""``extra_fields`` the agent loop writes per response: the spans of :class:`LikelihoodRow`."""

_ESTIMATOR_KEYS = ("q", "paper_normalization", "seed", "num_draws")


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class LikelihoodSettings:
    """The validated likelihood-mode settings of one trainer config.

    Attributes:
        adv_estimator: verl's name (``tsallis_garl``, ``tsallis_garl_rloo``, ``tsallis_paft``).
        estimator: the :data:`tsallis.estimators.ESTIMATORS` name it maps to.
        q: the Tsallis index in [0, 1].
        options: estimator options (``paper_normalization``, PAFT's ``num_draws``).
        seed: PAFT's generator seed.
        answer_marker: the text that ends the rationale (e.g. ``"</think>"``).
        stop_at_marker: pass the marker to the engine as a stop token (one-token markers only).
    """

    adv_estimator: str
    estimator: str
    q: float
    options: Mapping[str, Any]
    seed: int
    answer_marker: str
    stop_at_marker: bool


def _tsallis_block(algorithm) -> Mapping:
    block = algorithm.get(_verl_mode.CONFIG_KEY, None) if hasattr(algorithm, "get") else None
    if block is None or not hasattr(block, "keys"):
        raise ValueError(
            f"likelihood mode reads its settings from algorithm.{_verl_mode.CONFIG_KEY}: add "
            f"+algorithm.{_verl_mode.CONFIG_KEY}.q=<q in [0, 1]> and "
            f"+algorithm.{_verl_mode.CONFIG_KEY}.answer_marker=<text> to the command line; got "
            f"{type(block).__name__}"
        )
    return block


def likelihood_settings(config) -> LikelihoodSettings:
    """Read and validate ``algorithm.adv_estimator`` and ``algorithm.tsallis`` of a full trainer
    config (q, the estimator options, the marker). Errors name the override to fix."""
    algorithm = config.algorithm
    name = algorithm.get("adv_estimator", None)
    if name not in _verl_mode.NAMED_ESTIMATORS:
        raise ValueError(
            f"trainer.v1.trainer_mode={TRAINER_MODE} needs algorithm.adv_estimator set to one "
            f"of {sorted(_verl_mode.NAMED_ESTIMATORS)}, got {name!r}"
        )
    block = _tsallis_block(algorithm)
    estimator_block = {k: block[k] for k in block.keys() if k not in LIKELIHOOD_KEYS}
    q, options, seed = _verl_mode._settings({_verl_mode.CONFIG_KEY: estimator_block}, name)
    marker = block.get("answer_marker", None)
    if not isinstance(marker, str) or not marker:
        raise ValueError(
            f"likelihood mode needs algorithm.{_verl_mode.CONFIG_KEY}.answer_marker, the text "
            f"that ends the rationale (e.g. '</think>'), as a non-empty string; got {marker!r}"
        )
    stop = block.get("stop_at_marker", True)
    if not isinstance(stop, bool):
        raise TypeError(
            f"algorithm.{_verl_mode.CONFIG_KEY}.stop_at_marker must be a bool, got {stop!r}"
        )
    return LikelihoodSettings(
        name, _verl_mode.NAMED_ESTIMATORS[name], q, options, seed, marker, stop
    )


def _get(config, path: str, default=None):
    node = config
    for key in path.split("."):
        if node is None or not hasattr(node, "get"):
            return default
        node = node.get(key, None)
    return default if node is None else node


def check_config(config) -> LikelihoodSettings:
    """Every configuration that would train something other than the estimator, as one
    ValueError listing each problem and its fix; returns the settings when there is none.

    Checked: the estimator and q (:func:`likelihood_settings`); the trainer and agent-loop
    names; on-policy updates (one optimiser step per rollout batch: ``ppo_mini_batch_size ==
    data.train_batch_size``, ``ppo_epochs == 1``); ``bypass_mode`` off and rollout log-probs
    off (the appended tokens have none); the vanilla policy loss with
    ``seq-mean-token-sum``; no KL-in-reward or reward-based group filtering (the reward of a
    likelihood row has seen the gold answer); ``rollout.n >= 2`` for GARL-RLOO.
    """
    settings = likelihood_settings(config)
    actor = "actor_rollout_ref.actor"
    rollout = "actor_rollout_ref.rollout"
    checks: list[tuple[bool, str]] = [
        (
            _get(config, "trainer.use_v1", True) is True,
            "trainer.use_v1=true (tsallis_sync is a v1 trainer)",
        ),
        (
            _get(config, "trainer.v1.trainer_mode") == TRAINER_MODE,
            f"trainer.v1.trainer_mode={TRAINER_MODE}",
        ),
        (
            _get(config, f"{rollout}.agent.default_agent_loop") == AGENT_LOOP,
            f"{rollout}.agent.default_agent_loop={AGENT_LOOP} (got "
            f"{_get(config, f'{rollout}.agent.default_agent_loop')!r}): the rows must carry the "
            "teacher-forced gold answer",
        ),
        (
            _get(config, f"{actor}.ppo_mini_batch_size") == _get(config, "data.train_batch_size"),
            f"{actor}.ppo_mini_batch_size=<data.train_batch_size> (got "
            f"{_get(config, f'{actor}.ppo_mini_batch_size')} vs "
            f"{_get(config, 'data.train_batch_size')}): smaller mini-batches update with "
            "responses of an older policy (off-policy), which the estimator is not",
        ),
        (
            _get(config, f"{actor}.ppo_epochs", 1) == 1,
            f"{actor}.ppo_epochs=1 (got {_get(config, f'{actor}.ppo_epochs')}): later epochs "
            "are off-policy",
        ),
        (
            not _get(config, "algorithm.rollout_correction.bypass_mode", False),
            "algorithm.rollout_correction.bypass_mode=false: bypass mode takes old_log_probs "
            "from the rollout engine, which never scored the appended gold answer",
        ),
        (
            not _get(config, f"{rollout}.calculate_log_probs", False),
            f"{rollout}.calculate_log_probs=false: the teacher-forced answer has no rollout "
            "log-probs (they would be 0.0 fillers in every rollout-vs-actor metric)",
        ),
        (
            _get(config, f"{actor}.loss_agg_mode") == "seq-mean-token-sum",
            f"{actor}.loss_agg_mode=seq-mean-token-sum (got "
            f"{_get(config, f'{actor}.loss_agg_mode')!r}): the estimator's direction is a sum "
            "over each sequence's tokens",
        ),
        (
            _get(config, f"{actor}.policy_loss.loss_mode", "vanilla") == "vanilla",
            f"{actor}.policy_loss.loss_mode=vanilla (got "
            f"{_get(config, f'{actor}.policy_loss.loss_mode')!r})",
        ),
        (
            not _get(config, "algorithm.use_kl_in_reward", False),
            "algorithm.use_kl_in_reward=false: likelihood mode uses no reward (use the actor's "
            "KL loss instead)",
        ),
        (
            not _get(config, "algorithm.filter_groups.enable", False),
            "algorithm.filter_groups.enable=false: the reward of a likelihood row was computed "
            "with the gold answer appended, so filtering on it keeps every group",
        ),
        (
            settings.estimator != "garl_rloo" or (_get(config, f"{rollout}.n", 1) or 1) >= 2,
            f"{rollout}.n>=2 (got {_get(config, f'{rollout}.n')}): GARL-RLOO's baseline "
            "leaves one response out of its group",
        ),
    ]
    problems = [fix for ok, fix in checks if not ok]
    if problems:
        raise ValueError(
            "likelihood mode (trainer.v1.trainer_mode=tsallis_sync) needs:\n  - "
            + "\n  - ".join(problems)
        )
    return settings


# ----------------------------------------------------------------------------- datasets


def _dataset_column(dataset, column: str) -> list | None:
    frame = getattr(dataset, "dataframe", None)
    names = getattr(frame, "column_names", None)
    if frame is None or names is None or column not in names:
        return None
    return list(frame[column])


def _ground_truth(reward_model, where: str) -> str:
    gt = reward_model.get("ground_truth", None) if hasattr(reward_model, "get") else None
    if gt is None or (isinstance(gt, str) and not gt):
        raise ValueError(
            f"likelihood mode teacher-forces the gold answer from reward_model.ground_truth; "
            f"{where} has {gt!r}"
        )
    if not isinstance(gt, str):
        raise TypeError(
            f"reward_model.ground_truth must be the gold answer's text, got "
            f"{type(gt).__name__} ({where})"
        )
    return gt


def check_datasets(train_dataset, val_dataset, encode: Callable[[str], list[int]],
                   settings: LikelihoodSettings, response_length: int) -> int:
    """Start-up checks on the datasets (verl's ``RLHFDataset``: its ``dataframe``).

    Every training row needs a text ``reward_model.ground_truth`` whose tokens plus the
    marker's leave at least one sampled token in ``response_length``; an ``agent_name`` column
    in the training rows must name :data:`AGENT_LOOP`, one in the validation rows must not
    (validation would read the gold answer). Returns the longest answer in tokens.
    """
    marker_len = len(encode(settings.answer_marker))
    if marker_len == 0:
        raise ValueError(f"answer_marker {settings.answer_marker!r} tokenizes to no tokens")
    reward_models = _dataset_column(train_dataset, "reward_model")
    if reward_models is None:
        raise ValueError(
            "likelihood mode needs a reward_model column (with the gold answer in "
            "reward_model.ground_truth) in the training data"
        )
    longest, where = 0, None
    for i, rm in enumerate(reward_models):
        n = len(encode(_ground_truth(rm, f"training row {i}")))
        if n == 0:
            raise ValueError(f"the gold answer of training row {i} tokenizes to no tokens")
        if n > longest:
            longest, where = n, i
    if response_length - marker_len - longest < 1:
        raise ValueError(
            f"actor_rollout_ref.rollout.response_length={response_length} leaves no room to "
            f"sample: the longest gold answer (training row {where}) has {longest} tokens and "
            f"the marker {marker_len}; set response_length >= {longest + marker_len + 1} plus "
            "the rationale budget"
        )
    names = _dataset_column(train_dataset, "agent_name")
    if names is not None:
        bad = [i for i, n in enumerate(names) if n != AGENT_LOOP]
        if bad:
            raise ValueError(
                f"training row {bad[0]} names agent loop {names[bad[0]]!r}; likelihood mode "
                f"trains only rows of {AGENT_LOOP!r} (drop the agent_name column)"
            )
    names = _dataset_column(val_dataset, "agent_name") if val_dataset is not None else None
    if names is not None and AGENT_LOOP in names:
        i = names.index(AGENT_LOOP)
        raise ValueError(
            f"validation row {i} names agent loop {AGENT_LOOP!r}, which appends the gold "
            f"answer: validation would score it; name {VALIDATION_AGENT_LOOP!r} or drop the "
            "column (validation then runs verl's single_turn_agent)"
        )
    return longest


# ----------------------------------------------------------------------------- advantages


def answer_mask_from_spans(extra_fields: Sequence[Mapping], response_mask: torch.Tensor,
                           is_padding: Sequence[bool] | None = None) -> torch.Tensor:
    """The answer span [rationale_len + forced_len, + answer_len) of each row, as a bool
    [B, T] mask, checked against the response mask (the span must be trained tokens, the
    forced marker untrained ones). Padding rows (verl's synthetic no-op rows) get no span."""
    B, T = response_mask.shape
    if len(extra_fields) != B:
        raise ValueError(f"expected {B} extra_fields, got {len(extra_fields)}")
    mask = torch.zeros(B, T, dtype=torch.bool)
    resp = response_mask.to(torch.bool).cpu()
    for b, fields in enumerate(extra_fields):
        if is_padding is not None and is_padding[b]:
            continue
        missing = [k for k in SPAN_FIELDS[:3] if k not in (fields or {})]
        if missing:
            raise ValueError(
                f"row {b} has no answer span ({missing} missing from extra_fields): it was not "
                f"produced by the {AGENT_LOOP!r} agent loop"
            )
        z, f, a = (int(fields[k]) for k in SPAN_FIELDS[:3])
        if a < 1 or z < 0 or f < 0 or z + f + a > T:
            raise ValueError(
                f"row {b}: answer span (rationale {z}, forced {f}, answer {a}) does not fit its "
                f"response of width {T}"
            )
        expected = torch.zeros(T, dtype=torch.bool)
        expected[:z] = True
        expected[z + f : z + f + a] = True
        if not torch.equal(resp[b], expected):
            raise ValueError(
                f"row {b}: response_mask {resp[b].int().tolist()} is not the likelihood row's "
                f"(1 on the {z} rationale and {a} answer tokens, 0 on the {f} forced marker)"
            )
        mask[b, z + f : z + f + a] = True
    return mask


def likelihood_advantage_data(data, settings, generator: torch.Generator | None = None):
    """The trainer's advantage step as a pure ``DataProto -> (DataProto, metrics)``.

    ``settings``: a :class:`LikelihoodSettings` or a trainer config (read with
    :func:`likelihood_settings`). ``generator``: PAFT's draws (None for the deterministic
    estimators).

    ``data.batch``: ``old_log_probs``, ``response_mask`` [B, T] (right-padded);
    ``data.non_tensor_batch``: ``uid`` (group ids), ``extra_fields`` (dicts with
    :data:`SPAN_FIELDS`), optionally ``is_padding`` (bools: verl's synthetic rows, which get
    advantage 0 and join no group). Writes ``advantages`` and ``returns`` (the same tensor)
    from :func:`tsallis.integrations.verl.likelihood_advantages` and returns the
    ``tsallis/*`` metrics (:meth:`tsallis.rollouts.RolloutStats.as_metrics`, plus
    ``frac_forced_marker``).
    """
    if not isinstance(settings, LikelihoodSettings):
        settings = likelihood_settings(settings)
    old = data.batch["old_log_probs"]
    resp = data.batch["response_mask"]
    extra = list(data.non_tensor_batch["extra_fields"])
    uids = list(data.non_tensor_batch["uid"])
    pad = data.non_tensor_batch.get("is_padding", None)
    pad = np.zeros(len(uids), dtype=bool) if pad is None else np.asarray(pad, dtype=bool)
    answer = answer_mask_from_spans(extra, resp, pad)
    live = torch.from_numpy(~pad)
    if not bool(live.any()):
        raise ValueError("likelihood advantages: the batch holds only padding rows")
    rows = torch.nonzero(live).squeeze(-1)
    adv_live, stats = _verl_mode.likelihood_advantages(
        old[rows], answer[rows].to(old.device), resp[rows], [uids[i] for i in rows.tolist()],
        settings.q, settings.estimator, generator=generator, **settings.options,
    )  # fmt: skip
    adv = torch.zeros_like(old)
    adv[rows.to(old.device)] = adv_live
    data.batch["advantages"] = adv
    data.batch["returns"] = adv.clone()
    metrics = stats.as_metrics()
    forced = [int(extra[i][SPAN_FIELDS[1]]) > 0 for i in rows.tolist()]
    metrics["tsallis/frac_forced_marker"] = sum(forced) / len(forced)
    return data, metrics


# ----------------------------------------------------------------------------- verl classes


def _import_verl_components():
    """verl's v1 trainer and agent-loop base (they need verl's verl-core extra)."""
    from verl.experimental.agent_loop.agent_loop import (
        AgentLoopBase,
        AgentLoopMetrics,
        AgentLoopOutput,
    )
    from verl.experimental.agent_loop.agent_loop import register as register_agent_loop
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY, register_trainer
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    return (AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register_agent_loop,
            TRAINER_REGISTRY, register_trainer, PPOTrainerSync)  # fmt: skip


(
    _AgentLoopBase,
    _AgentLoopMetrics,
    _AgentLoopOutput,
    _register_agent_loop,
    _TRAINER_REGISTRY,
    _register_trainer,
    _PPOTrainerSync,
) = _import_verl_components()


def _encoder(tokenizer) -> Callable[[str], list[int]]:
    return lambda text: list(tokenizer.encode(text, add_special_tokens=False))


def _stop_ids(tokenizer) -> frozenset[int]:
    eos = tokenizer.eos_token_id
    ids = eos if isinstance(eos, (list, tuple)) else ([] if eos is None else [eos])
    return frozenset(int(t) for t in ids)


class TsallisLikelihoodAgentLoop(_AgentLoopBase):
    """verl agent loop ``tsallis_likelihood``: one sampled rationale per call, rebuilt as
    ``z (+ forced marker) + y*`` (:func:`tsallis.rollouts.likelihood_row`).

    The engine samples at most ``response_length - len(marker) - len(y*)`` tokens (so the row
    always fits); with ``stop_at_marker`` and a one-token marker it stops at the marker.
    ``response_mask`` is 1 on z and y*, 0 on a forced marker; ``response_logprobs`` is None
    (the appended tokens were never sampled); ``extra_fields`` holds :data:`SPAN_FIELDS`.
    Text prompts only (multimodal rows are an error).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.settings = likelihood_settings(self.config)
        self.response_length = int(self.rollout_config.response_length)
        self.encode = _encoder(self.tokenizer)
        self.marker_ids = self.encode(self.settings.answer_marker)
        if not self.marker_ids:
            raise ValueError(
                f"answer_marker {self.settings.answer_marker!r} tokenizes to no tokens"
            )
        self.stop_ids = _stop_ids(self.tokenizer)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False,
                                     clean_up_tokenization_spaces=False)  # fmt: skip

    def sampling_params_for(self, sampling_params: Mapping[str, Any], answer_len: int) -> dict:
        """The engine's parameters: the sampling budget, no rollout log-probs, the marker as a
        stop token when it is one token."""
        budget = self.response_length - len(self.marker_ids) - answer_len
        if budget < 1:
            raise ValueError(
                f"rollout.response_length={self.response_length} leaves no sampled token for a "
                f"gold answer of {answer_len} tokens after a marker of {len(self.marker_ids)}"
            )
        params = dict(sampling_params)
        params["max_tokens"] = budget
        params["logprobs"] = False
        if self.settings.stop_at_marker and len(self.marker_ids) == 1:
            params["stop_token_ids"] = sorted(set(params.get("stop_token_ids") or [])
                                              | set(self.marker_ids))  # fmt: skip
        return params

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> Any:
        messages = list(kwargs["raw_prompt"])
        if self.processor is not None and (await self.process_multi_modal_info(messages)):
            raise ValueError(f"the {AGENT_LOOP!r} agent loop supports text prompts only")
        answer_text = _ground_truth(kwargs.get("reward_model") or {},
                                    f"prompt uid {kwargs.get('uid')!r}")  # fmt: skip
        answer_ids = self.encode(answer_text)
        if not answer_ids:
            raise ValueError(f"gold answer {answer_text!r} tokenizes to no tokens")
        params = self.sampling_params_for(sampling_params, len(answer_ids))
        prompt_ids = await self.ct_build_initial_tokens(messages)
        output = await self.server_manager.generate(
            request_id=uuid.uuid4().hex, prompt_ids=prompt_ids, sampling_params=params
        )
        sampled = list(output.token_ids)[: params["max_tokens"]]
        row = likelihood_row(
            sampled, answer_ids, self.marker_ids, stop_ids=self.stop_ids, decode=self.decode,
            marker_text=self.settings.answer_marker,
        )  # fmt: skip
        mask = [1] * row.rationale_len + [0] * row.forced_len + [1] * row.answer_len
        metrics = _AgentLoopMetrics(
            num_preempted=output.num_preempted if output.num_preempted is not None else -1
        )
        extra = dict(output.extra_fields or {})
        spans = (row.rationale_len, row.forced_len, row.answer_len, row.end)
        extra.update(zip(SPAN_FIELDS, spans, strict=True))
        extra.update({"turn_scores": [], "tool_rewards": []})
        return _AgentLoopOutput(
            prompt_ids=list(prompt_ids), response_ids=row.ids, response_mask=mask,
            response_logprobs=None, num_turns=2, metrics=metrics, extra_fields=extra,
        )  # fmt: skip


class _ValidationLoopManager:
    """The trainer's agent-loop manager during validation: every validation batch runs
    :data:`VALIDATION_AGENT_LOOP` (verl's plain loop), never the gold-answer one."""

    def __init__(self, manager):
        self._manager = manager

    def __getattr__(self, name):
        return getattr(self._manager, name)

    def generate_sequences(self, batch):
        if "agent_name" in batch.keys():
            names = batch["agent_name"]
            names = [names] if isinstance(names, str) else list(getattr(names, "tolist",
                                                                        lambda: names)())
            if AGENT_LOOP in names:
                raise ValueError(
                    f"a validation row names agent loop {AGENT_LOOP!r}, which appends the gold "
                    "answer; validation must run a plain loop"
                )
        else:
            from verl.utils import tensordict_utils as tu

            tu.assign_non_tensor_data(batch, "agent_name", VALIDATION_AGENT_LOOP)
        return self._manager.generate_sequences(batch)


def _non_tensor_list(value) -> list:
    """A non-tensor TransferQueue field as a list of Python objects: depending on the backend
    it comes back as a NonTensorStack (``tolist``), a LinkedList (a list) or a numpy array."""
    items = value.tolist() if hasattr(value, "tolist") else list(value)
    return [getattr(item, "data", item) for item in items]


class TsallisPPOTrainerSync(_PPOTrainerSync):
    """verl's synchronous v1 trainer with the likelihood-mode advantage step.

    It behaves as ``"sync"`` wherever verl's base class tests ``trainer_mode`` (replay buffer,
    data loader refill, checkpoints, rollout submission): :attr:`trainer_mode` reads
    ``"sync"``. The configuration is checked when it is built (:func:`check_config`, then
    :func:`check_datasets` once the datasets are loaded). Validation runs verl's
    ``single_turn_agent`` (no gold answer appended).
    """

    @property
    def trainer_mode(self) -> str:
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, value: str) -> None:
        if value not in ("sync", TRAINER_MODE):
            raise ValueError(
                f"{type(self).__name__} runs as trainer.v1.trainer_mode={TRAINER_MODE}, got "
                f"{value!r}"
            )

    def __init__(self, config):
        self.tsallis = check_config(config)
        self._tsallis_generator = (
            torch.Generator().manual_seed(self.tsallis.seed)
            if self.tsallis.estimator in _est.RANDOMIZED else None
        )  # fmt: skip
        super().__init__(config)

    def _init_dataloader(self):
        super()._init_dataloader()
        check_datasets(self.train_dataset, self.val_dataset, _encoder(self.tokenizer),
                       self.tsallis, int(self.config.actor_rollout_ref.rollout.response_length))

    def _validate(self):
        manager = self.agent_loop_manager
        self.agent_loop_manager = _ValidationLoopManager(manager)
        try:
            return super()._validate()
        finally:
            self.agent_loop_manager = manager

    def compute_likelihood_advantages(self, data):
        """:func:`likelihood_advantage_data` with this trainer's settings and generator."""
        return likelihood_advantage_data(data, self.tsallis, self._tsallis_generator)

    def _compute_advantage(self, batch, metrics: dict):
        import transfer_queue as tq
        from tensordict import TensorDict
        from verl import DataProto
        from verl.workers.utils.padding import response_to_nested

        fields = ["uid", "response_mask", "old_log_probs", "extra_fields"]
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                               select_fields=fields)  # fmt: skip
        response_mask = data["response_mask"]
        extra = np.empty(len(batch), dtype=object)
        extra[:] = _non_tensor_list(data.pop("extra_fields"))
        uid = np.array(_non_tensor_list(data.pop("uid")), dtype=object)
        padding = np.array([bool(t.get("is_padding", False)) for t in batch.tags], dtype=bool)
        proto = DataProto(batch=data.to_padded_tensor(),
                          non_tensor_batch={"uid": uid, "extra_fields": extra,
                                            "is_padding": padding})  # fmt: skip
        proto, tsallis_metrics = self.compute_likelihood_advantages(proto)
        metrics.update(tsallis_metrics)
        output = TensorDict(
            {k: response_to_nested(proto.batch[k], response_mask) for k in ("advantages",
                                                                             "returns")},
            batch_size=len(batch),
        )
        return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=output)


# ----------------------------------------------------------------------------- registration


def register() -> dict[str, type]:
    """Register the agent loop :data:`AGENT_LOOP` and the trainer mode :data:`TRAINER_MODE`
    with verl. Idempotent (a re-import of this module re-points the names); a name held by
    another class is a ValueError. Returns {name: class}."""
    from verl.experimental.agent_loop import agent_loop as _loops

    held = _TRAINER_REGISTRY.get(TRAINER_MODE)
    if held is not None and held is not TsallisPPOTrainerSync:
        if f"{held.__module__}.{held.__qualname__}" != f"{__name__}.TsallisPPOTrainerSync":
            raise ValueError(f"verl trainer mode {TRAINER_MODE!r} is already registered by {held}")
        _TRAINER_REGISTRY.pop(TRAINER_MODE)
    _register_trainer(TRAINER_MODE)(TsallisPPOTrainerSync)
    target = f"{__name__}.TsallisLikelihoodAgentLoop"
    entry = _loops._agent_loop_registry.get(AGENT_LOOP)
    if entry is not None and entry.get("_target_") != target:
        raise ValueError(f"verl agent loop {AGENT_LOOP!r} is already registered as {entry}")
    _register_agent_loop(AGENT_LOOP)(TsallisLikelihoodAgentLoop)
    return {AGENT_LOOP: TsallisLikelihoodAgentLoop, TRAINER_MODE: TsallisPPOTrainerSync}

