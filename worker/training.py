"""What every objective's workflow shares: resolved settings, trainer arguments, the run."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunesmith.spec.hyperparameters import Hyperparameters
from worker.callbacks import JobEventsCallback
from worker.context import JobContext
from worker.hub_access import hub_kernels_on
from worker.hyperparameters import Resolved, resolve
from worker.liger import liger_for
from worker.registry import TuningPlan, tuning


@dataclass
class Setup:
    plan: TuningPlan
    hp: Resolved


def setup(ctx: JobContext, hp: Hyperparameters, *, rows: int, model_max_length: int = 1024,
          model_parameters: int = 0,
          rows_at_length: Callable[[int], int] | None = None) -> Setup:
    """Resolve the tuning's plan and the "auto" hyperparameters, and report them on the job.

    `rows_at_length`, for packed data, gives the number of training sequences at a sequence
    length: the steps then follow the packed sequences, not the raw rows.
    """
    import torch

    plan = tuning(ctx.spec.tuning.type)

    def resolve_for(n_rows: int) -> Resolved:
        return resolve(
            hp, rows=n_rows, default_learning_rate=plan.default_learning_rate,
            device=ctx.device,
            bf16_supported=ctx.device == "cuda" and torch.cuda.is_bf16_supported(),
            model_max_length=model_max_length, model_parameters=model_parameters,
            supports_gradient_checkpointing=plan.supports_gradient_checkpointing,
        )

    resolved = resolve_for(rows)
    if rows_at_length is not None:
        # The sequence length does not depend on the row count, so one more pass is exact.
        resolved = resolve_for(rows_at_length(resolved.max_seq_length))
    if not ctx.stage:
        ctx.update_job(hyperparameters=resolved.as_dict())
    else:
        ctx.record_stage_hyperparameters(resolved.as_dict())
    ctx.event(f"{ctx.stage + ': ' if ctx.stage else ''}Hyperparameters: "
              + ", ".join(f"{k}={v}" for k, v in resolved.as_dict().items()),
              data={"hyperparameters": resolved.as_dict(), "stage": ctx.stage or None})
    return Setup(plan, resolved)


def trainer_arguments(ctx: JobContext, hp: Resolved, config_cls: Any, *,
                      evaluate: bool = False, **extra: Any) -> Any:
    """A trl/transformers config with our conventions: one folder per job, checkpoints that
    resume (optimizer, scheduler and RNG included), no external reporting; with `evaluate`
    (the job has a validation file), an evaluation at every checkpoint."""
    if evaluate:
        extra = {"eval_strategy": "steps", "eval_steps": hp.save_steps, **extra}
    liger = liger_for(ctx.device, config_cls.__name__, ctx.spec.model)
    hub = "hub kernels on" if hub_kernels_on() else "hub kernels off"
    ctx.event(f"{ctx.stage + ': ' if ctx.stage else ''}Kernels: {liger.reason}; {hub}",
              data={"liger_kernels": liger.on, "hub_kernels": hub_kernels_on(),
                    "stage": ctx.stage or None})
    extra = {**liger.trainer_kwargs(), **extra}
    return config_cls(
        output_dir=str(ctx.checkpoints_dir),
        num_train_epochs=hp.n_epochs, max_steps=hp.max_steps,
        # batch_size is the job's: split across the processes of a data-parallel run.
        per_device_train_batch_size=max(1, hp.batch_size // ctx.world_size),
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        learning_rate=hp.learning_rate, weight_decay=hp.weight_decay,
        lr_scheduler_type=hp.lr_scheduler,
        # transformers 5 folded warmup_ratio into warmup_steps (a float < 1 is a ratio).
        warmup_steps=hp.warmup_ratio,
        # trl defaults to bf16 and gradient checkpointing; both must follow the device.
        bf16=hp.precision == "bf16", fp16=hp.precision == "fp16",
        # transformers 5 renamed gradient_checkpointing (the old name goes in v6).
        activation_checkpointing=hp.gradient_checkpointing,
        use_cpu=ctx.device == "cpu",
        logging_steps=hp.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=hp.save_steps, save_total_limit=2,
        seed=ctx.seed, data_seed=ctx.seed, report_to="none", disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        # Every trainable parameter gets a gradient in our pipelines; the search for unused
        # ones costs an extra autograd traversal per step in data-parallel runs.
        ddp_find_unused_parameters=False if ctx.world_size > 1 else None,
        **extra,
    )


def run_trainer(ctx: JobContext, trainer: Any) -> bool:
    """Train (resuming from the newest checkpoint if a crash left one). False if stopped."""
    trainer.add_callback(JobEventsCallback(ctx))
    resume = ctx.latest_checkpoint()
    if resume is not None:
        ctx.event(f"Resuming from {resume.name}", level="warn",
                  data={"resume_from_step": int(resume.name.rsplit('-', 1)[1]),
                        "stage": ctx.stage or None})
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return not ctx.stop.is_set()
