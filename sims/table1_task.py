r"""The Table-1 task in miniature: k-hop lookups over a small synthetic world.

**The world.** ``n`` entities ``e0 .. e{n-1}`` and one fact per entity, ``a -> f(a)``, where f
is a random permutation without fixed points (seeded).  A *k-hop question* about a start entity
``a`` asks for f^k(a); its gold answer is the last ``answer_len`` entities of the chain
``f(a), f²(a), ..., f^k(a)``, written in a separate *answer alphabet* ``A0 .. A{n-1}`` (the
answer token of entity e_j is A_j).  The answer is computable from the prompt only through the
intermediate entities: a model that knows the single facts but not their composition must write
the chain (the rationale) and copy its end into the answer alphabet.  The separate alphabet
blocks the shortcut of computing one more hop at the answer slot for free: the answer is a copy
of a rationale token, never itself a fact.

**Texts** (space-separated words; one token per word, :func:`tokenizer`):

* question (the prompt):  ``_3 _0 _1 e5 ? ? ? :``  — a filler prefix (``prefix_len`` words from
  ``_0 .. _{n_fillers-1}``), the start entity, ``k`` hop marks ``?`` (k written as repeated marks,
  not as a number token, so an unseen k is not an unseen token), and ``:``;
* completion:  ``e9 e2 e7 = A7`` then ``<eos>`` — the rationale (the chain), the answer marker
  ``=``, the answer;
* pre-training extras: facts ``e5 > e9`` and free chains ``e5 > e9 > e2 > e7`` (no question).

**Splits.** The start entities are split once into ``train`` and ``heldout`` (``n_heldout`` of
them).  RL trains on questions about train starts only; the held-out questions (never trained
on, at any k) tell learnt computation from memorised training answers.  Every entity's fact is
world knowledge (pre-trained for all entities).  Each question's filler prefix is a fixed
function of (world seed, start), so the prompt set is fixed, of equal lengths (no padding).

**Label noise.** ``noisy_answers`` replaces the final answer entity of a given fraction of the
*training* questions by another entity (fixed per question, as in a mislabelled dataset); the
held-out answers stay clean.

Everything is a pure function of its arguments (numpy ``Generator`` seeded from them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = [
    "World",
    "chain",
    "gold_answer",
    "question_words",
    "completion_words",
    "noisy_answers",
    "pretrain_texts",
    "vocabulary",
    "tokenizer",
    "PAD",
    "EOS",
    "UNK",
    "MARKER",
]

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
HOP, ARROW, COLON, MARKER = "?", ">", ":", "="


def _check_int(v, name: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"World.{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


@dataclass(frozen=True)
class World:
    """The synthetic world and its question set (all fields are the difficulty knobs).

    Args:
        n_entities: n (vocabulary size of the world: n entity and n answer tokens).
        hops: k of the RL questions.
        answer_len: how many chain entities the answer holds (1 <= answer_len <= hops).
        n_heldout: start entities held out from RL (evaluated only).
        n_fillers: distinct filler words of the prefix; ``prefix_len``: prefix length of the
            questions (pre-training draws prefixes of every length 0..prefix_len).
        seed: the world's seed (the permutation, the split, the prefixes).

    >>> w = World(n_entities=8, hops=2, n_heldout=2, seed=1)
    >>> sorted(w.train + w.heldout) == list(range(8)), len(w.heldout)
    (True, 2)
    >>> all(w.f[a] != a for a in range(8))
    True
    """

    n_entities: int = 64
    hops: int = 3
    answer_len: int = 1
    n_heldout: int = 16
    n_fillers: int = 4
    prefix_len: int = 3
    seed: int = 0

    def __post_init__(self):
        n = _check_int(self.n_entities, "n_entities", 3)
        k = _check_int(self.hops, "hops", 1)
        _check_int(self.answer_len, "answer_len", 1)
        if self.answer_len > k:
            raise ValueError(f"World.answer_len must be <= hops = {k}, got {self.answer_len}")
        h = _check_int(self.n_heldout, "n_heldout", 1)
        if h >= n:
            raise ValueError(f"World.n_heldout must be < n_entities = {n}, got {h}")
        _check_int(self.n_fillers, "n_fillers", 1)
        _check_int(self.prefix_len, "prefix_len", 0)
        _check_int(self.seed, "seed", 0)

    @cached_property
    def _rng_parts(self) -> tuple:
        rng = np.random.default_rng([0x7AB1E1, self.seed, self.n_entities])
        n = self.n_entities
        # a derangement: a uniform random cyclic shift of a random order has no fixed points
        order = rng.permutation(n)
        f = np.empty(n, dtype=np.int64)
        f[order] = np.roll(order, -1)
        starts = rng.permutation(n)
        heldout = tuple(sorted(int(a) for a in starts[: self.n_heldout]))
        train = tuple(sorted(int(a) for a in starts[self.n_heldout :]))
        prefixes = rng.integers(0, self.n_fillers, size=(n, self.prefix_len))
        return tuple(int(x) for x in f), train, heldout, prefixes

    @property
    def f(self) -> tuple[int, ...]:
        """The facts: f[a] is the entity a points to (a derangement of range(n))."""
        return self._rng_parts[0]

    @property
    def train(self) -> tuple[int, ...]:
        """Start entities of the RL training questions."""
        return self._rng_parts[1]

    @property
    def heldout(self) -> tuple[int, ...]:
        """Start entities of the held-out questions (never trained on)."""
        return self._rng_parts[2]

    def prefix(self, a: int) -> list[int]:
        """The fixed filler prefix of the question about start ``a`` (filler indices)."""
        return [int(x) for x in self._rng_parts[3][a]]

    @property
    def chance(self) -> float:
        """Probability of the gold answer when each answer token is uniform over the answer
        alphabet: n^(-answer_len) (the content-at-chance level)."""
        return float(self.n_entities) ** (-self.answer_len)


def chain(world: World, a: int, k: int) -> list[int]:
    """The entities f(a), f²(a), ..., f^k(a).

    >>> w = World(n_entities=5, hops=2, n_heldout=1)
    >>> c = chain(w, 0, 3)
    >>> c[0] == w.f[0] and c[1] == w.f[c[0]] and len(c) == 3
    True
    """
    out, x = [], int(a)
    for _ in range(k):
        x = world.f[x]
        out.append(x)
    return out


def gold_answer(world: World, a: int, k: int | None = None) -> list[int]:
    """The gold answer of the k-hop question about ``a`` (default k = world.hops): the last
    ``answer_len`` chain entities (entity indices; written as answer tokens)."""
    k = world.hops if k is None else k
    return chain(world, a, k)[-world.answer_len :]


def question_words(world: World, a: int, k: int | None = None, prefix=None) -> list[str]:
    """The question's words: prefix fillers, ``e{a}``, k hop marks, ``:``."""
    k = world.hops if k is None else k
    pre = world.prefix(a) if prefix is None else list(prefix)
    return [f"_{p}" for p in pre] + [f"e{a}"] + [HOP] * k + [COLON]


