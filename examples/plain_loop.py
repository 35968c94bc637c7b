"""J_Q in a plain PyTorch loop: a third host is this file (sample -> seam -> loss -> step).

Task: prompt "a b" (two digits 0-4), gold answer (a + b) mod 5 after the marker. The policy samples
up to R rationale tokens itself; tsallis.rollouts rebuilds each completion as
z (+ forced marker) + y*, and tsallis_linear_loss takes the hidden states and the LM head (no
[B, T, V] logits), computes log w = log p(y* | x, z) and GARL-RLOO's coefficients, and returns
the J_Q loss. Run: python examples/plain_loop.py
"""

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

import tsallis
from tsallis.rollouts import likelihood_rows, rollout_stats

N, MARK, EOS, V, R = 5, 5, 6, 7, 3  # digits 0-4, the marker, EOS (also the pad token)


def train(steps=30, q=0.75, G=8, M=8, lr=3e-2, seed=0):
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, eos_token_id=EOS,
                      pad_token_id=EOS)  # fmt: skip
    model = Qwen2ForCausalLM(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        ab = torch.randint(0, N, (G, 2)).repeat_interleave(M, dim=0)  # M samples per prompt
        gold = [[int(t)] for t in ab.sum(1) % N]
        with torch.no_grad():
            out = model.generate(ab, attention_mask=torch.ones_like(ab), do_sample=True,
                                 top_k=0, max_new_tokens=R, pad_token_id=EOS)  # fmt: skip
        rows = likelihood_rows(out[:, 2:].tolist(), gold, [MARK], stop_ids={EOS}, pad_id=EOS)
        ids = torch.cat([ab, rows.ids], dim=1)
        att = torch.cat([torch.ones_like(ab), rows.attention_mask], dim=1)
        hidden = model.model(input_ids=ids, attention_mask=att).last_hidden_state[:, 1:-1]
        loss, info = tsallis.tsallis_linear_loss(
            hidden, model.lm_head.weight, rows.ids, q, group_size=M,
            rationale_mask=rows.rationale_mask, answer_mask=rows.answer_mask, return_info=True,
        )  # fmt: skip
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(rollout_stats(info.coefficients, forced=rows.forced))
    return history


if __name__ == "__main__":
    for step, s in enumerate(train()):
        print(f"step {step:3d}  w_mean {s.w_mean:.3f}  log_w_mean {s.log_w_mean:8.3f}  "
              f"forced {s.frac_forced_marker:.2f}")  # fmt: skip
