"""verl integration: entry-point registration, advantages through verl's own ``compute_advantage``,
gradients through verl's own ``ppo_loss``, configuration and input errors.

verl is imported once for the whole module (its imports dominate the run time). In CI
(``CI`` set) a missing verl is a collection error, never a skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

_VERL_ALREADY_IMPORTED = "verl" in sys.modules
_PLUGIN_ALREADY_IMPORTED = "tsallis.integrations.verl" in sys.modules
try:
    import verl  # noqa: F401  (loads the verl.plugins entry points)
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("the verl extra is not installed", allow_module_level=True)
_PLUGIN_LOADED_BY_IMPORT_VERL = "tsallis.integrations.verl" in sys.modules

from omegaconf import OmegaConf  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402
from verl.utils import tensordict_utils as tu  # noqa: E402
from verl.workers.config import ActorConfig  # noqa: E402
from verl.workers.utils.losses import ppo_loss  # noqa: E402

import tsallis.integrations.verl as tv  # noqa: E402
from tsallis import estimators as est  # noqa: E402
from tsallis import sequence_loss  # noqa: E402

NAMES = ("tsallis_garl", "tsallis_garl_rloo", "tsallis_paft")


def _algo(**tsallis):
    """The algorithm DictConfig as verl's trainers pass it, with a tsallis block."""
    return OmegaConf.create({"adv_estimator": "tsallis_garl_rloo", "tsallis": tsallis})


def _batch(rewards, uids, lengths=None, T=6, split_reward=False):
    """A DataProto: the reward of row b on its last response token (or split in two halves)."""
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    B = rewards.shape[0]
    lengths = [T - (b % 3) for b in range(B)] if lengths is None else lengths
    mask = torch.zeros(B, T, dtype=torch.int64)
    tlr = torch.zeros(B, T, dtype=torch.float32)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        if split_reward and n >= 2:
            tlr[b, n - 2] = rewards[b] * 0.25
            tlr[b, n - 1] = rewards[b] - rewards[b] * 0.25
        else:
            tlr[b, n - 1] = rewards[b]
    return DataProto.from_dict(
        tensors={"token_level_rewards": tlr, "response_mask": mask},
        non_tensors={"uid": np.array(uids, dtype=object)},
    )


def _reference(rewards, uids, q, estimator, **opts):
    """M·coef_z per row, from the estimator called on each group directly (in uid order of first
    appearance, so a seeded PAFT generator advances as the documented per-size order when all
    groups have one size)."""
    rewards = torch.as_tensor(rewards, dtype=torch.float64)
    out = torch.zeros(len(uids), dtype=torch.float64)
    for uid in dict.fromkeys(uids):
        rows = [i for i, u in enumerate(uids) if u == uid]
        c = est.get_estimator(estimator)(
            est.rewards_to_log_w(rewards[rows])[None], q, mode="verifier", **opts
        )
        out[rows] = len(rows) * c.coef_z[0].to(torch.float64)
    return out


def _run(data, name, config):
    out = compute_advantage(data, adv_estimator=name, config=config)
    adv = out.batch["advantages"]
    assert adv.shape == data.batch["response_mask"].shape
    assert torch.isfinite(adv).all()
    torch.testing.assert_close(out.batch["returns"], adv)
    # broadcast over the response tokens, zero on padding
    mask = data.batch["response_mask"].bool()
    assert (adv[~mask] == 0).all()
    first = adv[:, 0:1]
    assert torch.equal(adv, first * mask.to(adv.dtype))
    return first.squeeze(-1).to(torch.float64)


# ----------------------------------------------------------------------------- registration


def test_entry_point_declared():
    eps = {ep.name: ep.value for ep in entry_points(group="verl.plugins")}
    assert eps.get("tsallis") == "tsallis.integrations.verl"


