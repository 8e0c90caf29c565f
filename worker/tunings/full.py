"""Full fine-tuning: every weight trains; the artifact is a `save_pretrained` folder."""

from typing import Any

from worker.context import JobContext
from worker.registry import TuningPlan, register_tuning


def save_full(model: Any, tokenizer: Any, folder: Any, task: str, ctx: JobContext) -> str:
    model.save_pretrained(folder, safe_serialization=True)
    return "reward_model" if task == "seq_cls" else "full_model"


register_tuning(TuningPlan(
    name="full", load_kwargs=lambda tuning, ctx: {}, apply=lambda model, *_: model,
    save=save_full, default_learning_rate=2e-5,
))
