"""verl likelihood mode (tsallis.integrations.verl_likelihood) through verl's own classes, on CPU:
the registrations on ``import verl``, the agent loop against verl's ``AgentLoopOutput`` contract
(a rollout server double stands in for the GPU inference engine only), the trainer's advantage
step on real ``DataProto`` batches against an independent computation, the gradient through
verl's own ``ppo_loss``, and the start-up configuration checks on verl's own default config.

verl is imported once for the whole module. In CI (``CI`` set) a missing verl is a collection
error, never a skip.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

try:
    import verl  # noqa: F401  (loads the verl.plugins entry points)
    import verl.trainer.ppo.v1.trainer_sync  # noqa: F401  (needs verl's verl-core extra)
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("the verl extra is not installed", allow_module_level=True)

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.experimental.agent_loop.agent_loop import (  # noqa: E402
    AgentLoopOutput,
    DictConfigWrap,
)
from verl.utils import tensordict_utils as tu  # noqa: E402
from verl.workers.config import ActorConfig  # noqa: E402
from verl.workers.utils.losses import ppo_loss  # noqa: E402

from tsallis import estimators as est  # noqa: E402
from tsallis import sequence_loss  # noqa: E402
from tsallis.integrations import verl_likelihood as vl  # noqa: E402

CHECKLIST = [
    "trainer.v1.trainer_mode=tsallis_sync",
    "actor_rollout_ref.rollout.agent.default_agent_loop=tsallis_likelihood",
    "algorithm.adv_estimator=tsallis_garl_rloo",
    "+algorithm.tsallis.q=0.5",
    "+algorithm.tsallis.answer_marker='####'",
    "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum",
    "actor_rollout_ref.rollout.calculate_log_probs=false",
    "actor_rollout_ref.rollout.n=4",
    "data.train_batch_size=8",
    "actor_rollout_ref.actor.ppo_mini_batch_size=8",
]
"""docs/trainers/verl.md's checklist (with n and the batch sizes of a small run)."""


def _compose(overrides):
    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name="ppo_trainer", overrides=list(overrides))


@pytest.fixture(scope="module")
def config():
    return _compose(CHECKLIST)


# ----------------------------------------------------------------------------- registration


