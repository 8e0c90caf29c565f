"""(IA)^3: peft's IA3Config on the modules peft knows for the architecture (for Llama: the
keys, values and the feed-forward down projection); the artifact is a PEFT folder."""

from typing import Any

from peft import IA3Config, TaskType, get_peft_model

from tunesmith.spec.tunings import IA3Tuning
from worker.registry import ModelTask, TuningPlan, register_tuning
from worker.training.context import JobContext
from worker.tunings.lora import save_peft


def apply(model: Any, tuning: IA3Tuning, task: ModelTask, ctx: JobContext) -> Any:
    task_type = TaskType.SEQ_CLS if task == "seq_cls" else TaskType.CAUSAL_LM
    return get_peft_model(model, IA3Config(task_type=task_type))


register_tuning(TuningPlan(spec=IA3Tuning, apply=apply, save=save_peft))
