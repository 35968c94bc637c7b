"""verl likelihood mode against a real TransferQueue on a local Ray (CPU): rows written by verl's
own ``AgentLoopWorkerTQ._agent_loop_postprocess`` from the ``tsallis_likelihood`` loop's outputs,
then ``TsallisPPOTrainerSync._compute_advantage`` reading them back and writing nested
advantages, compared with an independent per-group computation.

Opt-in (it starts Ray, about 30-60 s on 2 cores): ``TSALLIS_RAY_TESTS=1 pytest
tests/test_integration_verl_likelihood_ray.py``. TransferQueue runs with one storage unit:
its default of several units asks one CPU each and ``tq.init()`` waits forever on 2 cores.
"""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest
import torch

if not os.environ.get("TSALLIS_RAY_TESTS"):
    pytest.skip("set TSALLIS_RAY_TESTS=1 to run the Ray / TransferQueue test",
                allow_module_level=True)  # fmt: skip

ray = pytest.importorskip("ray")
tq = pytest.importorskip("transfer_queue")

from omegaconf import OmegaConf  # noqa: E402
from test_integration_verl_likelihood import (  # noqa: E402  (tests/ is on sys.path)
    CHECKLIST,
    _char_tokenizer,
    _compose,
    _ids,
    _independent,
    _Server,
)
from verl import DataProto  # noqa: E402
from verl.experimental.agent_loop.agent_loop import DictConfigWrap  # noqa: E402
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ  # noqa: E402
from verl.utils.dataset.rl_dataset import RLHFDataset  # noqa: E402
from verl.utils.tensordict_utils import list_of_dict_to_tensordict  # noqa: E402

from tsallis.integrations import verl_likelihood as vl  # noqa: E402


@pytest.fixture(scope="module")
def transfer_queue():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    tq.init(OmegaConf.create({"backend": {"storage_backend": "SimpleStorage", "SimpleStorage": {
        "total_storage_size": 1000, "num_data_storage_units": 1}}}))  # fmt: skip
    yield tq
    tq.close()
    ray.shutdown()


def _worker(config, tokenizer):
    """verl's TransferQueue agent-loop worker, as a plain object (no Ray actor): only its
    post-processing (what it writes to TransferQueue) is used."""
    cls = AgentLoopWorkerTQ.__ray_metadata__.modified_class
    worker = cls.__new__(cls)
    worker.config = config
    worker.rollout_config = config.actor_rollout_ref.rollout
    worker.tokenizer = tokenizer
    worker.processor = None
    worker.reward_loop_worker_handles = None
    worker.distillation_enabled = False
    worker.mm_processor_kwargs = {}
    return worker


# uid -> sampled completions of its sessions ("#" is the marker here); groups of 3 and 2,
# sampled markers, EOS before the marker (forced) and budget (forced)
SESSIONS = {
    "p": ["ab#1", "abcd<eos>", "a#"],
    "q": ["abcdefghijklmnopqrstuvwxyz", "abc#99"],
}


def test_compute_advantage_through_transfer_queue(transfer_queue):
    config = _compose(CHECKLIST + ["algorithm.tsallis.answer_marker='#'"])
    tokenizer = _char_tokenizer()
    worker = _worker(config, tokenizer)
    keys = []

    async def produce():
        for uid, completions in SESSIONS.items():
            for session, text in enumerate(completions):
                sampled = _ids(tokenizer, text.replace("<eos>", "")) + (
                    [tokenizer.eos_token_id] if "<eos>" in text else []
                )
                loop = vl.TsallisLikelihoodAgentLoop(
                    trainer_config=DictConfigWrap(config), server_manager=_Server(sampled),
                    tokenizer=tokenizer, processor=None, dataset_cls=RLHFDataset,
                    data_config=DictConfigWrap(config.data),
                )  # fmt: skip
                kwargs = dict(
                    raw_prompt=[{"role": "user", "content": "six times seven?"}],
                    reward_model={"ground_truth": "42"}, uid=uid, session_id=session,
                    global_steps=0,
                )  # fmt: skip
                out = await loop.run({"temperature": 1.0}, **kwargs)
                await worker._agent_loop_postprocess(out, False, **kwargs)
                keys.append(f"{uid}_{session}_0")

    asyncio.run(produce())
    stored = tq.kv_batch_get(keys=keys, partition_id="train",
                             select_fields=["response_mask", "extra_fields"])  # fmt: skip
    lengths = stored["response_mask"].offsets().diff().tolist()
    # the actor's old_log_probs, as _compute_old_log_prob writes them (jagged, per response)
    g = torch.Generator().manual_seed(11)
    old = [-2.0 * torch.rand(n, generator=g) for n in lengths]
    tq.kv_batch_put(keys=keys, partition_id="train", fields=list_of_dict_to_tensordict(
        [{"old_log_probs": o} for o in old]))  # fmt: skip

    trainer = vl.TsallisPPOTrainerSync(config)
    meta = tq.KVBatchMeta(keys=keys, tags=[{} for _ in keys], partition_id="train")
    metrics = {}
    trainer._compute_advantage(meta, metrics)
    adv = tq.kv_batch_get(keys=keys, partition_id="train", select_fields=["advantages"])

    T = max(lengths)
    extra = vl._non_tensor_list(stored["extra_fields"])
    padded = torch.zeros(len(keys), T)
    mask = torch.zeros(len(keys), T, dtype=torch.int64)
    for b, (o, m) in enumerate(zip(old, stored["response_mask"].unbind(), strict=True)):
        padded[b, : len(o)] = o
        mask[b, : len(m)] = m
    data = DataProto.from_dict(
        tensors={"old_log_probs": padded, "response_mask": mask},
        non_tensors={"uid": np.array([k.split("_")[0] for k in keys], dtype=object),
                     "extra_fields": np.array(extra, dtype=object)},
    )  # fmt: skip
    expected = _independent(data, 0.5, "garl_rloo")
    for b, n in enumerate(lengths):
        torch.testing.assert_close(adv["advantages"][b].to(torch.float64), expected[b, :n],
                                   rtol=1e-6, atol=1e-6)  # fmt: skip
    assert [e["tsallis_end"] for e in extra] == ["marker", "eos", "marker", "budget", "marker"]
    assert metrics["tsallis/num_groups"] == 2.0
    assert metrics["tsallis/frac_forced_marker"] == pytest.approx(2 / 5)
