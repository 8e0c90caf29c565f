"""Per-task loss for a multitask job, measured as it trains.

The trainer's own loss is the mixture's; to see whether each task learns, every so many steps
(and at the first and last logged step) the model is evaluated on each task's rows alone and
the token-weighted mean loss goes into that step's log as `loss/<task>` (and `eval_loss` for a
validation file). The rows are prepared by the SFTTrainer exactly as its training rows are
(passed to it as named eval datasets), so the loss is the training loss on that task.
"""

from typing import Any

import torch
from trl import SFTTrainer

TASK_KEY = "task:"  # eval dataset keys: "task:<name>"; the validation file's is "validation"
VALIDATION_KEY = "validation"


class PerTaskLossTrainer(SFTTrainer):
    def __init__(self, *args: Any, measure_every: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.measure_every = max(1, measure_every)
        self._last_measured: int | None = None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        step = self.state.global_step
        is_training_log = "loss" in logs or "train_loss" in logs
        due = (self._last_measured is None or step - self._last_measured >= self.measure_every
               or step >= self.state.max_steps)
        if is_training_log and due and step != self._last_measured:
            logs.update(self.task_losses())
            self._last_measured = step
        super().log(logs, start_time)

    @torch.no_grad()
    def task_losses(self) -> dict[str, float]:
        """Mean loss per supervised token on each named eval dataset."""
        model = self.model
        was_training = model.training
        model.eval()
        try:
            losses = {}
            for key in self.eval_dataset:
                totals = torch.zeros(2, device=self.args.device)  # loss * tokens, tokens
                for batch in self.get_eval_dataloader(key):
                    batch = {k: v.to(self.args.device) if torch.is_tensor(v) else v
                             for k, v in batch.items()}
                    # The model's loss is the mean over the shifted labels that are not -100.
                    tokens = (batch["labels"][:, 1:] != -100).sum()
                    if tokens == 0:
                        continue
                    loss = model(**batch, use_cache=False).loss
                    totals += torch.stack([loss.float() * tokens, tokens.float()])
                # Under data parallelism each process saw a shard of the rows.
                totals = self.accelerator.reduce(totals, reduction="sum")
                if totals[1] > 0:
                    name = ("eval_loss" if key == VALIDATION_KEY
                            else f"loss/{key.removeprefix(TASK_KEY)}")
                    losses[name] = round((totals[0] / totals[1]).item(), 6)
            return losses
        finally:
            model.train(was_training)
