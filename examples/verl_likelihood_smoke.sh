#!/usr/bin/env bash
# End-to-end smoke run of likelihood mode in verl (docs/trainers/verl.md, "Likelihood mode"):
# a tiny arithmetic data set, a small instruct model, vLLM rollouts, an FSDP actor, a handful of
# steps with validation before training. Needs a GPU, verl's GPU stack (pip install
# 'verl[vllm]') and the package (pip install -e '.[verl]'); the model comes from the Hub.
#
#   bash examples/verl_likelihood_smoke.sh
#   MODEL=Qwen/Qwen2.5-1.5B-Instruct STEPS=10 NGPUS=2 bash examples/verl_likelihood_smoke.sh
#
# Success: the run ends after STEPS steps and its log shows tsallis/q, tsallis/num_groups,
# tsallis/frac_forced_marker and val-core/... metrics.
set -euo pipefail

MODEL=${MODEL:-Qwen/Qwen2.5-0.5B-Instruct}
STEPS=${STEPS:-4}
NGPUS=${NGPUS:-1}
Q=${Q:-0.5}
N=${N:-4}                 # responses per prompt (GARL-RLOO needs >= 2)
PROMPTS=${PROMPTS:-8}     # prompts per step (data.train_batch_size = ppo_mini_batch_size)
RESPONSE_LENGTH=${RESPONSE_LENGTH:-256}
WORK=${WORK:-$(mktemp -d -t verl_likelihood_smoke.XXXX)}

python - "$WORK" <<'PY'
import random
import sys

import pandas as pd

work = sys.argv[1]
rng = random.Random(0)


def rows(n):
    out = []
    for i in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        question = (f"What is {a} + {b}? Think step by step, then write '#### ' followed by the "
                    "number.")
        out.append({
            # the gsm8k rule reward reads "#### <number>": validation scores the model's answer
            "data_source": "openai/gsm8k",
            "prompt": [{"role": "user", "content": question}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(a + b)},
            "extra_info": {"index": i},
        })
    return out


pd.DataFrame(rows(256)).to_parquet(f"{work}/train.parquet")
pd.DataFrame(rows(32)).to_parquet(f"{work}/val.parquet")
print(f"data in {work}")
PY

python -m verl.trainer.main_ppo \
    trainer.v1.trainer_mode=tsallis_sync \
    actor_rollout_ref.rollout.agent.default_agent_loop=tsallis_likelihood \
    algorithm.adv_estimator=tsallis_garl_rloo \
    +algorithm.tsallis.q="$Q" \
    "+algorithm.tsallis.answer_marker='#### '" \
    actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum \
    data.train_batch_size="$PROMPTS" \
    actor_rollout_ref.actor.ppo_mini_batch_size="$PROMPTS" \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
    actor_rollout_ref.rollout.calculate_log_probs=false \
    actor_rollout_ref.rollout.n="$N" \
    data.train_files="$WORK/train.parquet" \
    data.val_files="$WORK/val.parquet" \
    data.max_prompt_length=128 \
    data.max_response_length="$RESPONSE_LENGTH" \
    actor_rollout_ref.model.path="$MODEL" \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.use_kl_loss=false \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.4 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4 \
    trainer.logger='["console"]' \
    trainer.project_name=tsallis_smoke \
    trainer.experiment_name=verl_likelihood \
    trainer.n_gpus_per_node="$NGPUS" \
    trainer.nnodes=1 \
    trainer.val_before_train=true \
    trainer.test_freq="$STEPS" \
    trainer.save_freq=-1 \
    trainer.total_training_steps="$STEPS" \
    trainer.default_local_dir="$WORK/checkpoints" \
    "$@"