def test_import_verl_registers_the_named_estimators():
    if not _VERL_ALREADY_IMPORTED and not _PLUGIN_ALREADY_IMPORTED:
        # this module's `import verl` is what loaded the plugin
        assert _PLUGIN_LOADED_BY_IMPORT_VERL
    else:  # verl or the plugin was imported earlier in this process: check in a fresh one
        code = (
            "import sys, verl\n"
            "from verl.trainer.ppo import core_algos as c\n"
            "assert 'tsallis.integrations.verl' in sys.modules\n"
            f"assert all(getattr(c.ADV_ESTIMATOR_REGISTRY.get(n), '__name__', '') == n "
            f"for n in {NAMES!r})\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    for name in NAMES:
        fn = core_algos.get_adv_estimator_fn(name)
        assert getattr(fn, tv._MARK) == name


def test_registration_is_idempotent_and_survives_reimport():
    before = {n: core_algos.get_adv_estimator_fn(n) for n in NAMES}
    assert tv.register() == before  # same functions: verl's register accepts them again
    # A fresh import of the module (new function objects) re-points the names, as verl's plugin
    # loader would do in a process that imports the module twice.
    saved = sys.modules.pop("tsallis.integrations.verl")
    try:
        ep = next(e for e in entry_points(group="verl.plugins") if e.name == "tsallis")
        fresh = ep.load()
        assert fresh is not saved
        for n in NAMES:
            now = core_algos.get_adv_estimator_fn(n)
            assert now is fresh._NAMED_FUNCTIONS[n] and now is not before[n]
    finally:
        sys.modules["tsallis.integrations.verl"] = saved
        assert saved.register() == before


def test_foreign_function_under_our_name_is_an_error():
    registry = core_algos.ADV_ESTIMATOR_REGISTRY
    ours = registry["tsallis_garl"]
    registry["tsallis_garl"] = lambda **kw: None
    try:
        with pytest.raises(ValueError, match="already registered"):
            tv.register()
    finally:
        registry["tsallis_garl"] = ours
    tv.register()


# ----------------------------------------------------------------------------- compute_advantage

UIDS_CONTIGUOUS = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
UIDS_SHUFFLED = ["c", "a", "b", "a", "c", "b", "b", "a", "c", "a", "b", "c"]
REWARDS_12 = [1.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.25, 0.0]


@pytest.mark.parametrize("q", [0.0, 0.3, 0.75, 1.0])
@pytest.mark.parametrize("estimator", ["garl", "garl_rloo"])
@pytest.mark.parametrize("uids", [UIDS_CONTIGUOUS, UIDS_SHUFFLED], ids=["contiguous", "shuffled"])
def test_compute_advantage_matches_estimator(q, estimator, uids):
    data = _batch(REWARDS_12, uids, split_reward=True)
    got = _run(data, f"tsallis_{estimator}", _algo(q=q))
    ref = _reference(REWARDS_12, uids, q, estimator)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    fn = core_algos.get_adv_estimator_fn(f"tsallis_{estimator}")
    stats = fn.last_stats
    assert stats.q == q and stats.num_groups == 3
    # a group is stalled iff all its rewards are 0
    stalled = sum(
        all(r == 0 for r, u in zip(REWARDS_12, uids, strict=True) if u == g) for g in "abc"
    )
    assert stats.frac_stalled == pytest.approx(stalled / 3)


def test_stalled_groups_give_zero_advantages_without_nan():
    uids = ["a", "b", "a", "b", "a", "b"]
    rewards = [0.0, 1.0, 0.0, 0.0, 0.0, 1.0]  # group a: all zero
    for name in NAMES:
        seeded = dict(seed=7) if name == "tsallis_paft" else {}
        got = _run(_batch(rewards, uids), name, _algo(q=0.5, **seeded))
        assert (got[[0, 2, 4]] == 0).all()
        assert (got[[1, 3, 5]] != 0).any()
    fn = core_algos.get_adv_estimator_fn("tsallis_garl_rloo")
    assert fn.last_stats.frac_stalled == 0.5
    got = _run(_batch([0.0] * 6, uids), "tsallis_garl_rloo", _algo(q=1.0))
    assert (got == 0).all()
    assert fn.last_stats.frac_stalled == 1.0
    assert fn.last_stats.max_amplified_advantage == 0.0


def test_unequal_group_sizes_each_use_their_own_m():
    # groups of 2, 3 and 4 rows, interleaved
    uids = ["x", "y", "z", "y", "x", "z", "z", "y", "z"]
    rewards = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.5, 0.0, 0.0]
    for q in (0.0, 0.5, 1.0):
        for estimator in ("garl", "garl_rloo"):
            got = _run(_batch(rewards, uids), f"tsallis_{estimator}", _algo(q=q))
            torch.testing.assert_close(
                got, _reference(rewards, uids, q, estimator), rtol=1e-6, atol=1e-6
            )


