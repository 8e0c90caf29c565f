"""Resolve "auto" hyperparameters for the model, the data and the tuning."""

import math
from dataclasses import asdict, dataclass
from typing import Any

from tunesmith.spec.hyperparameters import Hyperparameters


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pick(value: Any, default: Any) -> Any:
    return default if value == "auto" else value


def resolve(hp: Hyperparameters, *, rows: int, default_learning_rate: float, device: str,
            bf16_supported: bool, model_max_length: int, model_parameters: int,
            supports_gradient_checkpointing: bool) -> Resolved:
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
    # Checkpointing costs 17-28% of the speed for 10-18% less peak memory (bench/sft_speed.py):
    # only worth it where memory is the limit.
    checkpointing = _pick(hp.gradient_checkpointing,
                          device == "cuda" and model_parameters > 3_000_000_000)
    if not supports_gradient_checkpointing:
        checkpointing = False
    return Resolved(
        n_epochs=n_epochs, batch_size=batch_size, learning_rate=learning_rate,
        learning_rate_multiplier=multiplier, max_steps=max_steps, total_steps=total,
        warmup_ratio=_pick(hp.warmup_ratio, 0.0 if total < 50 else 0.03),
        max_seq_length=_pick(hp.max_seq_length, min(model_max_length, 1024)),
        gradient_accumulation_steps=accumulation,
        weight_decay=_pick(hp.weight_decay, 0.0), lr_scheduler=_pick(hp.lr_scheduler, "linear"),
        precision=precision, gradient_checkpointing=checkpointing,
        # About five checkpoints a job: what a resumed job loses is at most a fifth.
        save_steps=_pick(hp.save_steps, max(1, min(500, math.ceil(total / 5)))),
        logging_steps=_pick(hp.logging_steps, max(1, min(50, total // 50))),
    )
