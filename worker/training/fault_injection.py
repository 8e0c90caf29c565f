"""Faults that tests inject into a real training run. Test-only: every one is ignored unless the
`test_faults` setting is on (TUNESMITH_TEST_FAULTS=true), which production never sets."""

from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from tunesmith.settings import settings


class FaultInjectionCallback(TrainerCallback):
    """At the start of step `test_fault_nan_at_step`, put a NaN in a trained weight (what an
    overflow does; loss, gradients and the optimizer follow). At the start of step
    `test_fault_oom_at_step`, raise torch.OutOfMemoryError, once per job: only while the job
    has not been replanned for memory (`replanned` false)."""

    def __init__(self, *, replanned: bool) -> None:
        self.replanned = replanned

    def on_step_begin(self, args: TrainingArguments, state: TrainerState,
                      control: TrainerControl, model: Any = None, **kwargs: Any) -> None:
        import torch

        step = state.global_step + 1
        if step == settings.test_fault_nan_at_step and model is not None:
            with torch.no_grad():
                trained = next(p for p in model.parameters() if p.requires_grad)
                trained.view(-1)[0] = float("nan")
        if step == settings.test_fault_oom_at_step and not self.replanned:
            raise torch.OutOfMemoryError(
                f"CUDA out of memory (test fault TUNESMITH_TEST_FAULT_OOM_AT_STEP={step})")


def fault_callbacks(*, replanned: bool) -> list[TrainerCallback]:
    return [FaultInjectionCallback(replanned=replanned)] if settings.test_faults else []