def completion_words(rationale: list[int], answer: list[int]) -> list[str]:
    """A completion's words: the rationale entities, the marker, the answer tokens (no EOS)."""
    return [f"e{x}" for x in rationale] + [MARKER] + [f"A{x}" for x in answer]


def noisy_answers(world: World, label_noise: float, seed: int = 0) -> dict[int, list[int]]:
    """The training questions' answers with label noise: round(label_noise · |train|) of them
    (chosen by ``seed``) get their final answer entity replaced by a different, random entity.

    Returns {train start: answer entity indices}.  ``label_noise = 0`` gives the gold answers.

    >>> w = World(n_entities=20, hops=2, n_heldout=4)
    >>> ans = noisy_answers(w, 0.25, seed=3)
    >>> sum(ans[a] != gold_answer(w, a) for a in w.train)   # 0.25 * 16
    4
    """
    x = float(label_noise)
    if not (0.0 <= x <= 1.0) or math.isnan(x):
        raise ValueError(f"label_noise must lie in [0, 1], got {label_noise!r}")
    rng = np.random.default_rng([0x401CE, world.seed, int(seed)])
    train = list(world.train)
    n_bad = int(round(x * len(train)))
    bad = set(int(a) for a in rng.permutation(train)[:n_bad])
    out = {}
    for a in train:
        ans = gold_answer(world, a)
        if a in bad:
            wrong = int(rng.integers(0, world.n_entities - 1))
            wrong += wrong >= ans[-1]  # uniform over the other n - 1 entities
            ans = ans[:-1] + [wrong]
        out[a] = ans
    return out


