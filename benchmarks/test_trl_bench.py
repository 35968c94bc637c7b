"""One TRL training step: TsallisGRPOTrainer against TRL's stock GRPOTrainer, peak memory and
time, at a realistic vocabulary.

Run with ``pytest benchmarks/test_trl_bench.py --benchmark-enable -s``; it prints the table and
writes ``benchmarks/results/trl_step_cpu.json`` (machine, versions, commit, load). The model is a
tiny Qwen2 (hidden 64, 2 layers) with Qwen's vocabulary size V = 151,936, so the LM head
dominates as it does in a real model; 16 completions of 16 tokens (4 groups of M = 4). Sampling
runs as usual (every variant pays it), then its output is replaced by fixed completions so that
every variant trains on the same tokens. One step is ``trainer.training_step`` (generation,
scoring, coefficients, the teacher-forced pass in likelihood mode, loss, backward).

* **time**: variants interleaved in rounds in one process, median per variant, as ratios to
  stock GRPO in the same run. Goals: verifier mode <= 1.05x, likelihood mode <= 1.15x.
* **peak memory**: each variant in its own process (glibc with a fixed mmap threshold, so
  large tensors are returned to the OS when freed); after a warm-up step (so Adam's states
  exist) and ``malloc_trim``, the kernel's peak-RSS counter is reset (``/proc/self/clear_refs``)
  and one more step runs, from no gradients: peak extra = peak RSS during the step (gradients
  included) - RSS before it. Goal: <= 1.05x
  stock in both modes.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

pytest.importorskip("trl")
import torch  # noqa: E402

B, M, T, V, HIDDEN = 16, 4, 16, 151_936, 64
ROUNDS = 7
KINDS = ("grpo", "verifier", "likelihood")
RESULT = ROOT / "benchmarks" / "results" / "trl_step_cpu.json"


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


def _model():
    from _tiny_lm import char_tokenizer
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = char_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=V, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=False)  # fmt: skip
    return Qwen2ForCausalLM(cfg), tok


def _trainer(kind: str, tmp: Path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from tsallis.integrations.trl import TsallisGRPOConfig, TsallisGRPOTrainer

    model, tok = _model()
    common = dict(
        output_dir=str(tmp / kind), use_cpu=True, bf16=False, report_to="none",
        save_strategy="no", per_device_train_batch_size=B, num_generations=M,
        max_completion_length=T, max_steps=1, disable_tqdm=True, seed=0,
    )  # fmt: skip
    ds = Dataset.from_dict({"prompt": ["ab="] * B, "answer": ["12"] * B})
    if kind == "grpo":
        cls, args, rf = GRPOTrainer, GRPOConfig(**common), [reward]
    elif kind == "verifier":
        cls, rf, args = TsallisGRPOTrainer, [reward], TsallisGRPOConfig(q=0.75, **common)
    else:
        cls, rf = TsallisGRPOTrainer, None
        args = TsallisGRPOConfig(q=0.75, mode="likelihood", answer_marker="=", **common)
    trainer = _fixed(cls)(model=model, reward_funcs=rf, args=args, train_dataset=ds,
                          processing_class=tok)  # fmt: skip
    trainer.create_optimizer_and_scheduler(num_training_steps=1)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train() otherwise
    trainer.model.train()
    return trainer, [ds[i] for i in range(B)]


def _step(trainer, batch):
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer.training_step(trainer.model, list(batch), None)
    trainer.optimizer.step()
    assert torch.isfinite(loss)


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_extra_mib(kind: str, tmp: str) -> float:
    """Peak RSS of one step above the RSS before it, in MiB (run in a fresh process)."""
    torch.set_num_threads(1)
    trainer, batch = _trainer(kind, Path(tmp))
    _step(trainer, batch)  # warm-up: Adam's states exist from here on
    import ctypes
    import gc

    trainer.model.zero_grad(set_to_none=True)  # the step's gradients count as its memory
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap back to the OS: RSS = live memory
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter (VmHWM)
    before = _rss_kb("VmRSS")
    _step(trainer, batch)
    return (_rss_kb("VmHWM") - before) / 1024


def _peak_in_subprocess(kind: str, tmp: Path) -> float:
    here = str(Path(__file__).parent)
    code = (f"import sys; sys.path.insert(0, {here!r}); import test_trl_bench as b; "
            f"print(b.peak_extra_mib({kind!r}, {str(tmp)!r}))")
    # large blocks from mmap (a fixed threshold), so that a freed tensor leaves the RSS at once
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1",
               MALLOC_MMAP_THRESHOLD_="131072")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=ROOT, check=True)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.benchmark(group="trl-step")
def test_trl_step_memory_and_time(benchmark, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _measure(benchmark, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _measure(benchmark, tmp_path):
    rounds = 1 if benchmark.disabled else ROUNDS
    load_before = os.getloadavg()
    trainers = {k: _trainer(k, tmp_path) for k in KINDS}
    for k in KINDS:
        _step(*trainers[k])  # warm-up
    times = {k: [] for k in KINDS}
    for _ in range(rounds):
        for k in KINDS:
            t0 = time.perf_counter()
            _step(*trainers[k])
            times[k].append(time.perf_counter() - t0)
    del trainers
    peaks = {k: _peak_in_subprocess(k, tmp_path) for k in KINDS}
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nTRL step, V={V}, hidden {HIDDEN}, B={B}, M={M}, T={T}; median of {rounds} "
          f"interleaved rounds; load average {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f}")
    for k in KINDS:
        print(f"  {k:11s} {1e3 * med[k]:8.1f} ms  {med[k] / med['grpo']:5.2f}x   peak extra "
              f"{peaks[k]:8.1f} MiB  {peaks[k] / peaks['grpo']:5.2f}x stock")  # fmt: skip
    if benchmark.disabled:
        return
    import tsallis

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()  # fmt: skip
    import transformers
    import trl

    record = {
        "benchmark": "benchmarks/test_trl_bench.py",
        "command": "pytest benchmarks/test_trl_bench.py --benchmark-enable -s",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU only (torch threads 1)",
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "versions": {"torch": torch.__version__, "trl": trl.__version__,
                     "transformers": transformers.__version__,
                     "tsallis-continuum": tsallis.__version__},  # fmt: skip
        "commit": commit,
        "shape": {"V": V, "hidden": HIDDEN, "layers": 2, "B": B, "M": M, "T": T},
        "rounds": rounds,
        "step_ms": {k: 1e3 * med[k] for k in KINDS},
        "step_ratio_vs_stock": {k: med[k] / med["grpo"] for k in KINDS},
        "peak_extra_mib": peaks,
        "peak_ratio_vs_stock": {k: peaks[k] / peaks["grpo"] for k in KINDS},
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULT.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(RESULT)
    benchmark.extra_info.update(record["step_ratio_vs_stock"])
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
