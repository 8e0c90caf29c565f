"""Rows of the supervised formats as trl's SFTTrainer reads them.

- chat rows (`messages`, or ShareGPT `conversations`), in canonical form
  (tunesmith.spec.chat_messages: text parts joined, tool calls kept, `tools` as the JSON
  string trl passes to the chat template): trained on assistant turns only when the chat
  template marks them with `{% generation %}`; otherwise split into a conversational
  prompt/completion at the last trained assistant turn, which trl supervises on the
  completion alone.
- per-message `weight` 0: the turn is context, never loss. A template that marks
  generation and reads `weight` (the tiny model's) leaves such turns unmarked; with any
  other template, a file holding weight-0 turns is split at the last weight-1 turn.
- `prompt`/`completion`: kept as is (completion-only loss).
- alpaca `instruction`/`input`/`output`: a user turn and an assistant turn when the model
  has a chat template, else plain prompt/completion text.
"""

import json
from typing import Any

from tunesmith.spec.chat_messages import trains
from tunesmith.spec.data_formats import CHAT_FORMATS, RowFormat, chat_row, detect_row_format


def template_marks_generation(tokenizer: Any) -> bool:
    template = getattr(tokenizer, "chat_template", None) or ""
    return "{% generation %}" in template or "{%- generation %}" in template


def template_reads_weight(tokenizer: Any) -> bool:
    """Whether the chat template leaves weight-0 assistant turns out of its generation marks
    (it mentions the message's `weight`)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    return template_marks_generation(tokenizer) and "weight" in template


def _split_at_last_trained(messages: list[dict[str, Any]]) -> dict[str, Any]:
    # Turns after the last trained one would only be context for nothing: they are left out.
    last = max(i for i, m in enumerate(messages) if trains(m))
    return {"prompt": messages[:last], "completion": [messages[last]]}


def _has_weight_zero(row: dict[str, Any]) -> bool:
    return any(m.get("weight") == 0 for m in row.get("messages") or ())


def must_split(rows: list[dict[str, Any]], tokenizer: Any, *, assistant_only: bool) -> bool:
    """Whether chat rows become prompt/completion (decided once per file: one dataset holds
    one row shape)."""
    if not assistant_only:
        return False
    if not template_marks_generation(tokenizer):
        return True
    return not template_reads_weight(tokenizer) and any(_has_weight_zero(r) for r in rows)


def to_sft_row(row: dict[str, Any], tokenizer: Any, *, split: bool) -> dict[str, Any]:
    kind = detect_row_format(row)
    if kind in CHAT_FORMATS:
        chat = chat_row(row)
        tools = json.dumps(chat.tools) if chat.tools else None
        if split:
            return {**_split_at_last_trained(chat.messages), "tools": tools}
        return {"messages": chat.messages, "tools": tools}
    if kind == RowFormat.prompt_completion:
        return {"prompt": row["prompt"], "completion": row["completion"]}
    if kind == RowFormat.alpaca:
        instruction = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        if getattr(tokenizer, "chat_template", None):
            return {"prompt": [{"role": "user", "content": instruction}],
                    "completion": [{"role": "assistant", "content": row["output"]}],
                    "tools": None}
        return {"prompt": instruction + "\n\n", "completion": row["output"]}
    raise ValueError(f"{kind.value} rows are not supervised data")


def to_sft_rows(rows: list[dict[str, Any]], tokenizer: Any, *,
                assistant_only: bool) -> list[dict[str, Any]]:
    """A file's rows for SFTTrainer, all of one shape."""
    split = must_split(rows, tokenizer, assistant_only=assistant_only)
    return [to_sft_row(r, tokenizer, split=split) for r in rows]


def sft_loss_options(rows: list[dict[str, Any]], tokenizer: Any, *,
                     completion_only: bool) -> dict[str, Any]:
    """SFTConfig options for where the loss goes, given the converted rows."""
    chat = any("messages" in row for row in rows)
    return {
        "assistant_only_loss": completion_only and chat,
        "completion_only_loss": completion_only if not chat else None,
    }


def prompt_and_answer(row: dict[str, Any], tokenizer: Any) -> tuple[str, str]:
    """The text a model is prompted with and the answer it should give (for evaluation)."""
    sft = to_sft_row(row, tokenizer, split=True)
    if isinstance(sft["prompt"], list):
        tools = json.loads(sft["tools"]) if sft.get("tools") else None
        prompt = tokenizer.apply_chat_template(sft["prompt"], tools=tools, tokenize=False,
                                               add_generation_prompt=True)
        return prompt, sft["completion"][0]["content"]
    return sft["prompt"], sft["completion"]
