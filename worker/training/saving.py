"""Write the trained result to the job's artifacts folder and register it."""

from typing import Any

from worker.registry import ModelTask, TuningPlan
from worker.training.artifacts import register_artifacts
from worker.training.context import JobContext
from worker.training.public_names import name_the_model


def save_result(ctx: JobContext, plan: TuningPlan, model: Any, tokenizer: Any,
                *, name: str = "", task: ModelTask = "causal_lm") -> list[str]:
    """Save through the tuning's saver into artifacts/<name or kind>; returns artifact names.

    A stage of a multi-stage job (rlhf) saves under artifacts/<stage>/, so its stages'
    results sit side by side (sft/adapter, reward/reward_model, ppo/adapter).
    """
    if not ctx.is_main:
        return []  # one writer: rank 0 holds the same weights as every other rank
    folder_name = name or ("model" if plan.name == "full" else "adapter")
    if ctx.stage:
        folder_name = f"{ctx.stage}/{folder_name}"
    folder = ctx.artifacts_dir / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    kind = plan.save(model, tokenizer, folder, task, ctx)
    tokenizer.save_pretrained(folder)
    name_the_model(folder, ctx.spec.model)
    names = register_artifacts(ctx, folder, kind)
    ctx.event(f"Saved {kind} to artifacts/{folder_name} ({len(names)} files)",
              data={"artifact": folder_name, "kind": kind, "files": names})
    return names
