"""Stop a run whose loss or weights went NaN/Inf before it logs, checkpoints or saves them.

A diverged run must fail as `diverged` (worker/training/failures.py) with its step, keep the last
good checkpoint and leave no artifact: so the check runs before the trainer's own log and save of a
step (on_log fires first in `_maybe_log_save_evaluate`; on_step_end, before it), and raising
there means the NaN state is never written. Transformers' `logging_nan_inf_filter` would hide
a NaN loss behind the window's mean, so worker/training/workflow.py turns it off.
"""

import math
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from worker.training.context import JobContext

# Logged values that go NaN/Inf when training diverges.
WATCHED = ("loss", "grad_norm")


class Diverged(RuntimeError):
    def __init__(self, step: int, what: str, last_good_step: int | None) -> None:
        kept = (f"the last good checkpoint (step {last_good_step}) is kept"
                if last_good_step is not None else "no checkpoint was saved before it")
        super().__init__(f"Training diverged at step {step}: {what}; {kept} and no model was "
                         "saved. Lower the learning rate (or learning_rate_multiplier), or use "
                         "bf16/fp32 instead of fp16.")
        self.step = step


def non_finite_parameter(model: Any) -> str | None:
    """The name of a trainable parameter holding a NaN/Inf value, if any (one pass over the
    trained weights: for adapters a few MB, for full fine-tuning one read of the model)."""
    import torch

    for name, parameter in model.named_parameters():
        if parameter.requires_grad and not bool(torch.isfinite(parameter).all()):
            return name
    return None


class DivergenceCallback(TrainerCallback):
    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx

    def _diverged(self, step: int, what: str) -> Diverged:
        last = self.ctx.latest_checkpoint()
        return Diverged(step, what, int(last.name.rsplit("-", 1)[1]) if last else None)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        for key in WATCHED:
            value = (logs or {}).get(key)
            if isinstance(value, int | float) and not math.isfinite(value):
                raise self._diverged(state.global_step, f"{key} is {value}")

    def on_step_end(self, args: TrainingArguments, state: TrainerState,
                    control: TrainerControl, model: Any = None, **kwargs: Any) -> None:
        # Before anything of this step is kept: a checkpoint, or the final weights.
        if model is None or not (control.should_save or control.should_training_stop
                                 or state.global_step >= state.max_steps):
            return
        if (name := non_finite_parameter(model)) is not None:
            raise self._diverged(state.global_step, f"parameter {name} holds NaN/Inf")

