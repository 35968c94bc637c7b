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
