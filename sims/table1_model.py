r"""The Table-1 base model: a small Qwen2 causal LM, built from a config in code, pre-trained
here on single facts, free chains and the output format (:func:`sims.table1_task.pretrain_texts`).

The model is a ``transformers.Qwen2ForCausalLM`` (so the same weights run in TRL's trainer),
with the word-level tokenizer of :func:`sims.table1_task.tokenizer`.  Pre-training is plain
next-token cross-entropy on every non-pad token (AdamW, constant learning rate, one thread so
the result does not depend on the machine's thread count), a pure function of the
(:class:`~sims.table1_task.World`, :class:`BaseSpec`) pair.  :func:`base_model` caches the
pre-trained model on disk under ``<root>/table1_base/<hash>/`` (``save_pretrained``), keyed by
a hash of those settings; a second call loads it.

:func:`sample` draws completions token by token from the softmax (temperature 1, full
recomputation of the short sequences, no KV cache), stopping a row at EOS; the prompts of one
call have equal lengths (the task's questions do), so no padding enters a forward pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .table1_task import World, pretrain_texts, tokenizer

__all__ = ["BaseSpec", "build_model", "pretrain", "base_model", "sample", "encode_words"]

#: bump when pre-training changes (the cache key includes it)
BASE_VERSION = 1


@dataclass(frozen=True)
class BaseSpec:
    """Architecture and pre-training of the base model.

    ``hidden``/``layers``/``heads``/``kv_heads``/``mlp``: the Qwen2 config (intermediate size
    mlp·hidden); ``steps``, ``batch``, ``lr``: pre-training (AdamW, no weight decay);
    ``task_hops``: the hop counts of the questions pre-trained with their chains;
    ``copy_share``: the share of copy drills (:func:`sims.table1_task.pretrain_texts`; 0 = none);
    ``seed``: initial weights and data order.
    """

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    mlp: int = 4
    steps: int = 1500
    batch: int = 128
    lr: float = 3e-3
    task_hops: tuple = (1, 2)
    seed: int = 0
    copy_share: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "task_hops", tuple(int(k) for k in self.task_hops))
        for name in ("hidden", "layers", "heads", "kv_heads", "mlp", "steps", "batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "steps" else 1):
                raise ValueError(f"BaseSpec.{name} must be a positive integer, got {v!r}")
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError(
                f"BaseSpec: heads ({self.heads}) must divide hidden ({self.hidden}) and "
                f"kv_heads ({self.kv_heads}) must divide heads"
            )
        if not 0.0 <= self.copy_share < 1.0:
            raise ValueError(f"BaseSpec.copy_share must lie in [0, 1), got {self.copy_share!r}")
        if not self.lr > 0:
            raise ValueError(f"BaseSpec.lr must be > 0, got {self.lr!r}")


def build_model(world: World, spec: BaseSpec):
    """A freshly initialised Qwen2ForCausalLM (float32) over the world's vocabulary, seeded by
    ``spec.seed``, and its tokenizer."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = tokenizer(world)
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=spec.hidden, intermediate_size=spec.mlp * spec.hidden,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads, max_position_embeddings=64,
        tie_word_embeddings=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model, tok


def encode_words(tok, seqs: list[list[str]]) -> list[list[int]]:
    """Token ids of word lists (one id per word; ValueError on a word outside the vocabulary)."""
    vocab = tok.get_vocab()
    out = []
    for words in seqs:
        try:
            out.append([vocab[w] for w in words])
        except KeyError as err:
            raise ValueError(f"word {err.args[0]!r} is not in the task vocabulary") from None
    return out


def _padded(ids: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(r) for r in ids)
    x = torch.full((len(ids), T), pad, dtype=torch.long)
    m = torch.zeros((len(ids), T), dtype=torch.long)
    for i, r in enumerate(ids):
        x[i, : len(r)] = torch.tensor(r)
        m[i, : len(r)] = 1
    return x, m


