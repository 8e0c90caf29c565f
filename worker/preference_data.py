"""Preference rows (`prompt`, `chosen`, `rejected`) for trl's RewardTrainer and DPOTrainer.

The texts are kept as they are: a response is scored (reward) or trained (DPO) as the
plain text prompt + response, the way PPO later scores a rollout of the policy. So a prompt
should end where the response begins (for example "Question: ...\\nAnswer:").
"""

from typing import Any

from worker.context import JobContext
from worker.failures import InvalidData


def preference_rows(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
            for r in rows]


def job_pairs(ctx: JobContext) -> tuple[list[dict[str, str]], list[dict[str, str]] | None]:
    """The job's training pairs, and its validation pairs if it names a validation file."""
    validation = (preference_rows(ctx.rows(ctx.spec.validation_file))
                  if ctx.spec.validation_file else None)
    return preference_rows(ctx.rows(ctx.spec.training_file)), validation


def check_pairs_fit(ctx: JobContext, kept: int, given: int, *, max_seq_length: int,
                    reason: str, field: str = "training_file") -> None:
    """Fail the job if the trainer dropped every pair as too long; report it if it dropped
    some. `reason` says why a pair is dropped (trainers differ), e.g. "the prompt alone
    fills max_seq_length"."""
    fix = (f"raise method.{ctx.spec.method.type}.hyperparameters.max_seq_length (now "
           f"{max_seq_length}) or shorten the rows")
    if kept == 0:
        raise InvalidData(f"No preference pair of {field} can train: in all {given}, {reason}; "
                          f"{fix}.", field)
    if kept < given:
        ctx.event(f"{given - kept} of {given} preference pairs of {field} are left out: "
                  f"{reason}; {fix} to train on them", level="warn",
                  data={"pairs": given, "pairs_dropped": given - kept, "file": field})
