"""Multi-task fine-tuning: SFT on a weighted mixture of named tasks, each task's loss reported.

`method.multitask.tasks` names the tasks: a file of supervised rows and a mixing weight each;
the job's `training_file`, if given, joins as the task "training_file" with weight 1. The
mixture is sampled by weight (worker.data.task_mixture); the trainer measures every task's loss on
its own rows as it goes (worker.data.task_losses), so the events carry `loss/<task>` beside the
mixture's `loss`.
"""

from collections import Counter
from typing import Any

from datasets import Dataset
from trl import SFTConfig

from tunesmith.spec.objectives import MultitaskMethod
from worker.data.sft_data import must_split, sft_loss_options, to_sft_row
from worker.data.task_losses import TASK_KEY, VALIDATION_KEY, PerTaskLossTrainer
from worker.data.task_mixture import (
    TRAINING_FILE_TASK,
    TaskData,
    sample_mixture,
    shares,
    unify_shapes,
)
from worker.registry import register_objective
from worker.training.context import JobContext
from worker.training.failures import InvalidData
from worker.training.modeling import load_tokenizer
from worker.training.saving import save_result
from worker.training.workflow import run_trainer, setup, trainable_model, trainer_arguments

# Rows per task in each loss measurement: enough for a steady mean, cheap next to training.
MEASURED_ROWS_PER_TASK = 64


@register_objective(MultitaskMethod)
def run(ctx: JobContext, method: MultitaskMethod) -> None:
    config = method.multitask

    tokenizer = load_tokenizer(ctx)

    files = [t.file for t in config.tasks] + [f for f in (ctx.spec.training_file,
                                                          ctx.spec.validation_file) if f]
    raw = {file_id: ctx.rows(file_id) for file_id in files}
    # Every file's rows become rows of one shape (see worker/data/sft_data.py).
    split = must_split([r for rows in raw.values() for r in rows], tokenizer,
                       assistant_only=config.completion_only_loss)

    def sft_rows(file_id: str) -> list[dict[str, Any]]:
        return [to_sft_row(r, tokenizer, split=split) for r in raw[file_id]]

    tasks = [TaskData(t.name, t.weight, sft_rows(t.file), f"method.multitask.tasks[{i}].file")
             for i, t in enumerate(config.tasks)]
    if ctx.spec.training_file:
        if any(t.name == TRAINING_FILE_TASK for t in tasks):
            raise InvalidData(f"A task is named '{TRAINING_FILE_TASK}', the name the job's "
                              "training_file takes in the mixture; rename the task, or list "
                              "the file as a task instead of as training_file.",
                              "method.multitask.tasks")
        tasks.append(TaskData(TRAINING_FILE_TASK, 1.0, sft_rows(ctx.spec.training_file),
                              "training_file"))
    validation = ([TaskData("validation_file", 1.0, sft_rows(ctx.spec.validation_file),
                            "validation_file")] if ctx.spec.validation_file else [])
    unified = unify_shapes(tasks + validation)  # one trainer trains one shape of row
    tasks, validation = unified[:len(tasks)], unified[len(tasks):]
    # An epoch has as many rows as all tasks together, shared out by weight.
    counts = shares(tasks, sum(len(t.rows) for t in tasks))
    mixture = sample_mixture(tasks, counts, ctx.seed)
    ctx.event("Mixture per epoch: " + ", ".join(
        f"{t.name} {counts[t.name]} rows (of {len(t.rows)}, weight {t.weight:g})" for t in tasks),
        data={"tasks": [{"name": t.name, "weight": t.weight, "rows": len(t.rows),
                         "rows_per_epoch": counts[t.name],
                         "share": round(counts[t.name] / len(mixture), 4)} for t in tasks]})

    job = setup(ctx, config.hyperparameters, rows=len(mixture),
                model_max_length=tokenizer.model_max_length)
    model = trainable_model(ctx, job)

    # Each task's loss is measured on (the first rows of) its own data; the validation file,
    # if any, gives eval_loss the same way.
    measured = {f"{TASK_KEY}{t.name}": Dataset.from_list(t.rows[:MEASURED_ROWS_PER_TASK])
                for t in tasks}
    if validation:
        measured[VALIDATION_KEY] = Dataset.from_list(validation[0].rows)
    args = trainer_arguments(
        ctx, job.hp, SFTConfig, max_length=job.hp.max_seq_length,
        **sft_loss_options(mixture, tokenizer, completion_only=config.completion_only_loss),
    )
    trainer = PerTaskLossTrainer(model=model, args=args, train_dataset=Dataset.from_list(mixture),
                                 eval_dataset=measured, processing_class=tokenizer,
                                 measure_every=job.hp.save_steps)
    check_every_task_trains(ctx, tasks, counts, trainer.train_dataset["task"],
                            job.hp.max_seq_length)
    if run_trainer(ctx, trainer):
        save_result(ctx, job.plan, model, tokenizer)


def check_every_task_trains(ctx: JobContext, tasks: list[TaskData], counts: dict[str, int],
                            kept: list[str], max_seq_length: int) -> None:
    """SFTTrainer drops rows whose prompt alone fills max_seq_length (nothing left to learn):
    fail if that leaves a task with no row, say so if it thins one out."""
    left_by_task = Counter(kept)
    for task in tasks:
        left = left_by_task[task.name]
        if left == 0:
            raise InvalidData(
                f"Task '{task.name}' has no row that can train: every prompt fills "
                f"max_seq_length={max_seq_length} tokens. Raise method.multitask."
                "hyperparameters.max_seq_length or shorten the prompts.", task.param)
        if left < counts[task.name]:
            ctx.event(f"Task '{task.name}': {counts[task.name] - left} of its "
                      f"{counts[task.name]} rows per epoch are left out, their prompts fill "
                      f"max_seq_length={max_seq_length} tokens", level="warn",
                      data={"task": task.name, "rows_dropped": counts[task.name] - left})
