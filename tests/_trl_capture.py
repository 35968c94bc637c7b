"""Test helpers for TsallisGRPOTrainer runs (import only once TRL is known to be installed)."""

from transformers import TrainerCallback

from tsallis.integrations.trl import TsallisGRPOTrainer


class CapturingTrainer(TsallisGRPOTrainer):
    """Records what the reward step saw (prompts, sampled completion ids, examples)."""

    def __init__(self, *a, **kw):
        self.captured = []
        super().__init__(*a, **kw)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        ids = [list(map(int, c)) for c in completion_ids_list]
        self.captured.append((list(prompts), ids, [dict(x) for x in inputs]))
        return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)


class GradCapture(TrainerCallback):
    """The gradients the optimiser is about to apply (after any clipping), one dict per step."""

    def __init__(self):
        self.grads = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads.append(
            {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        )
