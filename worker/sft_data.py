"""Rows of the supervised formats as trl's SFTTrainer reads them.

- chat `messages`: trained on assistant turns only when the chat template marks them
  with `{% generation %}`; otherwise split into a conversational prompt/completion at the
  last assistant turn, which trl supervises on the completion alone.
- `prompt`/`completion`: kept as is (completion-only loss).
- alpaca `instruction`/`input`/`output`: a user turn and an assistant turn when the model
  has a chat template, else plain prompt/completion text.
"""

from typing import Any

from tunesmith.spec.data_formats import RowFormat, detect_row_format


def template_marks_generation(tokenizer: Any) -> bool:
    template = getattr(tokenizer, "chat_template", None) or ""
    return "{% generation %}" in template or "{%- generation %}" in template


def _split_at_last_assistant(messages: list[dict[str, str]]) -> dict[str, Any]:
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return {"prompt": messages[:last], "completion": [messages[last]]}


def to_sft_row(row: dict[str, Any], tokenizer: Any, *, assistant_only: bool) -> dict[str, Any]:
    kind = detect_row_format(row)
    if kind == RowFormat.messages:
        messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        if assistant_only and not template_marks_generation(tokenizer):
            return _split_at_last_assistant(messages)
        return {"messages": messages}
    if kind == RowFormat.prompt_completion:
        return {"prompt": row["prompt"], "completion": row["completion"]}
    if kind == RowFormat.alpaca:
        instruction = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        if getattr(tokenizer, "chat_template", None):
            return {"prompt": [{"role": "user", "content": instruction}],
                    "completion": [{"role": "assistant", "content": row["output"]}]}
        return {"prompt": instruction + "\n\n", "completion": row["output"]}
    raise ValueError(f"{kind.value} rows are not supervised data")


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
    sft = to_sft_row(row, tokenizer, assistant_only=True)
    if "messages" in sft:
        sft = _split_at_last_assistant(sft["messages"])
    if isinstance(sft["prompt"], list):
        prompt = tokenizer.apply_chat_template(sft["prompt"], tokenize=False,
                                               add_generation_prompt=True)
        return prompt, sft["completion"][0]["content"]
    return sft["prompt"], sft["completion"]