def test_paft_is_seeded_and_matches_the_estimator():
    uids = ["a"] * 4 + ["b"] * 4
    rewards = [1.0, 0.0, 0.5, 0.25, 0.0, 1.0, 0.0, 0.0]
    seed = 20260427
    got = _run(_batch(rewards, uids), "tsallis_paft", _algo(q=0.5, seed=seed))
    ref = _reference(rewards, uids, 0.5, "paft", generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    # the documented factory with the same seed makes the same draws
    fn = tv.advantage_estimator(0.5, "paft", seed=seed)
    adv, _ = fn(_batch(rewards, uids).batch["token_level_rewards"],
                _batch(rewards, uids).batch["response_mask"], index=np.array(uids, dtype=object))
    torch.testing.assert_close(adv[:, 0].double(), ref, rtol=1e-6, atol=1e-6)
    # PAFT's coefficients are w̄^(1-q)·n_m/K: per group Σ_m A_m = M·w̄^(1-q)
    for g in "ab":
        rows = [i for i, u in enumerate(uids) if u == g]
        wbar = float(np.mean([rewards[i] for i in rows]))
        assert float(got[rows].sum()) == pytest.approx(4 * wbar**0.5, rel=1e-6)


def test_q0_garl_rloo_equals_verl_rloo():
    cases = [
        (REWARDS_12, UIDS_SHUFFLED),
        ([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.5, 0.0, 0.0], list("xyzyxzzyz")),
        ([0.3, 0.7, 0.1, 0.9, 0.0, 0.0, 0.2, 1.0], ["p", "p", "q", "q", "p", "q", "p", "q"]),
    ]
    worst = 0.0
    for rewards, uids in cases:
        data = _batch(rewards, uids)
        ours = compute_advantage(data, adv_estimator="tsallis_garl_rloo", config=_algo(q=0.0))
        ours = ours.batch["advantages"].clone()
        theirs = compute_advantage(_batch(rewards, uids), adv_estimator="rloo", config=_algo(q=0.0))
        theirs = theirs.batch["advantages"]
        assert ours.dtype == theirs.dtype == torch.float32
        worst = max(worst, float((ours - theirs).abs().max()))
        torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-7)
    print(f"max |tsallis_garl_rloo(q=0) - rloo| = {worst:.3g}")
    assert worst <= 2e-7


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.sampled_from([0.0, 0.25, 1.0]), min_size=8, max_size=8),
    st.permutations(list(range(8))),
    st.sampled_from([0.0, 0.5, 1.0]),
)
@example([0.0] * 8, list(range(8)), 1.0)
@example([1.0, 0.25, 0.0, 0.0, 0.25, 1.0, 0.0, 0.0], list(range(8)), 1.0)
@example([1.0] * 8, list(range(7, -1, -1)), 0.5)
def test_row_permutation_equivariance_and_q1_centring(rewards, perm, q):
    uids = ["a", "b"] * 4
    mask = torch.ones(8, 3)

    def adv(rs, us):
        tlr = torch.zeros(8, 3)
        tlr[:, -1] = torch.tensor(rs)
        return tv.verifier_advantages(tlr, mask, np.array(us, dtype=object), q, "garl_rloo")[0]

    base = adv(rewards, uids)[:, 0]
    permuted = adv([rewards[i] for i in perm], [uids[i] for i in perm])[:, 0]
    torch.testing.assert_close(permuted, base[perm])
    assert torch.isfinite(base).all()
    for g in "ab":
        rows = [i for i, u in enumerate(uids) if u == g]
        if q == 1.0 and sum(rewards[i] > 0 for i in rows) >= 2:
            # every leave-one-out mean is positive, so c_m = w_m/w̄ - 1: the self-normalised
            # (IWAE) weights, centred, sum to 0 in the group
            assert abs(float(base[rows].sum())) < 1e-5
        if all(rewards[i] == 0 for i in rows):
            assert (base[rows] == 0).all()  # stalled


