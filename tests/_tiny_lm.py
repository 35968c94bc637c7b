"""A tiny Qwen2 causal LM and a character-level tokenizer, built in code (no hub download).

Shared by the trainer-integration tests and benchmarks. ``tiny_lm(seed)`` returns a model of a
few thousand parameters whose vocabulary is one token per character of :data:`CHARS` plus three
special tokens; ``char_tokenizer()`` the matching ``PreTrainedTokenizerFast`` (left padding,
plain-string prompts, no chat template).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

#: one token per character (the tokenizer splits every character)
CHARS = "0123456789abcdefghijklmnopqrstuvwxyz =+|#"
SPECIALS = ("<pad>", "<eos>", "<unk>")


def char_tokenizer():
    """A character-level fast tokenizer: ids 0..2 are <pad>, <eos>, <unk>; then CHARS."""
    return merged_tokenizer(merges=())


def merged_tokenizer(merges=(" #", "#4")):
    """The character tokenizer plus multi-character tokens ``merges`` (matched first), so that
    a marker such as ``"#"`` tokenizes differently alone (``"#"``) and inside text (``" #"``,
    ``"#4"``), as BPE / SentencePiece tokenizers do. Ids of CHARS are those of
    :func:`char_tokenizer`; the merged tokens come after them."""
    import re

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for piece in (*CHARS, *merges):
        vocab[piece] = len(vocab)
    pattern = "|".join([*(re.escape(m) for m in merges), "."])
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
    )


def tiny_lm(seed: int = 0, *, hidden: int = 32, layers: int = 1, tokenizer=None):
    """A randomly initialised Qwen2ForCausalLM (float32, eval-free defaults) over the char vocab
    (or over ``tokenizer``'s vocabulary)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = tokenizer if tokenizer is not None else char_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model, tok


def save_tiny(path, seed: int = 0, **kw):
    """Save a tiny model and its tokenizer to ``path`` (for code that loads by name)."""
    model, tok = tiny_lm(seed, **kw)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
