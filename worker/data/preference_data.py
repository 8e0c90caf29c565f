"""Preference rows for trl's RewardTrainer and DPOTrainer: `prompt`, `chosen`, `rejected`,
or OpenAI's preference format (`input.messages`, `preferred_output`,
`non_preferred_output`).

The texts are kept as they are: a response is scored (reward) or trained (DPO) as the
plain text prompt + response, the way PPO later scores a rollout of the policy. So a prompt
should end where the response begins (for example "Question: ...\nAnswer:"). OpenAI's
chat rows become such texts through the model's chat template: the prompt as the template
renders it up to the assistant's turn, each response as what the template adds after it.
"""

from dataclasses import dataclass
from typing import Any

from tunesmith.spec.data_formats import (
    PreferenceChat,
    RowFormat,
    detect_row_format,
    preference_chat,
)
from tunesmith.spec.hyperparameters import Hyperparameters
from worker.training.context import JobContext
from worker.training.failures import InvalidData
from worker.training.modeling import load_tokenizer
from worker.training.workflow import Setup, setup


def _as_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(m["content"] for m in messages)


def _chat_pair(chat: PreferenceChat, tokenizer: Any) -> dict[str, str]:
    if not getattr(tokenizer, "chat_template", None):
        return {"prompt": _as_text(chat.prompt) + "\n", "chosen": _as_text(chat.chosen),
                "rejected": _as_text(chat.rejected)}
    prompt = tokenizer.apply_chat_template(chat.prompt, tools=chat.tools, tokenize=False,
                                           add_generation_prompt=True)

    def response(messages: list[dict[str, Any]]) -> str:
        full = tokenizer.apply_chat_template(chat.prompt + messages, tools=chat.tools,
                                             tokenize=False)
        return full[len(prompt):] if full.startswith(prompt) else _as_text(messages)

    return {"prompt": prompt, "chosen": response(chat.chosen),
            "rejected": response(chat.rejected)}


def preference_rows(rows: list[dict[str, Any]], tokenizer: Any) -> list[dict[str, str]]:
    out = []
    for row in rows:
        if detect_row_format(row) == RowFormat.openai_preference:
            out.append(_chat_pair(preference_chat(row), tokenizer))
        else:
            out.append({"prompt": row["prompt"], "chosen": row["chosen"],
                        "rejected": row["rejected"]})
    return out


def job_pairs(ctx: JobContext, tokenizer: Any,
              ) -> tuple[list[dict[str, str]], list[dict[str, str]] | None]:
    """The job's training pairs, and its validation pairs if it names a validation file."""
    validation = (preference_rows(ctx.rows(ctx.spec.validation_file), tokenizer)
                  if ctx.spec.validation_file else None)
    return preference_rows(ctx.rows(ctx.spec.training_file), tokenizer), validation


@dataclass
class PairsJob:
    """What a preference objective starts from: the tokenizer, the pairs, the resolved plan."""

    tokenizer: Any
    rows: list[dict[str, str]]
    eval_rows: list[dict[str, str]] | None
    job: Setup

    def check_kept(self, ctx: JobContext, trainer: Any, *, reason: str) -> None:
        """Fail or warn where the trainer dropped pairs as too long (check_pairs_fit), in
        the training file and the validation file."""
        length = self.job.hp.max_seq_length
        check_pairs_fit(ctx, len(trainer.train_dataset), len(self.rows),
                        max_seq_length=length, reason=reason)
        if self.eval_rows:
            check_pairs_fit(ctx, len(trainer.eval_dataset), len(self.eval_rows),
                            max_seq_length=length, reason=reason, field="validation_file")


def prepare_pairs_job(ctx: JobContext, hp: Hyperparameters) -> PairsJob:
    """The shared start of the reward and DPO objectives: the job's pairs read with the
    model's tokenizer, and the hyperparameters resolved for that many pairs."""
    tokenizer = load_tokenizer(ctx)
    rows, eval_rows = job_pairs(ctx, tokenizer)
    job = setup(ctx, hp, rows=len(rows), model_max_length=tokenizer.model_max_length)
    return PairsJob(tokenizer, rows, eval_rows, job)


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
