"""P-tuning (Liu et al. 2021): input-layer virtual tokens produced by a small MLP or LSTM."""


from peft import PromptEncoderConfig, PromptEncoderReparameterizationType, TaskType

from tunesmith.spec.tunings import PTuningTuning
from worker.training.context import JobContext
from worker.tunings.prompt_learning import register_prompt_learning


def _build(tuning: PTuningTuning, task: TaskType, ctx: JobContext) -> PromptEncoderConfig:
    return PromptEncoderConfig(
        task_type=task, num_virtual_tokens=tuning.num_virtual_tokens,
        encoder_reparameterization_type=PromptEncoderReparameterizationType(tuning.encoder_type),
        encoder_hidden_size=tuning.encoder_hidden_size,
    )


register_prompt_learning(PTuningTuning, _build)
