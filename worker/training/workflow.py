"""What every objective's workflow shares: resolved settings, trainer arguments, the run."""

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from tunesmith.dry_run import training_setup
from tunesmith.memory_estimate import GIB, ModelShape
from tunesmith.memory_estimate import TUNINGS as ESTIMATED_TUNINGS
from tunesmith.model_names import resolve_model
from tunesmith.settings import settings
from tunesmith.spec.hyperparameters import Hyperparameters
from worker.process.hub_access import hub_kernels_on
from worker.process.oom_recovery import Replan, read_replan
from worker.registry import ModelTask, TuningPlan, tuning
from worker.training.callbacks import JobEventsCallback
from worker.training.context import JobContext
from worker.training.divergence import DivergenceCallback
from worker.training.fault_injection import fault_callbacks
from worker.training.hyperparameters import MemoryInputs, Resolved, resolve
from worker.training.liger import liger_for
from worker.training.modeling import count_parameters, is_hub_model, load_model, model_source
from worker.training.quantization import choose_optimizer, is_quantized, on_quantized_base
from worker.training.tracking import finish as finish_tracking
from worker.training.tracking import report_to

log = logging.getLogger(__name__)


def _free_bytes(ctx: JobContext) -> int | None:
    """The device's free memory now (before the model loads); on CPU, the configured limit."""
    if ctx.device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    return None if settings.memory_limit_gib is None else int(settings.memory_limit_gib * GIB)


def memory_inputs(ctx: JobContext) -> MemoryInputs | None:
    """The model's shape (its config.json) and the tuning's figures, for the estimate; None
    where the objective sizes its own batches or the config cannot be read."""
    rows_sequences = ctx.spec.method.planned_sequences
    if rows_sequences is None or ctx.stage:
        return None
    if ctx.spec.tuning.type not in ESTIMATED_TUNINGS:
        # A tuning newer than the estimate's model of memory trains without a plan (the
        # dry run says so), as on a device without a memory limit.
        return None
    # A hub model is fetched first (progress in the events): a hub that cannot be reached
    # fails the job now as model_not_found, not after ~40 s of AutoConfig's retries.
    hub_folder = model_source(ctx) if is_hub_model(ctx.spec.model) else None
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(hub_folder or resolve_model(ctx.spec.model).path_or_id,
                                            trust_remote_code=settings.trust_remote_code)
        shape = ModelShape.from_config(config.to_dict())
    except Exception:  # an unusual architecture: train without an estimate, as before
        log.warning("no memory estimate for %s", ctx.spec.model, exc_info=True)
        return None
    # The dry run's view of the tuning, with what only the worker knows.
    setup = replace(training_setup(ctx.spec, ctx.device), precision="fp32",
                    paged_optimizer=is_quantized(ctx))
    return MemoryInputs(shape=shape, setup=setup, free_bytes=_free_bytes(ctx),
                        lean=setup.quantized)


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

    plan = on_quantized_base(tuning(type(ctx.spec.tuning)), ctx)
    memory = memory_inputs(ctx)
    replan = read_replan(ctx.job_dir)

    def resolve_for(n_rows: int) -> Resolved:
        return resolve(
            hp, rows=n_rows, default_learning_rate=plan.default_learning_rate,
            device=ctx.device,
            bf16_supported=ctx.device == "cuda" and torch.cuda.is_bf16_supported(),
            model_max_length=model_max_length, model_parameters=model_parameters,
            supports_gradient_checkpointing=plan.supports_gradient_checkpointing,
            world_size=ctx.world_size, memory=memory, replan=replan,
        )

    resolved = resolve_for(rows)
    if rows_at_length is not None:
        # The sequence length does not depend on the row count, so one more pass is exact.
        resolved = resolve_for(rows_at_length(resolved.max_seq_length))
    ctx.record_hyperparameters(resolved.as_dict())
    ctx.event("Hyperparameters: " + ", ".join(f"{k}={v}" for k, v in resolved.as_dict().items()),
              data={"hyperparameters": resolved.as_dict()})
    if resolved.memory is not None:
        m = resolved.memory
        figures = m.estimate.as_gib()
        ctx.event(f"Memory: micro-batch {m.micro_batch} x {resolved.gradient_accumulation_steps}"
                  f" accumulation, activation checkpointing {'on' if m.checkpointing else 'off'}"
                  f" ({m.reason}); estimated peak {figures['peak_allocated_gib']} GiB "
                  f"allocated, {figures['device_total_gib']} GiB on the device",
                  data={"memory": m.as_event()})
    return Setup(plan, resolved)


