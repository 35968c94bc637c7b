"""sims.rng: counter-based uniforms are pinned bit for bit (cached results and every simulator
trajectory depend on them), and do not depend on the batch or on earlier calls."""

import torch

from sims.rng import counter_uniform

#: counter_uniform([0, 1, -7, 2**62 + 3], step=123, n=3), as float hex: the splitmix64 stream
PINNED = [
    ["0x1.ad238316b6da7p-1", "0x1.34fd06fdcb9f2p-1", "0x1.8b7008b1a6539p-1"],
    ["0x1.c65faab3e70a4p-3", "0x1.18c89a47f5534p-1", "0x1.17b3c7835048ap-1"],
    ["0x1.3fd658bad1110p-5", "0x1.f264ab9e55639p-1", "0x1.ef095e99fe8d6p-1"],
    ["0x1.351831a054a10p-4", "0x1.49414cbe90b0cp-1", "0x1.78043d0aa2518p-4"],
]


def test_counter_uniform_values_are_pinned():
    keys = torch.tensor([0, 1, -7, 2**62 + 3], dtype=torch.int64)
    for _ in range(2):  # a second call (cached offsets, in-place mixing) gives the same bits
        u = counter_uniform(keys, 123, 3)
        assert [[float(x).hex() for x in row] for row in u] == PINNED
    assert keys.tolist() == [0, 1, -7, 2**62 + 3]  # the caller's keys are never modified


def test_counter_uniform_prefix_and_batch_independence():
    keys = torch.tensor([5, -9, 11], dtype=torch.int64)
    wide = counter_uniform(keys, 7, 8)
    assert torch.equal(counter_uniform(keys, 7, 3), wide[:, :3])  # index j's draw ignores n
    assert torch.equal(counter_uniform(keys[1:2], 7, 8), wide[1:2])  # and the other rows


def test_seed_keys_follow_experiment_setting_id_and_seed_not_the_cache():
    """A run's randomness is keyed by (experiment, setting id, seed): a cache-version bump or a
    new setting field does not redraw it, seed i is the same whatever n_seeds is, and every
    experiment that draws keys gives its settings distinct ids (so no two share a stream)."""
    from sims.experiments import EXPERIMENTS, get_experiment
    from sims.experiments._common import generator_seed, seed_keys
    from sims.rng import row_key

    s = {"id": "exp/a/q=0.5", "seed": 3, "n_seeds": 4, "lr": 0.1}
    keys = seed_keys("exp", s)
    assert keys.tolist() == [row_key("exp", "exp/a/q=0.5", 3 + i) for i in range(4)]
    assert seed_keys("exp", {**s, "lr": 0.2, "budget": 9}).tolist() == keys.tolist()
    assert seed_keys("exp", {**s, "n_seeds": 7}).tolist()[:4] == keys.tolist()
    assert seed_keys("exp", {**s, "seed": 4}).tolist()[:3] == keys.tolist()[1:]
    assert seed_keys("other", s).tolist() != keys.tolist()
    assert seed_keys("exp", {**s, "id": "exp/b"}).tolist() != keys.tolist()
    assert generator_seed("exp", [s]) == generator_seed("exp", [{**s, "lr": 0.3}])
    assert generator_seed("exp", [s]) != generator_seed("exp", [{**s, "seed": 4}])
    get_experiment("escape_time")  # fills the registry
    for name in EXPERIMENTS:
        exp = get_experiment(name)
        for quick in (True, False):
            ids = [st["id"] for st in exp.settings(quick)]
            assert len(ids) == len(set(ids)), (name, quick)
