"""The TrainerCallback that turns a trainer's logs and saves into job events and checkpoints."""

import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from worker.context import JobContext

# Keys trainers log under other names; events use one vocabulary.
# (The end-of-training summary's `train_loss` keeps its name: it is a mean over the run, or
# over the resumed part of it, not a step's loss.)
RENAMES = {"lr": "learning_rate"}


class JobEventsCallback(TrainerCallback):
    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self._last_time = time.monotonic()
        self._last_tokens = 0
        self._last_step = 0
        self._last_metrics: dict[str, Any] = {}

    def on_train_begin(self, args: TrainingArguments, state: TrainerState,
                       control: TrainerControl, **kwargs: Any) -> None:
        self._last_time = time.monotonic()
        self._last_step = state.global_step
        self._last_tokens = state.num_input_tokens_seen or 0
        where = f" from step {state.global_step}" if state.global_step else ""
        self.ctx.event(f"{self.ctx.stage + ': ' if self.ctx.stage else ''}Training{where} to "
                       f"step {state.max_steps}",
                       data={"step": state.global_step, "total_steps": state.max_steps,
                             "stage": self.ctx.stage or None})

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not logs:
            return
        now = time.monotonic()
        elapsed = max(now - self._last_time, 1e-9)
        data: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0, 4)}
        for key, value in logs.items():
            if isinstance(value, int | float) and key not in ("epoch", "step"):
                data[RENAMES.get(key, key)] = value
        tokens = state.num_input_tokens_seen or 0
        if tokens > self._last_tokens:
            data["tokens_per_second"] = round((tokens - self._last_tokens) / elapsed, 1)
        steps = state.global_step - self._last_step
        rate = steps / elapsed if steps > 0 else None
        if self.ctx.stage:
            data["stage"] = self.ctx.stage
        progress = {"step": state.global_step, "total_steps": state.max_steps,
                    "epoch": data["epoch"], "stage": self.ctx.stage or None}
        if rate:
            progress["steps_per_second"] = round(rate, 4)
        self.ctx.metrics(data, progress=progress, trained_tokens=tokens or None)
        self._last_metrics = data
        self._last_time, self._last_tokens, self._last_step = now, tokens, state.global_step

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if self.ctx.stop.is_set():
            # Save where we are, then stop: a cancelled or preempted job resumes from here.
            control.should_save = True
            control.should_training_stop = True

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            metrics = {k: v for k, v in self._last_metrics.items()
                       if k in ("loss", "eval_loss", "learning_rate", "epoch")}
            if "loss" in metrics:
                metrics["train_loss"] = metrics.pop("loss")
            self.ctx.checkpoint(state.global_step, folder, metrics)
