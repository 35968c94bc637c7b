"""The trainer seam (tsallis.rollouts): the marker convention, grouping and scale, statistics,
reward round-off."""

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tsallis import estimators
from tsallis.rollouts import (
    REWARD_TOLERANCE,
    RolloutStats,
    check_rewards,
    likelihood_row,
    likelihood_rows,
    reward_log_w,
    row_coefficients,
    split_rationale,
)

# ----------------------------------------------------------------------------- the marker


def test_sampled_marker_is_part_of_the_rationale():
    cut = split_rationale([5, 6, 9, 9, 7], [9, 9])
    assert (cut.rationale, cut.forced, cut.end) == ([5, 6, 9, 9], False, "marker")
    assert split_rationale([9, 9, 5], [9, 9]).rationale == [9, 9]  # marker first
    assert split_rationale([5, 9, 7, 9, 9], [9, 9]).rationale == [5, 9, 7, 9, 9]  # partial skip


def test_eos_before_marker_stays_in_the_rationale_and_forces_the_marker():
    cut = split_rationale([5, 1, 9], [9], stop_ids={1})
    assert (cut.rationale, cut.forced, cut.end) == ([5, 1], True, "eos")
    # a marker after the stop token was never generated
    assert split_rationale([5, 1, 9, 9], [9], stop_ids={1}).end == "eos"


def test_budget_forces_the_marker():
    assert split_rationale([5, 6, 7], [9]) == split_rationale([5, 6, 7], [9], stop_ids={1})
    cut = split_rationale([], [9])
    assert (cut.rationale, cut.forced, cut.end) == ([], True, "budget")


def test_bad_marker_arguments():
    with pytest.raises(ValueError, match="at least one token"):
        split_rationale([5], [])
    with pytest.raises(ValueError, match="both decode and marker_text"):
        split_rationale([5], [9], decode=lambda t: "")
    with pytest.raises(ValueError, match="non-empty"):
        split_rationale([5], [9], decode=lambda t: "", marker_text="")


# a toy BPE: single characters plus merged tokens " #", "#4", "ab"
_VOCAB = ["<eos>", *"ab #42x", " #", "#4", "ab"]


def _decode(ids):
    return "".join(_VOCAB[i] for i in ids if i != 0)


def _t(*pieces):
    return [_VOCAB.index(p) for p in pieces]


@pytest.mark.parametrize(
    "pieces, want_rationale, want_end",
    [
        (("a", "b", " #", "4", "2"), ("a", "b", " #"), "marker"),  # merged before: kept (sampled)
        (("ab", "#", "4"), ("ab", "#"), "marker"),
        (("#", "4"), ("#",), "marker"),
        (("a", "#4", "2"), ("a",), "merged"),  # marker shares a token with answer text
        (("a", "b", "x"), ("a", "b", "x"), "budget"),
        (("a", "<eos>", " #", "4"), ("a", "<eos>"), "eos"),  # text after EOS is not searched
        (("a", " ", "#4", "b", "#"), ("a", " "), "merged"),  # first occurrence wins
    ],
)
def test_marker_found_in_decoded_text(pieces, want_rationale, want_end):
    cut = split_rationale(_t(*pieces), _t("#"), {0}, decode=_decode, marker_text="#")
    assert cut.rationale == _t(*want_rationale) and cut.end == want_end
    assert cut.forced == (want_end != "marker")


def test_text_search_agrees_with_the_id_match_for_a_character_tokenizer():
    ids = _t("a", "b", "#", "4")
    assert split_rationale(ids, _t("#"), {0}, decode=_decode, marker_text="#") == \
        split_rationale(ids, _t("#"), {0})  # fmt: skip


def test_likelihood_row_spans():
    sampled = likelihood_row([5, 9, 7], [3, 4], [9])
    assert (sampled.ids, sampled.rationale_len, sampled.forced_len, sampled.answer_len) == \
        ([5, 9, 3, 4], 2, 0, 2)  # fmt: skip
    eos = likelihood_row([5, 1, 0], [3], [9, 8], stop_ids={1})
    assert eos.ids == [5, 1, 9, 8, 3] and eos.rationale_mask == [1, 1, 0, 0, 0]
    assert eos.answer_mask == [0, 0, 0, 0, 1] and eos.forced and eos.end == "eos"
    with pytest.raises(ValueError, match="empty answer"):
        likelihood_row([5], [], [9])