def test_import_verl_registers_agent_loop_and_trainer_mode():
    code = (
        "import verl\n"
        "from verl.trainer.ppo.v1.trainer_base import get_trainer_cls\n"
        "from verl.experimental.agent_loop.agent_loop import _agent_loop_registry as r\n"
        "print(get_trainer_cls('tsallis_sync').__qualname__)\n"
        "print(r['tsallis_likelihood']['_target_'])\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    env.pop("VERL_USE_EXTERNAL_PLUGINS", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout.split()  # fmt: skip
    assert out[-2:] == [
        "TsallisPPOTrainerSync",
        "tsallis.integrations.verl_likelihood.TsallisLikelihoodAgentLoop",
    ]


def test_registration_is_idempotent():
    first = vl.register()
    assert vl.register() == first
    from verl.trainer.ppo.v1.trainer_base import get_trainer_cls

    assert get_trainer_cls(vl.TRAINER_MODE) is vl.TsallisPPOTrainerSync


def test_trainer_behaves_as_sync(config):
    """Built from verl's default config: the replay buffer, refill and sync step of "sync"."""
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    trainer = vl.TsallisPPOTrainerSync(config)
    assert trainer.trainer_mode == "sync"
    assert type(trainer.replay_buffer) is ReplayBuffer
    assert trainer.replay_buffer.trainer_mode == "sync"
    assert trainer.parameter_sync_step == 1
    assert trainer.tsallis.q == 0.5 and trainer.tsallis.estimator == "garl_rloo"


# ----------------------------------------------------------------------------- agent loop


def _char_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = list("abcdefghijklmnopqrstuvwxyz0123456789 #?=+")
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    vocab.update({c: i + 3 for i, c in enumerate(chars)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>")  # fmt: skip
    fast.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}="
    return fast


class _Server:
    """The rollout server double: returns the given token ids, records the request."""

    def __init__(self, token_ids):
        self.token_ids = list(token_ids)
        self.requests = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        self.requests.append({"prompt_ids": list(prompt_ids), **sampling_params})
        return TokenOutput(token_ids=self.token_ids[: sampling_params["max_tokens"]])


def _run_loop(config, tokenizer, sampled, answer="42", marker=None):
    cfg = config if marker is None else OmegaConf.merge(
        config, {"algorithm": {"tsallis": {"answer_marker": marker}}}
    )  # fmt: skip
    from verl.utils.dataset.rl_dataset import RLHFDataset

    server = _Server(sampled)

    async def run():  # verl's loops bind to the running event loop when built
        loop = vl.TsallisLikelihoodAgentLoop(
            trainer_config=DictConfigWrap(cfg), server_manager=server, tokenizer=tokenizer,
            processor=None, dataset_cls=RLHFDataset, data_config=DictConfigWrap(cfg.data),
        )  # fmt: skip
        return await loop.run(
            {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": False},
            raw_prompt=[{"role": "user", "content": "what is six times seven?"}],
            reward_model={"ground_truth": answer, "style": "rule"}, uid="u0", session_id=0,
        )  # fmt: skip

    out = asyncio.run(run())
    return out, (server.requests[0] if server.requests else None)


@pytest.fixture(scope="module")
def tokenizer():
    return _char_tokenizer()


def _ids(tok, text):
    return tok.encode(text, add_special_tokens=False)


@pytest.mark.parametrize(
    "sampled,marker,z,forced,end",
    [
        # sampled one-token marker: part of z; what the policy wrote after it is dropped
        ("abc#17", "#", "abc#", "", "marker"),
        # sampled multi-token marker, inside z
        ("ab####9", "####", "ab####", "", "marker"),
        # sampled EOS before any marker: EOS stays in z, marker forced after it
        ("ab<eos>", "####", "ab<eos>", "####", "eos"),
        # budget ran out: z = every sampled token, marker forced
        ("abcdefghijklmnopqrstuvwxyz", "####", None, "####", "budget"),
    ],
)
def test_agent_loop_output_contract(config, tokenizer, sampled, marker, z, forced, end):
    sampled_ids = _ids(tokenizer, sampled.replace("<eos>", "")) + (
        [tokenizer.eos_token_id] if "<eos>" in sampled else []
    )
    out, request = _run_loop(config, tokenizer, sampled_ids, answer="42", marker=marker)
    assert isinstance(out, AgentLoopOutput)
    R = config.actor_rollout_ref.rollout.response_length
    answer = _ids(tokenizer, "42")
    marker_ids = _ids(tokenizer, marker)
    budget = R - len(marker_ids) - len(answer)
    assert request["max_tokens"] == budget and request["logprobs"] is False
    assert request.get("stop_token_ids") == (marker_ids if len(marker_ids) == 1 else None)
    assert request["prompt_ids"] == _ids(tokenizer, "what is six times seven?=")
    if z is None:
        z_ids = sampled_ids[:budget]
    else:
        z_ids = _ids(tokenizer, z.replace("<eos>", "")) + (
            [tokenizer.eos_token_id] if "<eos>" in z else []
        )
    forced_ids = _ids(tokenizer, forced) if forced else []
    assert out.response_ids == z_ids + forced_ids + answer
    assert out.response_mask == [1] * len(z_ids) + [0] * len(forced_ids) + [1] * len(answer)
    assert out.response_logprobs is None
    assert len(out.response_ids) <= R
    span = [out.extra_fields[k] for k in vl.SPAN_FIELDS]
    assert span == [len(z_ids), len(forced_ids), len(answer), end]
    # what TransferQueue stores (AgentLoopWorkerTQ puts output.as_dict())
    stored = out.as_dict()
    assert stored["responses"].tolist() == out.response_ids
    assert stored["response_mask"].tolist() == out.response_mask
    assert "rollout_log_probs" not in stored and "rm_scores" not in stored


def test_agent_loop_errors(config, tokenizer):
    with pytest.raises(ValueError, match="ground_truth"):
        _run_loop(config, tokenizer, [5], answer="")
    short = OmegaConf.merge(config, {"actor_rollout_ref": {"rollout": {"response_length": 6}}})
    with pytest.raises(ValueError, match="leaves no sampled token"):
        _run_loop(short, tokenizer, [5], answer="42")  # 4 (marker) + 2 (answer) = 6


# ----------------------------------------------------------------------------- advantage step


def _likelihood_batch(spans, uids, T, seed=0, padding=None):
    """A DataProto as the trainer builds it from TransferQueue: old_log_probs, response_mask
    right-padded to T; uid and extra_fields (the agent loop's spans) per row."""
    g = torch.Generator().manual_seed(seed)
    B = len(spans)
    mask = torch.zeros(B, T, dtype=torch.int64)
    extra = np.empty(B, dtype=object)
    for b, (z, f, a) in enumerate(spans):
        mask[b, :z] = 1
        mask[b, z + f : z + f + a] = 1
        extra[b] = dict(zip(vl.SPAN_FIELDS, (z, f, a, "eos" if f else "marker"), strict=True))
    n = torch.tensor([z + f + a for z, f, a in spans])
    width = torch.arange(T)[None] < n[:, None]
    old = (-2.5 * torch.rand(B, T, generator=g) * width).to(torch.float32)
    non_tensors = {"uid": np.array(uids, dtype=object), "extra_fields": extra}
    if padding is not None:
        non_tensors["is_padding"] = np.array(padding, dtype=bool)
    return DataProto.from_dict(tensors={"old_log_probs": old, "response_mask": mask},
                               non_tensors=non_tensors)  # fmt: skip


def _independent(data, q, estimator, padding=None):
    """Per-token advantages from the estimator called on each group directly: log w = Σ of
    old_log_probs over [z + f, z + f + a), A = M·coef_z on [0, z), M·coef_y on the answer."""
    old = data.batch["old_log_probs"].to(torch.float64)
    uids = list(data.non_tensor_batch["uid"])
    extra = list(data.non_tensor_batch["extra_fields"])
    out = torch.zeros_like(old)
    live = [b for b in range(len(uids)) if not (padding and padding[b])]
    for uid in dict.fromkeys(uids[b] for b in live):
        rows = [b for b in live if uids[b] == uid]
        spans = [[extra[b][k] for k in vl.SPAN_FIELDS[:3]] for b in rows]
        log_w = torch.stack([old[b, z + f : z + f + a].sum() for b, (z, f, a) in zip(rows, spans,
                                                                                     strict=True)])
        c = est.get_estimator(estimator)(log_w[None], q, mode="likelihood")
        M = len(rows)
        for i, (b, (z, f, a)) in enumerate(zip(rows, spans, strict=True)):
            out[b, :z] = M * float(c.coef_z[0, i])
            out[b, z + f : z + f + a] = M * float(c.coef_y[0, i])
    return out


# groups "p" (3 rows), "q" (2), "r" (4), interleaved; sampled markers (f = 0) and forced (f > 0)
SPANS = [(5, 0, 2), (3, 4, 2), (6, 0, 1), (2, 4, 3), (7, 0, 2), (4, 4, 2), (1, 4, 2), (8, 0, 1),
         (3, 0, 3)]  # fmt: skip
UIDS = ["p", "q", "r", "p", "r", "q", "r", "p", "r"]


@pytest.mark.parametrize("q", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("estimator,name", [("garl_rloo", "tsallis_garl_rloo"),
                                            ("garl", "tsallis_garl")])  # fmt: skip
def test_advantage_step_matches_independent_computation(q, estimator, name):
    data = _likelihood_batch(SPANS, UIDS, T=12, seed=3)
    settings = vl.LikelihoodSettings(name, estimator, q, {"paper_normalization": False}, 0,
                                     "####", True)  # fmt: skip
    out, metrics = vl.likelihood_advantage_data(data, settings)
    expected = _independent(data, q, estimator)
    torch.testing.assert_close(out.batch["advantages"].to(torch.float64), expected,
                               rtol=1e-6, atol=1e-6)  # fmt: skip
    torch.testing.assert_close(out.batch["returns"], out.batch["advantages"])
    assert metrics["tsallis/num_groups"] == 3.0 and metrics["tsallis/q"] == q
    assert metrics["tsallis/frac_forced_marker"] == pytest.approx(4 / 9)
    config = OmegaConf.create({"algorithm": {"adv_estimator": name, "tsallis": {
        "q": q, "answer_marker": "####"}}})  # fmt: skip
    again, _ = vl.likelihood_advantage_data(_likelihood_batch(SPANS, UIDS, T=12, seed=3), config)
    torch.testing.assert_close(again.batch["advantages"], out.batch["advantages"])
    resp = out.batch["response_mask"].bool()
    assert (out.batch["advantages"][~resp] == 0).all()  # forced markers and padding


def test_padding_rows_join_no_group():
    """verl's synthetic padding rows (is_padding tag, empty response mask) get advantage 0."""
    spans = SPANS + [(0, 0, 0)]
    padding = [False] * len(SPANS) + [True]
    data = _likelihood_batch(spans, UIDS + ["pad0"], T=12, seed=4, padding=padding)
    extra = data.non_tensor_batch["extra_fields"]
    extra[-1] = dict(extra[0])  # verl copies the first row's fields into its padding template
    settings = vl.LikelihoodSettings("tsallis_garl_rloo", "garl_rloo", 0.5, {}, 0, "#", True)
    out, _ = vl.likelihood_advantage_data(data, settings)
    expected = _independent(data, 0.5, "garl_rloo", padding=padding)
    torch.testing.assert_close(out.batch["advantages"].to(torch.float64), expected,
                               rtol=1e-6, atol=1e-6)  # fmt: skip
    assert (out.batch["advantages"][-1] == 0).all()


def test_span_and_mask_disagreement_is_an_error():
    data = _likelihood_batch(SPANS, UIDS, T=12)
    data.batch["response_mask"][1, 3] = 1  # the forced marker marked as trained
    settings = vl.LikelihoodSettings("tsallis_garl_rloo", "garl_rloo", 0.5, {}, 0, "#", True)
    with pytest.raises(ValueError, match="row 1: response_mask"):
        vl.likelihood_advantage_data(data, settings)
    data = _likelihood_batch(SPANS, UIDS, T=12)
    del data.non_tensor_batch["extra_fields"][2]["tsallis_answer_len"]
    with pytest.raises(ValueError, match="row 2 has no answer span"):
        vl.likelihood_advantage_data(data, settings)


class _FakeTQ:
    """TransferQueue's kv_batch_get / kv_batch_put over one in-memory TensorDict (the layout
    AgentLoopWorkerTQ writes: jagged per-row tensors, non-tensor uid and extra_fields)."""

    def __init__(self, store):
        self.store = store
        self.put = None

    def kv_batch_get(self, keys, partition_id, select_fields):
        return self.store.select(*select_fields)

    def kv_batch_put(self, keys, partition_id, fields):
        self.put = fields
        return "meta"


def test_compute_advantage_reads_and_writes_transfer_queue(config, monkeypatch):
    """The trainer's _compute_advantage: TransferQueue in, the pure step, nested advantages out."""
    import transfer_queue
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    data = _likelihood_batch(SPANS, UIDS, T=12, seed=5)
    rows = []
    for b, (z, f, a) in enumerate(SPANS):
        n = z + f + a
        rows.append({
            "uid": UIDS[b],
            "response_mask": data.batch["response_mask"][b, :n].clone(),
            "old_log_probs": data.batch["old_log_probs"][b, :n].clone(),
            "extra_fields": data.non_tensor_batch["extra_fields"][b],
        })  # fmt: skip
    fake = _FakeTQ(list_of_dict_to_tensordict(rows))
    monkeypatch.setattr(transfer_queue, "kv_batch_get", fake.kv_batch_get)
    monkeypatch.setattr(transfer_queue, "kv_batch_put", fake.kv_batch_put)

    class Batch:
        keys = [f"{u}_{i}_0" for i, u in enumerate(UIDS)]
        tags = [{} for _ in UIDS]
        partition_id = "train"

        def __len__(self):
            return len(UIDS)

    trainer = vl.TsallisPPOTrainerSync(config)
    metrics = {}
    assert trainer._compute_advantage(Batch(), metrics) == "meta"
    adv = fake.put["advantages"]
    assert adv.is_nested
    expected = _independent(data, 0.5, "garl_rloo")
    for b, (z, f, a) in enumerate(SPANS):
        torch.testing.assert_close(adv[b].to(torch.float64), expected[b, : z + f + a],
                                   rtol=1e-6, atol=1e-6)  # fmt: skip
    assert metrics["tsallis/num_groups"] == 3.0


# ----------------------------------------------------------------------------- ppo_loss


def _ppo_grad(advantages, response_mask, lengths, log_probs, rollout_n):
    """d(verl's ppo_loss)/d(per-token log-probs), on-policy (old_log_probs = log_probs).
    ``lengths``: each response's length (its attended tokens, forced marker included)."""
    B, R = response_mask.shape
    P = 2
    attended = (torch.arange(R)[None] < torch.as_tensor(lengths)[:, None]).to(torch.int64)
    attention = torch.cat([torch.ones(B, P, dtype=torch.int64), attended], 1)
    lp = log_probs.clone().requires_grad_(True)
    # verl's no-padding layout: response token t's log-prob sits at position P - 1 + t
    flat = [torch.cat([torch.zeros(P - 1), lp[b, : int(lengths[b])], torch.zeros(1)])
            for b in range(B)]  # fmt: skip
    td = TensorDict(
        {
            "prompts": torch.ones(B, P, dtype=torch.int64),
            "responses": torch.ones(B, R, dtype=torch.int64),
            "attention_mask": attention,
            "response_mask": response_mask,
            "old_log_probs": log_probs.detach(),
            "advantages": advantages,
        },
        batch_size=B,
    )
    tu.assign_non_tensor(td, dp_size=1, batch_num_tokens=int(response_mask.sum()),
                         global_batch_size=B)  # fmt: skip
    config = ActorConfig(strategy="fsdp", rollout_n=rollout_n, ppo_micro_batch_size_per_gpu=B,
                         loss_agg_mode="seq-mean-token-sum", use_torch_compile=False)  # fmt: skip
    loss, _ = ppo_loss(config, {"log_probs": torch.cat(flat)}, td)
    (grad,) = torch.autograd.grad(loss, lp)
    return grad.to(torch.float64)


def test_ppo_loss_gradient_is_the_estimators():
    """G = 3 groups of M = 3 (non-contiguous uids), sampled and forced markers: verl's ppo_loss
    on the trainer's advantages has the gradient of the package's surrogate."""
    spans = [(5, 0, 2), (3, 4, 2), (6, 0, 1), (2, 4, 3), (7, 0, 2), (4, 4, 2), (1, 4, 2),
             (8, 0, 1), (3, 0, 3)]  # fmt: skip
    uids = ["a", "b", "c", "a", "c", "b", "b", "a", "c"]
    data = _likelihood_batch(spans, uids, T=12, seed=7)
    settings = vl.LikelihoodSettings("tsallis_garl_rloo", "garl_rloo", 0.75, {}, 0, "#", True)
    out, _ = vl.likelihood_advantage_data(data, settings)
    mask = out.batch["response_mask"]
    old = out.batch["old_log_probs"]
    lengths = [z + f + a for z, f, a in spans]
    grad = _ppo_grad(out.batch["advantages"], mask, lengths, old, rollout_n=3)

    answer = torch.zeros_like(mask)
    for b, (z, f, a) in enumerate(spans):
        answer[b, z + f : z + f + a] = 1
    order = [b for u in "abc" for b in range(9) if uids[b] == u]  # [G, M] layout
    lp = old.to(torch.float64).clone().requires_grad_(True)
    logp_y = (lp * answer).sum(-1)[order]
    logp_z = (lp * (mask - answer)).sum(-1)[order]
    c = est.garl_rloo(logp_y.detach().reshape(3, 3), 0.75, mode="likelihood")
    (ref,) = torch.autograd.grad(sequence_loss(logp_z, logp_y, c.coef_z, c.coef_y), lp)
    torch.testing.assert_close(grad, ref, rtol=1e-5, atol=1e-8)
    assert grad.abs().sum() > 0 and not torch.allclose(c.coef_z, c.coef_y)


# ----------------------------------------------------------------------------- start-up checks


def test_checklist_passes(config):
    s = vl.check_config(config)
    assert (s.q, s.estimator, s.answer_marker) == (0.5, "garl_rloo", "####")


@pytest.mark.parametrize(
    "override,match",
    [
        ("algorithm.rollout_correction.bypass_mode=true", "bypass_mode=false"),
        ("actor_rollout_ref.actor.ppo_mini_batch_size=4", "ppo_mini_batch_size"),
        ("actor_rollout_ref.actor.ppo_epochs=2", "ppo_epochs=1"),
        ("actor_rollout_ref.rollout.calculate_log_probs=true", "calculate_log_probs=false"),
        ("actor_rollout_ref.actor.loss_agg_mode=token-mean", "seq-mean-token-sum"),
        ("actor_rollout_ref.actor.policy_loss.loss_mode=gspo", "loss_mode=vanilla"),
        ("algorithm.use_kl_in_reward=true", "use_kl_in_reward=false"),
        ("actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent",
         "default_agent_loop=tsallis_likelihood"),
        ("actor_rollout_ref.rollout.n=1", "n>=2"),
        ("algorithm.adv_estimator=grpo", "adv_estimator"),
        ("~algorithm.tsallis.q", "q is missing"),
        ("algorithm.tsallis.q=1.5", r"\[0, 1\]"),
        ("~algorithm.tsallis.answer_marker", "answer_marker"),
        ("+algorithm.tsallis.Q=1", "unknown key"),
    ],
)
def test_wrong_configuration_is_a_startup_error(override, match):
    overrides = [o for o in CHECKLIST if not (override.startswith("~") and o.startswith(
        "+" + override[1:]))] + ([] if override.startswith("~") else [override])  # fmt: skip
    config = _compose(overrides)
    with pytest.raises((ValueError, TypeError), match=match):
        vl.check_config(config)
    with pytest.raises((ValueError, TypeError), match=match):  # the trainer refuses to build
        vl.TsallisPPOTrainerSync(config)


class _Dataset:
    def __init__(self, rows):
        import datasets

        self.dataframe = datasets.Dataset.from_list(rows)


def test_dataset_checks(config, tokenizer):
    s = vl.check_config(config)
    enc = lambda t: _ids(tokenizer, t)
    train = _Dataset([{"reward_model": {"ground_truth": "42"}},
                      {"reward_model": {"ground_truth": "1234567"}}])  # fmt: skip
    assert vl.check_datasets(train, None, enc, s, response_length=12) == 7
    with pytest.raises(ValueError, match="response_length >= 12"):
        vl.check_datasets(train, None, enc, s, response_length=11)
    val_leak = _Dataset([{"agent_name": "tsallis_likelihood"}])
    with pytest.raises(ValueError, match="validation row 0"):
        vl.check_datasets(train, val_leak, enc, s, response_length=64)
    vl.check_datasets(train, _Dataset([{"agent_name": "single_turn_agent"}]), enc, s, 64)
    with pytest.raises(ValueError, match="training row 1 .*'single_turn_agent'"):
        vl.check_datasets(_Dataset([{"reward_model": {"ground_truth": "1"},
                                     "agent_name": "tsallis_likelihood"},
                                    {"reward_model": {"ground_truth": "1"},
                                     "agent_name": "single_turn_agent"}]), None, enc, s, 64)
    with pytest.raises(ValueError, match="training row 0 has"):
        vl.check_datasets(_Dataset([{"reward_model": {"ground_truth": ""}}]), None, enc, s, 64)


def test_validation_runs_the_plain_loop(config):
    """_validate hands verl's validation batches to the manager with agent_name set to
    single_turn_agent (never the gold-answer loop)."""
    seen = []

    class Manager:
        def generate_sequences(self, batch):
            seen.append(batch["agent_name"])

    proxy = vl._ValidationLoopManager(Manager())
    batch = TensorDict({"x": torch.zeros(2)}, batch_size=2)
    proxy.generate_sequences(batch)
    assert seen == [vl.VALIDATION_AGENT_LOOP]
    leak = TensorDict({"x": torch.zeros(2)}, batch_size=2)
    tu.assign_non_tensor_data(leak, "agent_name", vl.AGENT_LOOP)
    with pytest.raises(ValueError, match="validation"):
        proxy.generate_sequences(leak)


def _smoke_overrides():
    """The Hydra overrides of examples/verl_likelihood_smoke.sh, its defaults substituted."""
    import re
    import shlex

    path = os.path.join(os.path.dirname(__file__), "..", "examples", "verl_likelihood_smoke.sh")
    text = open(path).read()
    defaults = dict(re.findall(r"^(\w+)=\$\{\w+:-([^}]*)\}", text, flags=re.M))
    defaults["WORK"] = "/tmp/smoke"
    body = text.split("python -m verl.trainer.main_ppo \\\n", 1)[1].split('"$@"', 1)[0]
    out = []
    for line in body.splitlines():
        line = line.strip().rstrip("\\").strip()
        if not line:
            continue
        line = re.sub(r"\$(\w+)", lambda m: defaults[m.group(1)], line)
        (token,) = shlex.split(line)
        out.append(token)
    return out


def test_smoke_script_overrides_pass_the_startup_checks():
    overrides = _smoke_overrides()
    assert "trainer.v1.trainer_mode=tsallis_sync" in overrides
    config = _compose(overrides)
    s = vl.check_config(config)
    assert (s.q, s.answer_marker) == (0.5, "#### ")
    assert config.actor_rollout_ref.rollout.response_length == 256


def test_agent_loop_merged_marker(config):
    """A token holding the marker and text after it ("#4" with marker "#"): z ends before that
    token and the marker is forced (the seam's "merged" case), found through the decoded text."""
    tok = _char_tokenizer()
    vocab = tok.get_vocab()
    merged_id = len(vocab)
    tok.add_tokens(["#4"])  # an added token: matched before the char split, as a BPE merge
    assert _ids(tok, "#4") == [merged_id] and _ids(tok, "#") == [vocab["#"]]
    sampled = _ids(tok, "ab") + [merged_id] + _ids(tok, "2")
    out, request = _run_loop(config, tok, sampled, answer="42", marker="#")
    assert out.response_ids == _ids(tok, "ab") + _ids(tok, "#") + _ids(tok, "42")
    assert out.response_mask == [1, 1, 0, 1, 1]
    assert out.extra_fields["tsallis_end"] == "merged"


def test_validation_hands_the_plain_loop_to_verl(config, monkeypatch):
    """TsallisPPOTrainerSync._validate runs verl's _validate with the validation manager and
    restores the training one afterwards (also when validation raises)."""
    seen = []

    class Manager:
        def generate_sequences(self, batch):
            seen.append(batch["agent_name"])

    def fake_validate(self):
        batch = TensorDict({"x": torch.zeros(1)}, batch_size=1)
        self.agent_loop_manager.generate_sequences(batch)
        return {"val": 1.0}

    monkeypatch.setattr(vl._PPOTrainerSync, "_validate", fake_validate)
    trainer = vl.TsallisPPOTrainerSync(config)
    trainer.agent_loop_manager = manager = Manager()
    assert trainer._validate() == {"val": 1.0}
    assert seen == [vl.VALIDATION_AGENT_LOOP] and trainer.agent_loop_manager is manager

    def failing(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(vl._PPOTrainerSync, "_validate", failing)
    with pytest.raises(RuntimeError):
        trainer._validate()
    assert trainer.agent_loop_manager is manager


@settings(max_examples=25, deadline=None)
@given(perm_seed=st.integers(0, 2**31 - 1), q=st.floats(0.0, 1.0), data_seed=st.integers(0, 99))
def test_advantage_step_is_row_permutation_equivariant(perm_seed, q, data_seed):
    """Rows in any order (verl balances and reorders batches): each row keeps its advantages."""
    data = _likelihood_batch(SPANS, UIDS, T=12, seed=data_seed)
    perm = torch.randperm(len(UIDS), generator=torch.Generator().manual_seed(perm_seed))
    shuffled = data.select_idxs(perm.numpy())
    settings_ = vl.LikelihoodSettings("tsallis_garl_rloo", "garl_rloo", q, {}, 0, "#", True)
    out, _ = vl.likelihood_advantage_data(data, settings_)
    out_perm, _ = vl.likelihood_advantage_data(shuffled, settings_)
    torch.testing.assert_close(out_perm.batch["advantages"], out.batch["advantages"][perm],
                               rtol=1e-6, atol=1e-7)  # fmt: skip
