"""P-Tuning v2 (Liu et al. 2022): trainable prompts at every layer, no reparameterisation.

In peft this is prefix tuning without the projection MLP: the per-layer key/value prompts
are the parameters themselves.
"""


from peft import PrefixTuningConfig, TaskType

from tunesmith.spec.tunings import PTuningV2Tuning
from worker.training.context import JobContext
from worker.tunings.prompt_learning import register_prompt_learning


def _build(tuning: PTuningV2Tuning, task: TaskType, ctx: JobContext) -> PrefixTuningConfig:
    return PrefixTuningConfig(task_type=task, num_virtual_tokens=tuning.num_virtual_tokens,
                              prefix_projection=False)


register_prompt_learning(PTuningV2Tuning, _build)
