"""The marker convention, proven by exact expectation.

A causal LM small enough to enumerate every rationale it can sample (budget R = 2 over V = 6
tokens, the stop decisions included: sampling the marker or EOS ends z) defines the sampling
process exactly: P = Σ_z p(z | x)·p(y* | x, z[, forced marker]). For M samples per prompt we
enumerate all V_z^M tuples of rationales, build each tuple's rows with the seam the trainers use
(:func:`tsallis.rollouts.likelihood_rows`), score them with the package's loss
(:func:`tsallis.tsallis_logits_loss`, which computes log w from the answer span and the
GARL-RLOO coefficients of :func:`tsallis.rollouts.row_coefficients`), and average the loss
gradients with the tuples' probabilities. That expected update must equal

* ∇J_Q exactly at q = 0 (GARL-RLOO is unbiased there), and
* at every q, the exact expectation of Eq. 12 computed independently (numpy formula over the
  enumerated p(z), w(z) and their autograd gradients, never through the seam): the estimator's
  own bias (Thm 6.1) is all that separates it from ∇J_Q.

The previous convention (the sampled marker scored as part of the answer, its log-prob in log w
and under coef_y; a sampled EOS dropped) fails the same test.
"""

import itertools
import math

import numpy as np
import pytest
import torch

from tsallis import tsallis_logits_loss
from tsallis.rollouts import likelihood_rows

EOS, A, B_, MARK, C, D = range(6)  # EOS doubles as pad, as in many tokenizers
V, R, M = 6, 2, 3
PROMPT = [A, B_]
GOLD = [C, D]


def _model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(7)
    cfg = Qwen2Config(vocab_size=V, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, pad_token_id=EOS,
                      eos_token_id=EOS, tie_word_embeddings=False, initializer_range=0.6,
                      attn_implementation="eager")  # fmt: skip
    return Qwen2ForCausalLM(cfg).double()


def _rationales():
    """Every completion the sampler can produce: it stops at the marker, at EOS, or after R."""
    out = []

    def grow(prefix):
        if prefix and prefix[-1] in (MARK, EOS) or len(prefix) == R:
            out.append(prefix)
            return
        for t in range(V):
            grow([*prefix, t])

    grow([])
    return out


def _logprobs(model, seqs):
    """Next-token log-probs [n, T, V] of right-padded sequences (prompt + row)."""
    T = max(len(s) for s in seqs)
    ids = torch.tensor([s + [EOS] * (T - len(s)) for s in seqs])
    att = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in seqs])
    return torch.log_softmax(model(input_ids=ids, attention_mask=att).logits, -1), ids


def _true_quantities(model, rationales):
    """p(z) and w(z) [K] by the definition of the sampling process (independent of the seam)."""
    seqs = []
    for z in rationales:
        forced = [] if (z and z[-1] == MARK) else [MARK]
        seqs.append(PROMPT + z + forced + GOLD)
    lp, ids = _logprobs(model, seqs)
    log_p, log_w = [], []
    for k, z in enumerate(rationales):
        pos = len(PROMPT) - 1  # logits at position t predict token t + 1
        log_p.append(sum(lp[k, pos + i, t] for i, t in enumerate(z)) if z else lp.new_zeros(()))
        start = len(seqs[k]) - len(GOLD)
        log_w.append(sum(lp[k, start - 1 + i, t] for i, t in enumerate(GOLD)))
    return torch.stack(log_p), torch.stack(log_w)


def _flat_grad(model, scalar, retain=False):
    grads = torch.autograd.grad(scalar, list(model.parameters()), allow_unused=True,
                                retain_graph=retain)  # fmt: skip
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                      for p, g in zip(model.parameters(), grads, strict=True)])  # fmt: skip


def _garl_rloo_numpy(w, q):
    """Eq. 12 per group of weights w [..., M] (numpy, float64): coef_z = c_m/M, coef_y =
    (w_m/w̄^q)/M, with c_m = w_m/w̄^q - (w̄_¬m)^(1-q)."""
    m = w.shape[-1]
    mean = w.mean(-1, keepdims=True)
    loo = (w.sum(-1, keepdims=True) - w) / (m - 1)
    amp = w / mean**q
    return (amp - loo ** (1 - q)) / m, amp / m