def test_paper_normalization_scales_by_m_pow_minus_q():
    data = _batch(REWARDS_12, UIDS_CONTIGUOUS)
    plain = _run(data, "tsallis_garl_rloo", _algo(q=0.5))
    data = _batch(REWARDS_12, UIDS_CONTIGUOUS)
    norm = _run(data, "tsallis_garl_rloo", _algo(q=0.5, paper_normalization=True))
    torch.testing.assert_close(norm, plain / 4**0.5, rtol=1e-6, atol=1e-7)


def test_factory_registered_under_a_custom_name():
    name = "tsallis_test_factory_grpo"
    fn = tv.advantage_estimator(0.0, "grpo", eps=0.0)
    core_algos.register_adv_est(name)(fn)
    core_algos.register_adv_est(name)(fn)  # the same function again: accepted by verl
    got = _run(_batch(REWARDS_12, UIDS_SHUFFLED), name, config=None)
    torch.testing.assert_close(
        got, _reference(REWARDS_12, UIDS_SHUFFLED, 0.0, "grpo", eps=0.0), rtol=1e-6, atol=1e-6
    )
    assert fn.last_stats.estimator == "grpo"


def test_documented_hydra_overrides_reach_the_estimator():
    """The README's command-line lines, composed by Hydra on verl's own ppo_trainer config."""
    from hydra import compose, initialize_config_dir

    overrides = [
        "algorithm.adv_estimator=tsallis_garl_rloo",
        "+algorithm.tsallis.q=0.5",
        "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum",
        "actor_rollout_ref.rollout.n=8",
    ]
    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides)
    assert cfg.actor_rollout_ref.actor.loss_agg_mode == "seq-mean-token-sum"
    assert cfg.actor_rollout_ref.rollout.n == 8
    got = _run(_batch(REWARDS_12, UIDS_SHUFFLED), cfg.algorithm.adv_estimator, cfg.algorithm)
    torch.testing.assert_close(
        got, _reference(REWARDS_12, UIDS_SHUFFLED, 0.5, "garl_rloo"), rtol=1e-6, atol=1e-6
    )


# ----------------------------------------------------------------------------- ppo_loss


def _ppo_grad(advantages, response_mask, loss_agg_mode, log_probs):
    """d(verl's ppo_loss)/d(per-token log-probs), on-policy (old_log_probs = log_probs)."""
    B, R = response_mask.shape
    P = 2
    prompts = torch.ones(B, P, dtype=torch.int64)
    attention = torch.cat([torch.ones(B, P, dtype=torch.int64), response_mask], dim=1)
    lp = log_probs.clone().requires_grad_(True)
    # verl's no-padding layout: per sequence (prompt + response), response token t's log-prob
    # sits at position P - 1 + t (left-shifted model output)
    flat = []
    for b in range(B):
        n = int(response_mask[b].sum())
        flat.append(torch.cat([torch.zeros(P - 1), lp[b, :n], torch.zeros(1)]))
    td = TensorDict(
        {
            "prompts": prompts,
            "responses": torch.ones(B, R, dtype=torch.int64),
            "attention_mask": attention,
            "response_mask": response_mask,
            "old_log_probs": log_probs.detach(),
            "advantages": advantages,
        },
        batch_size=B,
    )
    tu.assign_non_tensor(td, dp_size=1, batch_num_tokens=int(response_mask.sum()),
                         global_batch_size=B)  # fmt: skip
    config = ActorConfig(
        strategy="fsdp", rollout_n=4, ppo_micro_batch_size_per_gpu=B,
        loss_agg_mode=loss_agg_mode, use_torch_compile=False,
    )  # fmt: skip
    loss, _ = ppo_loss(config, {"log_probs": torch.cat(flat)}, td)
    (grad,) = torch.autograd.grad(loss, lp)
    return grad.to(torch.float64)


