"""Resolve "auto" hyperparameters for the model, the data, the tuning and the device's memory."""

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from tunesmith.memory_estimate import ModelShape, TrainingSetup
from tunesmith.memory_plan import MemoryPlan, choose, micro_batches
from tunesmith.spec.hyperparameters import Hyperparameters
from worker.process.oom_recovery import Replan


@dataclass(frozen=True)
class MemoryInputs:
    """What the memory plan needs beyond the hyperparameters: the model's shape, the tuning's
    part of the estimate's setup, the device's free memory (None: no limit)."""

    shape: ModelShape
    setup: TrainingSetup
    free_bytes: int | None
    lean: bool  # QLoRA: memory is why it was chosen


@dataclass(frozen=True)
class Resolved:
    n_epochs: int
    batch_size: int
    learning_rate: float
    learning_rate_multiplier: float
    max_steps: int  # -1: n_epochs decides
    total_steps: int
    warmup_ratio: float
    max_seq_length: int
    gradient_accumulation_steps: int
    weight_decay: float
    lr_scheduler: str
    precision: str
    gradient_checkpointing: bool
    save_steps: int
    logging_steps: int
    # Rows per forward pass on one device; gradient accumulation makes up the batch.
    micro_batch_size: int = 0
    estimated_peak_memory_gib: float | None = None
    memory: MemoryPlan | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "memory"}


def _pick(value: Any, default: Any) -> Any:
    return default if value == "auto" else value


def resolve(hp: Hyperparameters, *, rows: int, default_learning_rate: float, device: str,
            bf16_supported: bool, model_max_length: int, model_parameters: int,
            supports_gradient_checkpointing: bool, world_size: int = 1,
            memory: MemoryInputs | None = None, replan: Replan | None = None) -> Resolved:
    replan = replan or Replan()
    # OpenAI's rule of thumb: small data sets need more passes.
    n_epochs = _pick(hp.n_epochs, 3 if rows >= 100 else 5 if rows >= 20 else 10)
    batch_size = _pick(hp.batch_size, max(1, min(8, rows)))
    accumulation = _pick(hp.gradient_accumulation_steps, 1)
    multiplier = _pick(hp.learning_rate_multiplier, 1.0)
    learning_rate = _pick(hp.learning_rate, default_learning_rate * multiplier)
    steps_per_epoch = max(1, math.ceil(rows / (batch_size * accumulation)))
    max_steps = _pick(hp.max_steps, -1)
    total = max_steps if max_steps > 0 else steps_per_epoch * n_epochs
    precision = _pick(hp.precision, "bf16" if device == "cuda" and bf16_supported else "fp32")
    max_seq_length = _pick(hp.max_seq_length, min(model_max_length, 1024))
    asked = None if hp.gradient_checkpointing == "auto" else hp.gradient_checkpointing
    if replan.checkpointing and supports_gradient_checkpointing:
        asked = True  # out-of-memory recovery's last step
    per_device = max(1, batch_size // world_size)
    plan = None
    if memory is not None:
        plan = choose(memory.shape, replace(memory.setup, precision=precision,
                                            seq_len=max_seq_length, micro_batch=per_device),
                      batch=per_device, free_bytes=memory.free_bytes, checkpointing=asked,
                      supports_checkpointing=supports_gradient_checkpointing,
                      lean=memory.lean, min_halvings=replan.halvings)
        checkpointing, micro = plan.checkpointing, plan.micro_batch
    else:
        # No estimate (a model without a readable config): checkpointing costs 17-28% of the
        # speed for 10-18% less peak memory (bench/sft_speed.py), so only for big models.
        checkpointing = asked if asked is not None else (
            device == "cuda" and model_parameters > 3_000_000_000)
        micro = micro_batches(per_device, replan.halvings)[0]
    if not supports_gradient_checkpointing:
        checkpointing = False
    return Resolved(
        n_epochs=n_epochs, batch_size=batch_size, learning_rate=learning_rate,
        learning_rate_multiplier=multiplier, max_steps=max_steps, total_steps=total,
        warmup_ratio=_pick(hp.warmup_ratio, 0.0 if total < 50 else 0.03),
        max_seq_length=max_seq_length,
        gradient_accumulation_steps=accumulation * (per_device // micro),
        weight_decay=_pick(hp.weight_decay, 0.0), lr_scheduler=_pick(hp.lr_scheduler, "linear"),
        precision=precision, gradient_checkpointing=checkpointing,
        # About five checkpoints a job: what a resumed job loses is at most a fifth.
        save_steps=_pick(hp.save_steps, max(1, min(500, math.ceil(total / 5)))),
        logging_steps=_pick(hp.logging_steps, max(1, min(50, total // 50))),
        micro_batch_size=micro,
        estimated_peak_memory_gib=None if plan is None
        else round(plan.estimate.device_total / 2**30, 2),
        memory=plan,
    )
