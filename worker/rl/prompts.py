"""Prompts for RL from a training file's rows: `prompt` rows, or the prompt of
prompt/completion or preference rows.

Each prompt is kept twice: as written in the row (what a reward model trained on preference
rows scores a response after: plain prompt + response, see worker/data/preference_data.py) and as
the policy reads it (a user turn through the chat template when the tokenizer has one, the
way the SFT stage trained it to answer).
"""

from dataclasses import dataclass
from typing import Any

from tunesmith.spec.data_formats import RowFormat, detect_row_format
from worker.training.failures import InvalidData

PROMPT_FORMATS = (RowFormat.prompt, RowFormat.prompt_completion, RowFormat.preference)


@dataclass(frozen=True)
class Prompt:
    text: str  # as written in the row
    policy_input: str  # what the policy continues


def row_prompt(row: dict[str, Any], *, field: str = "training_file") -> str:
    kind = detect_row_format(row)
    if kind not in PROMPT_FORMATS:
        raise InvalidData(f"{kind.value} rows hold no prompt for RL; use prompt, "
                          "prompt/completion or preference rows", field)
    return row["prompt"]


def as_user_turn(text: str, tokenizer: Any) -> str | list[dict[str, str]]:
    """A chat prompt (one user turn) where the tokenizer has a chat template, else the text."""
    if getattr(tokenizer, "chat_template", None):
        return [{"role": "user", "content": text}]
    return text


def policy_prompts(rows: list[dict[str, Any]], tokenizer: Any, *,
                   field: str = "training_file") -> list[Prompt]:
    prompts = []
    for row in rows:
        text = row_prompt(row, field=field)
        chat = as_user_turn(text, tokenizer)
        policy_input = chat if isinstance(chat, str) else tokenizer.apply_chat_template(
            chat, tokenize=False, add_generation_prompt=True)
        prompts.append(Prompt(text, policy_input))
    if not prompts:
        raise InvalidData("the file holds no prompts", field)
    return prompts