def _expected_seam_update(model, rationales, q, convention):
    """E over M-tuples of ∇(the package's loss on the rows the seam builds)."""
    K = len(rationales)
    tuples = np.array(list(itertools.product(range(K), repeat=M)))  # [K^M, M]
    # one forward over the K distinct rows; log w and the per-span log-probs are per rationale
    if convention == "seam":
        rows = likelihood_rows(rationales, [GOLD] * K, [MARK], stop_ids={EOS}, pad_id=EOS)
        row_ids, rat, ans = rows.ids, rows.rationale_mask, rows.answer_mask
    else:  # previous: z before the marker (EOS dropped), y = marker + gold always
        cut = [z[:-1] if z and z[-1] in (MARK, EOS) else z for z in rationales]
        T = max(len(z) for z in cut) + 1 + len(GOLD)
        row_ids = torch.full((K, T), EOS)
        rat = torch.zeros((K, T), dtype=torch.bool)
        ans = torch.zeros((K, T), dtype=torch.bool)
        for k, z in enumerate(cut):
            r = z + [MARK] + GOLD
            row_ids[k, : len(r)] = torch.tensor(r)
            rat[k, : len(z)] = True
            ans[k, len(z) : len(r)] = True
    P = len(PROMPT)
    seqs = [PROMPT + row_ids[k].tolist() for k in range(K)]
    logits = model(input_ids=torch.tensor(seqs)).logits[:, P - 1 : -1]  # predicts row tokens
    # the trainer's loss on every tuple at once: B = K^M·M rows in contiguous groups of M
    flat = torch.from_numpy(tuples.reshape(-1))
    loss = tsallis_logits_loss(
        logits[flat], row_ids[flat], q, group_size=M, rationale_mask=rat[flat],
        answer_mask=ans[flat], estimator="garl_rloo", reduction="none", fused=False,
    )  # fmt: skip
    # weight each tuple's summed loss by its probability under the true sampling process
    log_p, _ = _true_quantities(model, rationales)
    prob = torch.exp(log_p.detach())[torch.from_numpy(tuples)].prod(-1)  # [K^M]
    expected = (loss.reshape(-1, M).sum(-1) * prob).sum()
    return _flat_grad(model, expected), float(prob.sum())


def _exact_oracle(model, rationales, q):
    """E[Eq. 12] and ∇ℓ_q from the enumerated p(z), w(z) (numpy coefficients)."""
    log_p, log_w = _true_quantities(model, rationales)
    K = len(rationales)
    p = torch.exp(log_p.detach()).numpy()
    w = torch.exp(log_w.detach()).numpy()
    tuples = np.array(list(itertools.product(range(K), repeat=M)))
    prob = p[tuples].prod(-1)
    cz, cy = _garl_rloo_numpy(w[tuples], q)  # [K^M, M]
    ez = np.zeros(K)
    ey = np.zeros(K)
    np.add.at(ez, tuples, prob[:, None] * cz)
    np.add.at(ey, tuples, prob[:, None] * cy)
    # E[ĝ] = -Σ_k (E-coef_z[k]·∇log p(z_k) + E-coef_y[k]·∇log w(z_k))
    surrogate = -(torch.from_numpy(ez) * log_p + torch.from_numpy(ey) * log_w).sum()
    oracle = _flat_grad(model, surrogate, retain=True)
    Ptrue = (torch.exp(log_p) * torch.exp(log_w)).sum()
    ell = -torch.log(Ptrue) if q == 1.0 else (1 - Ptrue ** (1 - q)) / (1 - q)
    return oracle, _flat_grad(model, ell), float(Ptrue.detach())


def _cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


@pytest.fixture(scope="module")
def setup():
    model = _model()
    rationales = _rationales()
    assert len(rationales) == 2 + (V - 2) * V  # stop at once, or one more token (budget R=2)
    return model, rationales


@pytest.mark.parametrize("q", [0.0, 0.5, 1.0])
def test_expected_trainer_update_is_the_estimators_expectation(setup, q):
    model, rationales = setup
    seam, total = _expected_seam_update(model, rationales, q, "seam")
    assert total == pytest.approx(1.0, abs=1e-12)  # the tuples exhaust the sampling process
    oracle, grad_jq, P = _exact_oracle(model, rationales, q)
    assert 1e-3 < P < 0.5  # a regime where the stop decision and the amplification matter
    assert _cos(seam, oracle) == pytest.approx(1.0, abs=1e-9)
    assert float(seam.norm() / oracle.norm()) == pytest.approx(1.0, abs=1e-9)
    # ...and that expectation is -∇J_Q up to the estimator's known bias (exactly 0 at q = 0)
    cos, ratio = _cos(seam, grad_jq), float(seam.norm() / grad_jq.norm())
    if q == 0.0:
        assert cos == pytest.approx(1.0, abs=1e-6) and ratio == pytest.approx(1.0, abs=1e-6)
    else:
        bias = float((oracle - grad_jq).norm() / grad_jq.norm())
        assert bias > 1e-4  # the finite-M bias of Thm 6.1 is really there at q > 0 ...
        # ... and explains the whole gap: |E - g| = bias·|g| bounds both the norm and the angle
        assert abs(ratio - 1) <= bias + 1e-9
        assert math.sin(math.acos(min(cos, 1.0))) <= bias + 1e-9


def test_previous_convention_is_not_the_gradient(setup):
    model, rationales = setup
    old, _ = _expected_seam_update(model, rationales, 0.0, "previous")
    _, grad_jq, _ = _exact_oracle(model, rationales, 0.0)
    assert _cos(old, grad_jq) < 1 - 1e-3