def pretrain_texts(world: World, rng: np.random.Generator, n: int, *,
                   task_hops=(1, 2), max_free_hops: int = 4,
                   mix=(0.4, 0.2, 0.4), copy_share: float = 0.0) -> list[list[str]]:  # fmt: skip
    """``n`` pre-training sequences (word lists, EOS appended), the base model's curriculum:

    * with probability mix[0], a fact ``e_a > e_f(a)`` about any entity;
    * mix[1], a free chain ``e_a > ... `` of 1..max_free_hops hops from any entity;
    * mix[2], a *training* question with k hops, k uniform over ``task_hops`` (each >=
      answer_len), its written chain and answer (the output format and the copy into the answer
      alphabet).

    With ``copy_share`` > 0 that share of the sequences (the rest keeps ``mix``) is a *copy*
    drill instead: a free chain of 1..max_free_hops entities from any start, held-out ones
    included, written in the completion format and copied into the answer alphabet
    (``e_a e_f(a) = A_f(a)``), with no question: the copy rule for every entity, no answer to
    any question.

    Every sequence starts with a random filler prefix of 0..prefix_len words (so that "copy the
    entity before ``=``" is a rule relative to the content, not to a position).  Held-out starts
    never appear in a question.  (``task_hops`` holding RL's ``world.hops`` makes the RL
    questions a warm start: the tests use it.)
    """
    if len(mix) != 3 or min(mix) < 0 or not math.isclose(sum(mix), 1.0):
        raise ValueError(f"mix must be three non-negative shares summing to 1, got {mix!r}")
    if not 0.0 <= copy_share < 1.0:
        raise ValueError(f"copy_share must lie in [0, 1), got {copy_share!r}")
    hops_set = [int(k) for k in task_hops]
    if not hops_set or min(hops_set) < world.answer_len:
        raise ValueError(
            f"task_hops must be non-empty, each >= answer_len = {world.answer_len}, got "
            f"{task_hops!r}"
        )
    ne, train = world.n_entities, world.train
    if copy_share > 0:  # a 4th kind; at 0 the draws are exactly those of the 3-kind mix
        kind = rng.choice(4, size=n, p=[m * (1 - copy_share) for m in mix] + [copy_share])
    else:
        kind = rng.choice(3, size=n, p=list(mix))
    out = []
    for i in range(n):
        pre = [f"_{p}" for p in rng.integers(0, world.n_fillers, int(rng.integers(0, world.prefix_len + 1)))]  # noqa: E501
        if kind[i] == 3:
            a = int(rng.integers(0, ne))
            c = [a, *chain(world, a, int(rng.integers(0, max_free_hops)))]
            words = completion_words(c, c[-world.answer_len :]) if len(c) >= world.answer_len \
                else completion_words(c, c)
        elif kind[i] == 2:
            a = int(train[int(rng.integers(0, len(train)))])
            k = hops_set[int(rng.integers(0, len(hops_set)))]
            c = chain(world, a, k)
            words = question_words(world, a, k, prefix=[]) + completion_words(
                c, c[-world.answer_len :]
            )
        else:
            a = int(rng.integers(0, ne))
            hops = 1 if kind[i] == 0 else int(rng.integers(1, max_free_hops + 1))
            words = [f"e{a}"]
            for x in chain(world, a, hops):
                words += [ARROW, f"e{x}"]
        out.append(pre + words + [EOS])
    return out


def vocabulary(world: World) -> list[str]:
    """The token list (id = index): specials, entities, answer tokens, marks, fillers."""
    n = world.n_entities
    return ([PAD, EOS, UNK] + [f"e{i}" for i in range(n)] + [f"A{i}" for i in range(n)]
            + [HOP, ARROW, COLON, MARKER] + [f"_{i}" for i in range(world.n_fillers)])  # fmt: skip


def tokenizer(world: World):
    """A word-level ``PreTrainedTokenizerFast`` over :func:`vocabulary` (split on spaces,
    decoded with spaces; left padding; no special tokens added), built in code (no hub).

    >>> w = World(n_entities=4, hops=1, n_heldout=1)
    >>> tok = tokenizer(w)
    >>> ids = tok("_0 e1 ? :", add_special_tokens=False)["input_ids"]
    >>> tok.decode(ids)
    '_0 e1 ? :'
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w_: i for i, w_ in enumerate(vocabulary(world))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK, padding_side="left"
    )
    return fast
