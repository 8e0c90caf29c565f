"""Prefix tuning (Li & Liang 2021): key/value prefixes at every layer, produced by an MLP.

The MLP reparameterisation (`prefix_projection=True`) is what Li & Liang found necessary for
stable training. The artifact holds the prefixes the MLP computes (peft's format: it loads
without the MLP); checkpoints also keep the MLP itself so that a job can resume
(prompt_learning.keep_encoder_in_checkpoints).
"""


from peft import PrefixTuningConfig, TaskType

from tunesmith.spec.tunings import PrefixTuning
from worker.training.context import JobContext
from worker.tunings.prompt_learning import register_prompt_learning


def _build(tuning: PrefixTuning, task: TaskType, ctx: JobContext) -> PrefixTuningConfig:
    return PrefixTuningConfig(task_type=task, num_virtual_tokens=tuning.num_virtual_tokens,
                              prefix_projection=True,
                              encoder_hidden_size=tuning.encoder_hidden_size)


register_prompt_learning(PrefixTuning, _build)
