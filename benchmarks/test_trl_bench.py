"""Step time of TsallisGRPOTrainer against TRL's stock GRPOTrainer, same tiny model and batch.

Run with ``pytest benchmarks/test_trl_bench.py --benchmark-enable -s``. One training step
(``trainer.training_step``: generation, scoring, coefficients, loss, backward) on a tiny Qwen2
(hidden 64, 2 layers, character vocabulary), 16 completions of 16 tokens (4 groups of M = 4).
Sampling runs as usual, then its output is replaced by fixed completions so that every variant
trains on the same tokens. The variants are timed in interleaved rounds (median per variant) and
reported as ratios to stock GRPO in the same run:

* verifier mode, kernels' log-probs (``logprob_impl="torch"`` on CPU) and TRL's (``"trl"``):
  goal <= 1.10x stock GRPO;
* likelihood mode (marker '=', 2-token gold answer): its extra cost is the teacher-forced pass
  (one no-grad forward over prompt + rationale + answer), also timed on its own.

With ``--benchmark-disable`` (CI) every variant runs one step, so the code path is exercised.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

pytest.importorskip("trl")
import torch  # noqa: E402
from _tiny_lm import tiny_lm  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from tsallis.integrations.trl import TsallisGRPOConfig, TsallisGRPOTrainer  # noqa: E402

B, M, T = 16, 4, 16
ROUNDS = 15


def _fixed_completion(i: int, tok) -> list[int]:
    g = torch.Generator().manual_seed(i)
    text = "".join("abcdefgh"[int(j)] for j in torch.randint(0, 8, (T - 4,), generator=g))
    ids = tok(text + ("=12" if i % 2 else "xyz"), add_special_tokens=False)["input_ids"]
    return ids + [tok.eos_token_id]


def _fixed(cls):
    class Fixed(cls):
        def _generate(self, prompts):
            out = list(super()._generate(prompts))
            ids = [_fixed_completion(i, self._tokenizer) for i in range(len(prompts))]
            out[1] = ids
            out[3] = self._tokenizer.batch_decode(ids, skip_special_tokens=True)
            out[4] = None
            return tuple(out)

    return Fixed


def reward(completions, **kwargs):
    return [c.count("a") / max(len(c), 1) for c in completions]


def _trainer(kind: str, tmp: Path):
    model, tok = tiny_lm(0, hidden=64, layers=2)
    common = dict(
        output_dir=str(tmp / kind), use_cpu=True, bf16=False, report_to="none",
        save_strategy="no", per_device_train_batch_size=B, num_generations=M,
        max_completion_length=T, max_steps=1, disable_tqdm=True, seed=0,
    )  # fmt: skip
    ds = Dataset.from_dict({"prompt": ["ab="] * B, "answer": ["12"] * B})
    if kind == "grpo":
        cls, args, rf = GRPOTrainer, GRPOConfig(**common), [reward]
    elif kind.startswith("verifier"):
        impl = kind.split("-")[1]
        cls, rf = TsallisGRPOTrainer, [reward]
        args = TsallisGRPOConfig(q=0.75, logprob_impl=impl, **common)
    else:
        cls, rf = TsallisGRPOTrainer, None
        args = TsallisGRPOConfig(q=0.75, mode="likelihood", answer_marker="=",
                                 logprob_impl="torch", **common)  # fmt: skip
    trainer = _fixed(cls)(model=model, reward_funcs=rf, args=args, train_dataset=ds,
                          processing_class=tok)  # fmt: skip
    trainer.create_optimizer_and_scheduler(num_training_steps=1)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train() otherwise
    batch = [ds[i] for i in range(B)]
    trainer.model.train()
    return trainer, batch


def _step(trainer, batch):
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer.training_step(trainer.model, list(batch), None)
    assert torch.isfinite(loss)
    return loss


@pytest.mark.benchmark(group="trl-step")
def test_trl_step_time_ratios(benchmark, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model runs fastest on one thread
    try:
        _measure(benchmark, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _measure(benchmark, tmp_path):
    kinds = ["grpo", "verifier-torch", "verifier-trl", "likelihood"]
    trainers = {k: _trainer(k, tmp_path) for k in kinds}
    rounds = 1 if benchmark.disabled else ROUNDS
    times = {k: [] for k in kinds}
    for k in kinds:  # warm-up
        _step(*trainers[k])
    for _ in range(rounds):
        for k in kinds:
            t0 = time.perf_counter()
            _step(*trainers[k])
            times[k].append(time.perf_counter() - t0)
    # the teacher-forced pass of likelihood mode on its own (prompt + rationale + answer)
    lik, _ = trainers["likelihood"]
    ids = torch.randint(3, 40, (B, 3 + T + 3))
    tf = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        with torch.no_grad():
            lik._token_logps(lik.model, ids, torch.ones_like(ids), T + 3, B)
        tf.append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["grpo"]
    print(f"\nTRL step time, median of {rounds} interleaved rounds (B={B}, M={M}, T={T}):")
    for k in kinds:
        print(f"  {k:15s} {1e3 * med[k]:8.1f} ms   {med[k] / base:5.2f}x stock GRPO")
    print(f"  teacher-forced pass alone: {1e3 * statistics.median(tf):.1f} ms "
          f"({statistics.median(tf) / base:.2f}x a stock GRPO step)")  # fmt: skip
    print(f"  goal: verifier <= 1.10x stock; measured {med['verifier-torch'] / base:.2f}x (kernels)"
          f", {med['verifier-trl'] / base:.2f}x (TRL log-probs)")  # fmt: skip
    benchmark.extra_info.update({k: med[k] / base for k in kinds})
    benchmark.pedantic(_step, args=trainers["verifier-torch"], rounds=rounds, iterations=1)
