"""Prompt tuning (Lester et al. 2021): a soft prompt at the input, every weight frozen.

With `init: text` the soft prompt starts as the embeddings of `init_text` (repeated or cut to
num_virtual_tokens), read with the job model's own tokenizer.
"""


from peft import PromptTuningConfig, PromptTuningInit, TaskType

from tunesmith.spec.tunings import PromptTuning
from worker.training.context import JobContext
from worker.training.modeling import model_source
from worker.tunings.prompt_learning import register_prompt_learning


def _build(tuning: PromptTuning, task: TaskType, ctx: JobContext) -> PromptTuningConfig:
    if tuning.init == "text":
        return PromptTuningConfig(
            task_type=task, num_virtual_tokens=tuning.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=tuning.init_text,
            # Only read while training: a reloaded adapter takes its prompt from the weights.
            tokenizer_name_or_path=model_source(ctx),
        )
    return PromptTuningConfig(task_type=task, num_virtual_tokens=tuning.num_virtual_tokens,
                              prompt_tuning_init=PromptTuningInit.RANDOM)


register_prompt_learning(PromptTuning, _build)