@pytest.fixture(scope="module")
def loss_case():
    """G = 3 groups of M = 4 (contiguous, as the surrogate's [G, M] layout), unequal lengths."""
    torch.manual_seed(0)
    rewards = [1.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.25, 0.0]
    lengths = [6, 2, 5, 3, 4, 6, 1, 5, 2, 6, 3, 4]
    data = _batch(rewards, UIDS_CONTIGUOUS, lengths=lengths)
    data = compute_advantage(data, adv_estimator="tsallis_garl_rloo", config=_algo(q=0.5))
    mask = data.batch["response_mask"]
    log_probs = -torch.rand(mask.shape) * mask
    c = est.garl_rloo(est.rewards_to_log_w(torch.tensor(rewards, dtype=torch.float64))
                      .reshape(3, 4), 0.5, mode="verifier")  # fmt: skip
    # the package's surrogate: -(1/G)·Σ_b coef_z[b]·log π(y_b), log π(y_b) = Σ_t log-probs
    lp = log_probs.to(torch.float64).clone().requires_grad_(True)
    surrogate = sequence_loss((lp * mask).sum(-1), None, c.coef_z)
    (ref,) = torch.autograd.grad(surrogate, lp)
    return data.batch["advantages"], mask, log_probs, ref


@pytest.mark.parametrize(
    "mode,scale",
    [
        ("seq-mean-token-sum", lambda B, N, R: 1.0),
        ("seq-mean-token-sum-norm", lambda B, N, R: 1.0 / R),
        ("token-sum", lambda B, N, R: float(B)),
        ("token-mean", lambda B, N, R: B / N),
    ],
)
def test_ppo_loss_gradient_keeps_the_estimator_direction(loss_case, mode, scale):
    advantages, mask, log_probs, ref = loss_case
    grad = _ppo_grad(advantages, mask, mode, log_probs)
    B, R = mask.shape
    expected = ref * scale(B, int(mask.sum()), R)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-8)


def test_seq_mean_token_mean_changes_the_direction(loss_case):
    advantages, mask, log_probs, ref = loss_case
    grad = _ppo_grad(advantages, mask, "seq-mean-token-mean", log_probs)
    cos = float((grad * ref).sum() / (grad.norm() * ref.norm()))
    print(f"cosine(seq-mean-token-mean, estimator) = {cos:.4f}")
    assert cos < 0.99  # lengths 1..6 reweight the sequences
    # it is the estimator reweighted by 1/|y_b| per sequence
    lengths = mask.sum(-1, keepdim=True).to(torch.float64)
    torch.testing.assert_close(grad, ref / lengths * mask, rtol=1e-5, atol=1e-8)