def test_likelihood_rows_batch():
    out = likelihood_rows([[5, 9], [5, 1], [5, 6, 7]], [[3], [3, 4], [3]], [9], stop_ids={1},
                          pad_id=0)  # fmt: skip
    assert out.ids.tolist() == [[5, 9, 3, 0, 0], [5, 1, 9, 3, 4], [5, 6, 7, 9, 3]]
    assert out.attention_mask.tolist() == [[1, 1, 1, 0, 0], [1] * 5, [1] * 5]
    assert out.rationale_mask.int().tolist() == [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]]
    assert out.answer_mask.int().tolist() == [[0, 0, 1, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 0, 1]]
    assert out.forced.tolist() == [False, True, True] and out.end == ("marker", "eos", "budget")
    assert not bool((out.rationale_mask & out.answer_mask).any())
    with pytest.raises(ValueError, match="3 completions but 2 answers"):
        likelihood_rows([[5], [5], [5]], [[3], [3]], [9])


# ----------------------------------------------------------------------------- coefficients


def _log_w(B, seed=0, stalled_groups=()):
    g = torch.Generator().manual_seed(seed)
    return torch.log(torch.rand(B, generator=g, dtype=torch.float64) * 0.9 + 0.05)


@pytest.mark.parametrize("name", ["garl", "garl_rloo", "grpo", "dr_grpo", "rloo"])
@pytest.mark.parametrize("mode", ["likelihood", "verifier"])
def test_contiguous_groups_equal_the_estimator(name, mode):
    lw = _log_w(12)
    out = row_coefficients(lw, 0.5, group_size=4, estimator=name, mode=mode)
    ref = estimators.get_estimator(name)(lw.reshape(3, 4), 0.5, mode=mode)
    torch.testing.assert_close(out.coef_z, ref.coef_z.reshape(-1).double(), rtol=0, atol=0)
    torch.testing.assert_close(out.coef_y, ref.coef_y.reshape(-1).double(), rtol=0, atol=0)
    assert out.group_size.tolist() == [4] * 12 and out.group_id.tolist() == [0] * 4 + [1] * 4 + [
        2
    ] * 4
    torch.testing.assert_close(out.adv_z, 4 * out.coef_z)
    assert out.num_groups == 3 and out.stats.num_groups == 3


