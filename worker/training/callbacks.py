"""The TrainerCallback that turns a trainer's logs and saves into job events and checkpoints."""

import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from worker.training.context import JobContext

# Keys trainers log under other names; events use one vocabulary.
RENAMES = {"lr": "learning_rate"}
# OpenAI's names for what trainers log (clients and dashboards read these), added beside
# the trainer's own. Our validation loss is over the whole validation file: OpenAI's
# `full_valid_*`, and the best stand-in for its sampled `valid_*`.
OPENAI_NAMES = {
    "loss": ("train_loss",),
    "mean_token_accuracy": ("train_mean_token_accuracy",),
    "eval_loss": ("valid_loss", "full_valid_loss"),
    "eval_mean_token_accuracy": ("valid_mean_token_accuracy", "full_valid_mean_token_accuracy"),
}
TRAIN_METRICS = ("train_loss", "train_mean_token_accuracy", "learning_rate", "epoch")
VALID_METRICS = ("valid_loss", "valid_mean_token_accuracy", "full_valid_loss",
                 "full_valid_mean_token_accuracy")


def openai_metrics(logs: dict[str, float]) -> dict[str, float]:
    """One log of a trainer in our vocabulary plus OpenAI's names."""
    data: dict[str, float] = {}
    for key, value in logs.items():
        if not isinstance(value, int | float) or key in ("epoch", "step"):
            continue
        if key == "train_loss":
            # Only the end-of-training summary logs this key (steps log `loss`): a mean over
            # the run, or its resumed part. Under OpenAI's name it would read as a step's.
            data["mean_train_loss"] = value
            continue
        data[RENAMES.get(key, key)] = value
        for name in OPENAI_NAMES.get(key, ()):
            data[name] = value
    return data


class JobEventsCallback(TrainerCallback):
    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self._last_time = time.monotonic()
        self._last_tokens = 0
        self._last_step = 0
        # The latest training and validation metrics: a checkpoint keeps both (the trainer
        # evaluates, then saves, after the step's training log).
        self._train_metrics: dict[str, Any] = {}
        self._valid_metrics: dict[str, Any] = {}

    def on_train_begin(self, args: TrainingArguments, state: TrainerState,
                       control: TrainerControl, **kwargs: Any) -> None:
        self._last_time = time.monotonic()
        self._last_step = state.global_step
        self._last_tokens = state.num_input_tokens_seen or 0
        where = f" from step {state.global_step}" if state.global_step else ""
        self.ctx.event(f"Training{where} to step {state.max_steps}",
                       data={"step": state.global_step, "total_steps": state.max_steps})

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not logs:
            return
        now = time.monotonic()
        elapsed = max(now - self._last_time, 1e-9)
        data: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0, 4),
                                **openai_metrics(logs)}
        tokens = state.num_input_tokens_seen or 0
        if tokens > self._last_tokens:
            data["tokens_per_second"] = round((tokens - self._last_tokens) / elapsed, 1)
        steps = state.global_step - self._last_step
        rate = steps / elapsed if steps > 0 else None
        progress = {"step": state.global_step, "total_steps": state.max_steps,
                    "epoch": data["epoch"]}
        if rate:
            progress["steps_per_second"] = round(rate, 4)
        self.ctx.metrics(data, progress=progress, trained_tokens=tokens or None)
        if "train_loss" in data:
            self._train_metrics = {k: data[k] for k in TRAIN_METRICS if k in data}
        if "valid_loss" in data:
            self._valid_metrics = {k: data[k] for k in VALID_METRICS if k in data}
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
            self.ctx.checkpoint(state.global_step, folder,
                                {**self._train_metrics, **self._valid_metrics})
