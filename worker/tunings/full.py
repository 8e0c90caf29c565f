"""Full fine-tuning: every weight trains; the artifact is a `save_pretrained` folder."""

from pathlib import Path
from typing import Any

from tunesmith.spec.tunings import FullTuning
from worker.registry import ModelTask, TuningPlan, register_tuning
from worker.training.context import JobContext


def unchanged(model: Any, tuning: FullTuning, task: ModelTask, ctx: JobContext) -> Any:
    return model  # every weight trains as it is


def save_full(model: Any, tokenizer: Any, folder: Path, task: ModelTask,
              ctx: JobContext) -> str:
    model.save_pretrained(folder, safe_serialization=True)
    return "reward_model" if task == "seq_cls" else "full_model"


register_tuning(TuningPlan(
    spec=FullTuning, apply=unchanged, save=save_full))