def trainable_model(ctx: JobContext, job: Setup, *, task: ModelTask = "causal_lm",
                    tokenizer: Any = None, what: str = "Model", note: str = "") -> Any:
    """The job's base model, loaded with the tuning's options and wrapped by it; an event
    says how many of its parameters train ("Model tiny: 8,192 of 1,000,000 parameters
    train", then `note`)."""
    model = load_model(ctx, job.plan, precision=job.hp.precision, task=task,
                       tokenizer=tokenizer)
    model = job.plan.apply(model, ctx.spec.tuning, task, ctx)
    trainable, total = count_parameters(model)
    ctx.event(f"{what} {ctx.spec.model}: {trainable:,} of {total:,} parameters train{note}",
              data={"trainable_parameters": trainable, "total_parameters": total})
    return model


def trainer_arguments(ctx: JobContext, hp: Resolved, config_cls: Any, *,
                      evaluate: bool = False, **extra: Any) -> Any:
    """A trl/transformers config with our conventions: one folder per job, checkpoints that
    resume (optimizer, scheduler and RNG included), reporting only to the job's integrations;
    with `evaluate` (the job has a validation file), an evaluation at every checkpoint."""
    if evaluate:
        extra = {"eval_strategy": "steps", "eval_steps": hp.save_steps, **extra}
    liger = liger_for(ctx.device, config_cls.__name__, ctx.spec.model)
    hub = "hub kernels on" if hub_kernels_on() else "hub kernels off"
    ctx.event(f"Kernels: {liger.reason}; {hub}",
              data={"liger_kernels": liger.on, "hub_kernels": hub_kernels_on()})
    reporting, tracking_args = report_to(ctx)
    extra = {**liger.trainer_kwargs(), **tracking_args, **extra}
    optim, why = choose_optimizer(ctx, hp.memory)
    if why:
        ctx.event(f"Optimizer: {why}",
                  data={"optim": optim or "adamw_torch"})
    if optim is not None:
        extra = {"optim": optim, **extra}
    return config_cls(
        output_dir=str(ctx.checkpoints_dir),
        num_train_epochs=hp.n_epochs, max_steps=hp.max_steps,
        # The micro-batch: the job's batch split across the processes of a data-parallel
        # run, and into micro-batches where memory asks (accumulation makes up the rest).
        per_device_train_batch_size=hp.micro_batch_size or max(1, hp.batch_size
                                                               // ctx.world_size),
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
        # A NaN loss must show as NaN (worker/training/divergence.py), not as the window's mean.
        logging_nan_inf_filter=False,
        logging_steps=hp.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=hp.save_steps, save_total_limit=2,
        seed=ctx.seed, data_seed=ctx.seed, report_to=reporting or "none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        # Every trainable parameter gets a gradient in our pipelines; the search for unused
        # ones costs an extra autograd traversal per step in data-parallel runs.
        ddp_find_unused_parameters=False if ctx.world_size > 1 else None,
        **extra,
    )


def run_trainer(ctx: JobContext, trainer: Any) -> bool:
    """Train (resuming from the newest checkpoint if a crash left one). False if stopped."""
    # Divergence first: a NaN step raises before it is logged or checkpointed.
    trainer.add_callback(DivergenceCallback(ctx))
    for callback in fault_callbacks(replanned=read_replan(ctx.job_dir) != Replan()):
        trainer.add_callback(callback)
    trainer.add_callback(JobEventsCallback(ctx))
    resume = ctx.latest_checkpoint()
    if resume is not None:
        ctx.event(f"Resuming from {resume.name}", level="warn",
                  data={"resume_from_step": int(resume.name.rsplit('-', 1)[1])})
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    finally:
        finish_tracking(ctx)
    return not ctx.stop.is_set()
