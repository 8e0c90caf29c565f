"""Group relative policy optimisation (GRPO): trl's GRPOTrainer with a verifiable reward.

Rows are `prompt` rows with an `answer`. For each prompt the policy samples
`num_generations` completions; a reward function (`method.grpo.reward.type`, see
worker/rl/rewards.py) scores each against the row's answer, and a completion's advantage is
its reward relative to its group's. `beta` > 0 adds a KL penalty to the starting model.

`batch_size` counts prompts per optimizer step, so each step trains on
batch_size x num_generations completions: trl's rule that its generation batch
(per-device batch x gradient_accumulation_steps completions) holds whole groups of
num_generations then always holds. "auto" takes as many prompts as make about 8 completions.

Artifact: the policy (PEFT adapter, or the full model), as for supervised jobs. With LoRA
and beta > 0, trl keeps the reference as a frozen copy of the starting adapter ("ref"); that
copy is dropped before saving.
"""

from dataclasses import replace
from typing import Any

from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from tunesmith.spec.objectives import GRPOMethod
from worker.registry import register_objective
from worker.rl.prompts import as_user_turn, row_prompt
from worker.rl.rewards import REWARD_FUNCTIONS
from worker.training.context import JobContext
from worker.training.failures import InvalidData
from worker.training.modeling import load_tokenizer
from worker.training.saving import save_result
from worker.training.workflow import run_trainer, setup, trainable_model, trainer_arguments

COMPLETIONS_PER_STEP = 8  # what "auto" batch_size aims at
REFERENCE_ADAPTER = "ref"  # the name trl gives its copy of the starting adapter


def grpo_rows(rows: list[dict[str, Any]], tokenizer: Any, field: str) -> list[dict[str, Any]]:
    """{"prompt": chat or text, "answer": str}; the answer reaches the reward as a kwarg."""
    out = []
    for line, row in enumerate(rows, start=1):
        answer = row.get("answer")
        if not isinstance(answer, str) or not answer.strip():
            raise InvalidData(f"row {line} has no \"answer\": GRPO scores each completion "
                              "against the row's answer", field)
        out.append({"prompt": as_user_turn(row_prompt(row, field=field), tokenizer),
                    "answer": answer})
    return out


@register_objective(GRPOMethod)
def run(ctx: JobContext, method: GRPOMethod) -> None:
    config = method.grpo
    hp = config.hyperparameters

    tokenizer = load_tokenizer(ctx)
    rows = grpo_rows(ctx.rows(ctx.spec.training_file), tokenizer, "training_file")
    eval_rows = (grpo_rows(ctx.rows(ctx.spec.validation_file), tokenizer, "validation_file")
                 if ctx.spec.validation_file else None)

    if hp.batch_size == "auto":
        hp = hp.model_copy(update={"batch_size": max(
            1, min(len(rows), COMPLETIONS_PER_STEP // hp.num_generations))})
    job = setup(ctx, hp, rows=len(rows), model_max_length=tokenizer.model_max_length)
    grpo = {"num_generations": hp.num_generations,
            "max_completion_length": hp.max_completion_length, "beta": hp.beta,
            "temperature": hp.temperature, "reward": config.reward.type}
    ctx.record_hyperparameters({**job.hp.as_dict(), **grpo})
    ctx.event(f"GRPO: {job.hp.batch_size} prompts x {hp.num_generations} completions per "
              f"step, reward {config.reward.type}", data={"grpo": grpo})

    model = trainable_model(ctx, job)

    completions = job.hp.batch_size * hp.num_generations
    args = trainer_arguments(
        ctx, replace(job.hp, batch_size=completions,
                     micro_batch_size=max(1, completions // ctx.world_size)), GRPOConfig,
        num_generations=hp.num_generations, max_completion_length=hp.max_completion_length,
        beta=hp.beta, temperature=hp.temperature, per_device_eval_batch_size=completions,
        evaluate=bool(eval_rows),
    )
    trainer = GRPOTrainer(model=model, reward_funcs=[REWARD_FUNCTIONS[config.reward.type]],
                          args=args, train_dataset=Dataset.from_list(rows),
                          eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                          processing_class=tokenizer)
    if run_trainer(ctx, trainer):
        if hasattr(model, "peft_config") and REFERENCE_ADAPTER in model.peft_config:
            model.delete_adapter(REFERENCE_ADAPTER)
        save_result(ctx, job.plan, model, tokenizer)
