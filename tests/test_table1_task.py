"""The Table-1 task (sims.table1_task): the world, the questions, label noise, the curriculum."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sims.table1_task import (
    EOS,
    World,
    chain,
    completion_words,
    gold_answer,
    noisy_answers,
    pretrain_texts,
    question_words,
    tokenizer,
    vocabulary,
)

worlds = st.builds(
    World,
    n_entities=st.integers(3, 40),
    hops=st.integers(1, 5),
    n_heldout=st.just(1),
    seed=st.integers(0, 50),
)


@settings(max_examples=40, deadline=None)
@given(worlds)
def test_world_is_a_derangement_with_a_partition(w):
    n = w.n_entities
    assert sorted(w.f) == list(range(n))
    assert all(w.f[a] != a for a in range(n))
    assert sorted(w.train + w.heldout) == list(range(n))
    assert not set(w.train) & set(w.heldout)
    assert len(w.heldout) == w.n_heldout
    assert World(**dataclasses.asdict(w)).f == w.f  # a pure function of the fields


@settings(max_examples=40, deadline=None)
@given(worlds, st.integers(0, 39), st.integers(1, 6))
def test_chain_composes_the_facts(w, a, k):
    a %= w.n_entities
    c = chain(w, a, k)
    assert len(c) == k and c[0] == w.f[a]
    assert all(c[i + 1] == w.f[c[i]] for i in range(k - 1))
    assert chain(w, a, k + 1)[:k] == c


def test_gold_answer_is_the_end_of_the_chain_in_the_answer_alphabet():
    w = World(n_entities=10, hops=3, answer_len=2, n_heldout=2, seed=4)
    for a in range(10):
        c = chain(w, a, 3)
        assert gold_answer(w, a) == c[1:]
        words = completion_words(c, gold_answer(w, a))
        assert words == [f"e{c[0]}", f"e{c[1]}", f"e{c[2]}", "=", f"A{c[1]}", f"A{c[2]}"]
    assert w.chance == pytest.approx(0.01)


def test_worlds_differ_by_seed_and_questions_have_equal_length():
    a, b = World(n_entities=30, seed=0), World(n_entities=30, seed=1)
    assert a.f != b.f and a.heldout != b.heldout
    lens = {len(question_words(a, s)) for s in range(30)}
    assert lens == {a.prefix_len + 1 + a.hops + 1}


@settings(max_examples=30, deadline=None)
@given(st.floats(0.0, 1.0), st.integers(0, 20))
def test_label_noise_corrupts_exactly_the_requested_share(noise, seed):
    w = World(n_entities=25, hops=2, n_heldout=5, seed=2)
    ans = noisy_answers(w, noise, seed=seed)
    assert set(ans) == set(w.train)  # held-out questions are never relabelled
    wrong = [a for a in w.train if ans[a] != gold_answer(w, a)]
    assert len(wrong) == round(noise * len(w.train))
    for a in wrong:  # only the final answer entity changes, to another entity
        assert ans[a][:-1] == gold_answer(w, a)[:-1]
        assert 0 <= ans[a][-1] < w.n_entities
    assert noisy_answers(w, noise, seed=seed) == ans


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_bad_label_noise_is_an_error(bad):
    with pytest.raises(ValueError, match="label_noise"):
        noisy_answers(World(n_entities=5, hops=1, n_heldout=1), bad)


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"n_entities": 2}, "n_entities"), ({"hops": 0}, "hops"),
     ({"hops": 2, "answer_len": 3}, "answer_len"), ({"n_heldout": 64}, "n_heldout"),
     ({"seed": -1}, "seed"), ({"hops": True}, "hops")],
)  # fmt: skip
def test_bad_world_fields_are_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        World(**kw)


def test_curriculum_is_true_and_keeps_the_held_out_questions_out():
    w = World(n_entities=20, hops=3, n_heldout=5, seed=3)
    texts = pretrain_texts(w, np.random.default_rng(0), 600)
    vocab = set(vocabulary(w))
    kinds = {"fact": 0, "chain": 0, "question": 0}
    for t in texts:
        assert t[-1] == EOS and set(t) <= vocab
        body = [x for x in t[:-1] if not x.startswith("_")]
        assert len(t) - 1 - len(body) <= w.prefix_len
        if ":" in body:
            kinds["question"] += 1
            a = int(body[0][1:])
            k = body.count("?")
            assert a in w.train and k in (1, 2)
            c = chain(w, a, k)
            assert body[k + 2 :] == completion_words(c, c[-1:])
        else:
            ents = [int(x[1:]) for x in body[::2]]
            assert all(x == ">" for x in body[1::2])
            assert all(ents[i + 1] == w.f[ents[i]] for i in range(len(ents) - 1))
            kinds["fact" if len(ents) == 2 else "chain"] += 1
    assert min(kinds.values()) > 0
    with pytest.raises(ValueError, match="task_hops"):
        pretrain_texts(w, np.random.default_rng(0), 4, task_hops=())


def test_copy_drills_copy_a_true_chain_of_any_entity_and_are_off_by_default():
    """copy_share > 0: that share of the curriculum is free chains (held-out starts included)
    in the completion format, copied into the answer alphabet, with no question; at 0 the draws
    are those of the three-kind mix (so the full preset's bases do not change)."""
    w = World(n_entities=20, hops=3, n_heldout=5, seed=3)
    assert pretrain_texts(w, np.random.default_rng(0), 300) == pretrain_texts(
        w, np.random.default_rng(0), 300, copy_share=0.0)  # fmt: skip
    texts = pretrain_texts(w, np.random.default_rng(1), 2000, copy_share=0.3)
    drills, starts = 0, set()
    for t in texts:
        body = [x for x in t[:-1] if not x.startswith("_")]
        if "=" in body and ":" not in body:
            drills += 1
            ents = [int(x[1:]) for x in body[: body.index("=")]]
            assert body[body.index("=") + 1 :] == [f"A{ents[-1]}"]
            assert all(ents[i + 1] == w.f[ents[i]] for i in range(len(ents) - 1))
            starts.add(ents[0])
    assert 0.25 < drills / len(texts) < 0.35
    assert starts & set(w.heldout)  # the copy rule is drilled on held-out entities too
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="copy_share"):
            pretrain_texts(w, np.random.default_rng(0), 4, copy_share=bad)


def test_tokenizer_is_one_token_per_word():
    w = World(n_entities=12, hops=2, n_heldout=2)
    tok = tokenizer(w)
    words = question_words(w, 3) + completion_words(chain(w, 3, 2), gold_answer(w, 3)) + [EOS]
    ids = tok(" ".join(words), add_special_tokens=False)["input_ids"]
    assert len(ids) == len(words) and tok.unk_token_id not in ids
    assert tok.convert_ids_to_tokens(ids) == words
    assert len(tok) == len(vocabulary(w))