@settings(max_examples=40, deadline=None)
@given(perm_seed=st.integers(0, 2**31 - 1), q=st.floats(0.0, 1.0))
@example(perm_seed=0, q=1.0)
def test_row_order_does_not_matter_with_group_ids(perm_seed, q):
    lw = _log_w(12, seed=3)
    uids = [f"p{b // 4}" for b in range(12)]
    base = row_coefficients(lw, q, groups=uids)
    perm = torch.from_numpy(np.random.default_rng(perm_seed).permutation(12))
    out = row_coefficients(lw[perm], q, groups=[uids[i] for i in perm])
    torch.testing.assert_close(out.coef_z, base.coef_z[perm], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(out.coef_y, base.coef_y[perm], rtol=1e-12, atol=1e-15)


def test_groups_of_different_sizes_each_use_their_own_M():
    lw = _log_w(7, seed=1)
    uids = ["a", "b", "a", "c", "b", "a", "c"]  # sizes 3, 2, 2
    out = row_coefficients(lw, 0.75, groups=uids, estimator="garl_rloo")
    for uid, M in (("a", 3), ("b", 2), ("c", 2)):
        rows = [i for i, u in enumerate(uids) if u == uid]
        ref = estimators.garl_rloo(lw[rows].reshape(1, -1), 0.75)
        torch.testing.assert_close(out.coef_z[rows], ref.coef_z.reshape(-1).double())
        assert out.group_size[rows].tolist() == [M] * M
        assert len(set(out.group_id[rows].tolist())) == 1
    assert [c.group_size for c in out.coefficients] == [2, 3]  # sizes ascending


def test_stalled_groups_and_the_statistics_record():
    r = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    out = row_coefficients(reward_log_w(r), 0.5, group_size=4, mode="verifier",
                           forced=[True, False] * 4)  # fmt: skip
    assert out.coef_z[:4].tolist() == [0.0] * 4 and not bool(torch.isnan(out.coef_z).any())
    s = out.stats
    assert (s.frac_stalled, s.num_groups, s.frac_forced_marker) == (0.5, 2, 0.5)
    assert s.log_w_mean == pytest.approx(math.log(0.25))
    assert s.w_mean == pytest.approx(0.125)
    assert s.max_amplified_advantage == pytest.approx(float(out.adv_z[4]) / 4**0.5)
    every = row_coefficients(reward_log_w(torch.zeros(4)), 0.5, group_size=4, mode="verifier")
    assert every.stats.log_w_mean is None and every.stats.max_amplified_advantage == 0.0
    assert "tsallis/log_w_mean" not in every.stats.as_metrics()
    assert set(s.as_metrics()) == {
        "tsallis/q", "tsallis/num_groups", "tsallis/frac_stalled", "tsallis/log_w_mean",
        "tsallis/w_mean", "tsallis/max_amplified_advantage", "tsallis/frac_forced_marker",
    }  # fmt: skip
    assert isinstance(s, RolloutStats)


def test_paft_draws_come_from_the_generator():
    lw = _log_w(8, seed=2)
    a = row_coefficients(lw, 0.75, group_size=4, estimator="paft",
                         generator=torch.Generator().manual_seed(5))  # fmt: skip
    b = row_coefficients(lw, 0.75, groups=[b // 4 for b in range(8)], estimator="paft",
                         generator=torch.Generator().manual_seed(5))  # fmt: skip
    torch.testing.assert_close(a.coef_z, b.coef_z, rtol=0, atol=0)
    with pytest.raises(ValueError, match="randomised estimators only"):
        row_coefficients(lw, 0.5, group_size=4, generator=torch.Generator())


def test_seam_errors_name_what_arrived():
    lw = _log_w(6)
    with pytest.raises(ValueError, match="exactly one of group_size"):
        row_coefficients(lw, 0.5)
    with pytest.raises(ValueError, match="exactly one of group_size"):
        row_coefficients(lw, 0.5, group_size=3, groups=[0] * 6)
    with pytest.raises(ValueError, match="expected 6 entries, got 5"):
        row_coefficients(lw, 0.5, groups=[0] * 5)
    with pytest.raises(TypeError, match="hashable"):
        row_coefficients(lw, 0.5, groups=[[0]] * 6)
    with pytest.raises(ValueError, match="shape \\[B\\]"):
        row_coefficients(lw.reshape(2, 3), 0.5, group_size=3)
    with pytest.raises(ValueError, match=r"group\(s\) of 1 row.*first group 'solo'"):
        row_coefficients(lw[:3], 0.5, groups=["a", "a", "solo"], estimator="garl_rloo")
    with pytest.raises(ValueError, match="q"):
        row_coefficients(lw, 1.5, group_size=3)


# ----------------------------------------------------------------------------- rewards


def test_reward_round_off_is_clamped_and_real_violations_rejected():
    ten = (torch.full((10,), 0.1, dtype=torch.float32) * torch.ones(10)).sum()  # 1.0000001
    assert float(ten) > 1.0
    assert check_rewards(ten.reshape(1)).tolist() == [1.0]
    assert check_rewards([-REWARD_TOLERANCE / 2]).tolist() == [0.0]
    for bad, row in (([0.5, 1.01], 1), ([-1e-3], 0), ([0.0, float("nan")], 1)):
        with pytest.raises(ValueError, match=f"at row {row}"):
            check_rewards(bad)
    with pytest.raises(TypeError, match="tensor, numpy array or list"):
        check_rewards(0.5)