def pretrain(world: World, spec: BaseSpec, *, log_every: int = 0):
    """Pre-train the base model (next-token cross-entropy on the curriculum). Returns
    ``(model, tokenizer, losses)``, ``losses`` the per-step training loss (numpy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, tok = build_model(world, spec)
        rng = np.random.default_rng([0xBA5E, spec.seed, world.seed])
        opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
        model.train()
        losses = np.zeros(spec.steps)
        for step in range(spec.steps):
            texts = pretrain_texts(world, rng, spec.batch, task_hops=spec.task_hops,
                                   copy_share=spec.copy_share)  # fmt: skip
            x, m = _padded(encode_words(tok, texts), tok.pad_token_id)
            logits = model(input_ids=x, attention_mask=m).logits[:, :-1]
            tgt = x[:, 1:].masked_fill(m[:, 1:] == 0, -100)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses[step] = float(loss.detach())
            if log_every and step % log_every == 0:
                print(f"pretrain step {step}: loss {losses[step]:.4f}", flush=True)
        model.eval()
        return model, tok, losses
    finally:
        torch.set_num_threads(threads)


def base_key(world: World, spec: BaseSpec) -> str:
    """16 hex digits identifying a pre-trained model (settings + BASE_VERSION)."""
    spec_d = dataclasses.asdict(spec)
    if spec_d["copy_share"] == 0.0:  # the field postdates cached bases: keep their keys
        del spec_d["copy_share"]
    body = {"world": dataclasses.asdict(world), "spec": spec_d, "version": BASE_VERSION}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def base_model(world: World, spec: BaseSpec, root="results"):
    """The pre-trained base model and tokenizer, from ``<root>/table1_base/<key>/`` if cached,
    else pre-trained now and saved there (atomically: a temporary folder renamed into place).

    The returned model is in eval mode; the info dict holds the key, the folder, whether it was
    loaded, and the final pre-training loss.
    """
    from transformers import Qwen2ForCausalLM

    key = base_key(world, spec)
    folder = Path(root) / "table1_base" / key
    tok = tokenizer(world)
    if (folder / "done.json").is_file():
        model = Qwen2ForCausalLM.from_pretrained(folder)
        model.eval()
        info = json.loads((folder / "done.json").read_text())
        return model, tok, {**info, "loaded": True, "folder": str(folder)}
    model, tok, losses = pretrain(world, spec)
    tmp = folder.parent / f".{key}.{os.getpid()}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    info = {"key": key, "world": dataclasses.asdict(world), "spec": dataclasses.asdict(spec),
            "final_loss": float(losses[-50:].mean()) if losses.size else None}  # fmt: skip
    (tmp / "done.json").write_text(json.dumps(info, indent=1))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process committed it first: keep theirs
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return model, tok, {**info, "loaded": False, "folder": str(folder)}


@torch.no_grad()
def sample(model, prompt_ids: torch.Tensor, max_new: int, eos_id: int, pad_id: int,
           generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:  # fmt: skip
    """Completions ``[B, max_new]`` drawn from ``model`` after equal-length prompts ``[B, Tp]``:
    each row's tokens up to and including its first EOS, ``pad_id`` after it."""
    if prompt_ids.dim() != 2:
        raise ValueError(f"prompt_ids must be [B, Tp], got shape {tuple(prompt_ids.shape)}")
    B = prompt_ids.shape[0]
    seq = prompt_ids.clone()
    done = torch.zeros(B, dtype=torch.bool)
    out = torch.full((B, max_new), pad_id, dtype=torch.long)
    for t in range(max_new):
        logits = model(input_ids=seq, use_cache=False).logits[:, -1].float()
        probs = torch.softmax(logits / temperature, dim=-1)
        tok = torch.multinomial(probs, 1, generator=generator)[:, 0]
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        out[:, t] = tok
        done |= tok == eos_id
        seq = torch.cat([seq, tok[:, None]], dim=1)
        if bool(done.all()):
            break
    return out