def test_likelihood_advantages_give_the_surrogate_gradient():
    """Per-token coef_z (rationale) and coef_y (answer) through verl's ppo_loss."""
    torch.manual_seed(1)
    G, M, R = 2, 4, 7
    B = G * M
    uids = np.array([g for g in "ab" for _ in range(M)], dtype=object)
    lengths = torch.tensor([7, 5, 6, 4, 7, 3, 5, 6])
    mask = (torch.arange(R)[None] < lengths[:, None]).to(torch.int64)
    answer = torch.zeros(B, R, dtype=torch.int64)
    for b in range(B):  # the last 2 response tokens are the gold answer
        answer[b, lengths[b] - 2 : lengths[b]] = 1
    log_probs = -3 * torch.rand(B, R) * mask
    adv, stats = tv.likelihood_advantages(log_probs, answer, mask, uids, 0.75, "garl_rloo")
    assert stats.num_groups == G and stats.frac_stalled == 0
    grad = _ppo_grad(adv, mask, "seq-mean-token-sum", log_probs)
    lp = log_probs.to(torch.float64).clone().requires_grad_(True)
    logp_y = (lp * answer).sum(-1)
    logp_z = (lp * (mask - answer)).sum(-1)
    c = est.garl_rloo(logp_y.detach().reshape(G, M), 0.75, mode="likelihood")
    (ref,) = torch.autograd.grad(sequence_loss(logp_z, logp_y, c.coef_z, c.coef_y), lp)
    torch.testing.assert_close(grad, ref, rtol=1e-5, atol=1e-8)
    assert not torch.allclose(c.coef_z, c.coef_y)  # the two spans really get different weights


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "config,err,match",
    [
        (None, ValueError, r"\+algorithm\.tsallis\.q"),
        (OmegaConf.create({"adv_estimator": "tsallis_garl"}), ValueError, "no 'tsallis' block"),
        (OmegaConf.create({"tsallis": {"seed": 1}}), ValueError, "q is missing"),
        (OmegaConf.create({"tsallis": {"q": None}}), ValueError, "q is missing"),
        (OmegaConf.create({"tsallis": {"q": 1.5}}), ValueError, r"must lie in \[0, 1\]"),
        (OmegaConf.create({"tsallis": {"q": -0.1}}), ValueError, r"must lie in \[0, 1\]"),
        (OmegaConf.create({"tsallis": {"q": float("nan")}}), ValueError, r"\[0, 1\]"),
        (OmegaConf.create({"tsallis": {"q": "half"}}), TypeError, "real number"),
        (OmegaConf.create({"tsallis": {"q": True}}), TypeError, "bool"),
        (OmegaConf.create({"tsallis": 0.5}), TypeError, "mapping"),
        (OmegaConf.create({"tsallis": {"q": 0.5, "Q": 1}}), ValueError, "unknown key"),
        (OmegaConf.create({"tsallis": {"q": 0.5, "paper_normalization": "yes"}}), TypeError,
         "paper_normalization"),
        (OmegaConf.create({"tsallis": {"q": 0.5, "seed": 1}}), ValueError, "PAFT"),
        (OmegaConf.create({"tsallis": {"q": 0.5, "num_draws": 3}}), ValueError, "num_draws"),
    ],
)
def test_missing_or_bad_q_is_an_error(config, err, match):
    data = _batch(REWARDS_12, UIDS_CONTIGUOUS)
    with pytest.raises(err, match=match):
        compute_advantage(data, adv_estimator="tsallis_garl_rloo", config=config)


@pytest.mark.parametrize("key", ["seed", "num_draws"])
def test_paft_settings_are_rejected_for_deterministic_estimators(key):
    data = _batch(REWARDS_12, UIDS_CONTIGUOUS)
    for name in ("tsallis_garl", "tsallis_garl_rloo"):
        with pytest.raises(ValueError, match=rf"{key}.*tsallis_paft"):
            compute_advantage(data, adv_estimator=name, config=_algo(q=0.5, **{key: 3}))
    got = _run(_batch(REWARDS_12, UIDS_CONTIGUOUS), "tsallis_paft", _algo(q=0.5, **{key: 3}))
    assert torch.isfinite(got).all()
    with pytest.raises(ValueError, match="seed"):
        compute_advantage(data, adv_estimator="tsallis_paft", config=_algo(q=0.5, seed=-1))


def test_typed_algo_config_cannot_carry_q():
    from verl.trainer.config import AlgoConfig

    with pytest.raises(ValueError, match="AlgoConfig"):
        compute_advantage(_batch(REWARDS_12, UIDS_CONTIGUOUS),
                          adv_estimator="tsallis_garl", config=AlgoConfig())  # fmt: skip


