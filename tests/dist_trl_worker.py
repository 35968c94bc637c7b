"""One optimiser step of TsallisGRPOTrainer on fixed data, in one or several processes.

Run by tests/test_integration_trl.py as ``torchrun --standalone --nproc_per_node 2
tests/dist_trl_worker.py OUT.json`` (DDP over gloo on CPU) and as ``python
tests/dist_trl_worker.py OUT.json`` (one process); the two JSON files must agree.

The global generation batch is 12 completions = 3 groups of M = 4: with 2 processes each holds 6
rows, so the middle group straddles them. Sampling is replaced by a deterministic completion per
global row (a function of the row index only), so both runs see the same data whatever the
number of processes. Both modes run: verifier (reward = share of 'a' characters) and likelihood
(marker '=', gold answer '12').
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _tiny_lm import tiny_lm  # noqa: E402

GLOBAL_ROWS = 12
M = 4


def _completion_for_row(g: int, tok) -> list[int]:
    """A deterministic completion for global row g: random chars, some with the marker '=',
    some ending with <eos>, lengths 1..6."""
    import torch

    gen = torch.Generator().manual_seed(1000 + g)
    chars = "abc="
    n = 1 + int(torch.randint(0, 6, (1,), generator=gen))
    text = "".join(chars[int(i)] for i in torch.randint(0, len(chars), (n,), generator=gen))
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if g % 3 == 0:
        ids = ids + [tok.eos_token_id]
    return ids


def share_of_a(completions, **kwargs):
    return [(c.count("a") / len(c)) if c else 0.0 for c in completions]


def run(mode: str, out_dir: str):
    import torch
    from datasets import Dataset

    from tsallis.integrations.trl import TsallisGRPOConfig, TsallisGRPOTrainer

    class FixedTrainer(TsallisGRPOTrainer):
        def _generate(self, prompts):
            out = list(super()._generate(prompts))
            n_local = len(prompts)
            p = self.accelerator.process_index
            ids = [_completion_for_row(p * n_local + i, self._tokenizer) for i in range(n_local)]
            out[1] = ids
            out[3] = self._tokenizer.batch_decode(ids, skip_special_tokens=True)
            out[4] = None
            return tuple(out)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    model, tok = tiny_lm(seed=3)
    ds = Dataset.from_dict({"prompt": ["ab="] * 24, "answer": ["12"] * 24})
    args = TsallisGRPOConfig(
        output_dir=out_dir, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
        per_device_train_batch_size=GLOBAL_ROWS // world, num_generations=M,
        max_completion_length=6, max_steps=1, logging_steps=1, disable_tqdm=True,
        optim="sgd", learning_rate=0.5, lr_scheduler_type="constant", weight_decay=0.0,
        max_grad_norm=0.0, seed=0, q=0.75, mode=mode, estimator="garl_rloo",
        answer_marker="=" if mode == "likelihood" else None, logprob_impl="torch",
        shuffle_dataset=False,
    )  # fmt: skip
    trainer = FixedTrainer(
        model=model, reward_funcs=[share_of_a] if mode == "verifier" else None, args=args,
        train_dataset=ds, processing_class=tok,
    )  # fmt: skip
    before = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
    trainer.train()
    after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    c = trainer.last_coefficients
    return {
        "coef_z": c.coef_z.reshape(-1).tolist(),
        "coef_y": c.coef_y.reshape(-1).tolist(),
        "delta": (after - before).tolist(),
        "loss": trainer.state.log_history[0]["loss"],
        "world": world,
    }


def main():
    out_path = sys.argv[1]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("verifier", "likelihood"):
            results[mode] = run(mode, os.path.join(tmp, mode))
    if int(os.environ.get("RANK", "0")) == 0:
        with open(out_path, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()