@pytest.mark.parametrize("bad", [1.5, -0.2, float("nan")])
def test_rewards_outside_unit_interval_are_an_error(bad):
    rewards = list(REWARDS_12)
    rewards[5] = bad
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*row 5"):
        compute_advantage(_batch(rewards, UIDS_CONTIGUOUS),
                          adv_estimator="tsallis_paft", config=_algo(q=0.5))  # fmt: skip


def test_input_errors():
    tlr = torch.zeros(4, 3)
    tlr[:, -1] = torch.tensor([1.0, 0.0, 1.0, 0.0])
    mask = torch.ones(4, 3)
    f = tv.verifier_advantages
    with pytest.raises(ValueError, match="index=None"):
        f(tlr, mask, None, 0.5)
    with pytest.raises(ValueError, match="expected 4 entries, got 3"):
        f(tlr, mask, ["a", "a", "b"], 0.5)
    with pytest.raises(TypeError, match="hashable"):
        f(tlr, mask, [["a"], ["a"], ["b"], ["b"]], 0.5)
    with pytest.raises(ValueError, match="response_mask"):
        f(tlr, torch.ones(4, 2), ["a"] * 4, 0.5)
    with pytest.raises(TypeError, match="floating"):
        f(tlr.long(), mask, ["a"] * 4, 0.5)
    # a group of one response: the leave-one-out baseline does not exist; the uid is named
    with pytest.raises(ValueError, match=r"'lonely'.*at least 2"):
        f(tlr, mask, ["a", "a", "a", "lonely"], 0.5, "garl_rloo")
    # plug-in GARL and PAFT accept a group of one
    assert torch.isfinite(f(tlr, mask, ["a", "a", "a", "lonely"], 0.5, "garl")[0]).all()
    with pytest.raises(ValueError, match="verifier mode only"):
        tv.advantage_estimator(0.5, mode="likelihood")
    with pytest.raises(ValueError, match="unknown estimator"):
        tv.advantage_estimator(0.5, "garl_rloo_typo")
    with pytest.raises(TypeError, match="bad options"):
        tv.advantage_estimator(0.5, "garl", temperature=2.0)
    with pytest.raises(ValueError, match="randomised estimators only"):
        tv.advantage_estimator(0.5, "garl", seed=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tv.advantage_estimator(2.0)
    with pytest.raises(ValueError, match="answer_mask is empty in row 0"):
        tv.likelihood_advantages(-torch.ones(4, 3), torch.zeros(4, 3), mask, ["a"] * 4, 0.5)
    with pytest.raises(ValueError, match="outside response_mask"):
        tv.likelihood_advantages(-torch.ones(4, 3), torch.ones(4, 3), torch.zeros(4, 3),
                                 ["a"] * 4, 0.5)  # fmt: skip


def test_float32_round_off_of_a_legal_reward_is_accepted_and_clamped():
    # a reward of 1 spread over three float32 tokens sums to 1.00000003 in float64
    tlr = torch.zeros(4, 3)
    tlr[0] = torch.tensor([1.0, 1.0, 1.0]) / 3
    assert float(tlr[0].double().sum()) > 1.0
    adv, _, stats = tv.verifier_advantages(tlr, torch.ones(4, 3), ["a"] * 4, q=0.5)
    want, _, _ = tv.verifier_advantages(
        torch.tensor([[1.0], [0.0], [0.0], [0.0]]), torch.ones(4, 1), ["a"] * 4, q=0.5
    )
    torch.testing.assert_close(adv[:, 0], want[:, 0])
    assert stats.frac_stalled == 0.0
    tlr[0, 0] += 1e-3  # a real violation is still an error, naming the row
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*row 0"):
        tv.verifier_advantages(tlr, torch.ones(4, 3), ["a"] * 4, q=0.5)
