"""Token lengths of converted rows, and how many training will truncate, said up front."""

import json
from typing import Any

from worker.training.context import JobContext


def _chat_ids(tokenizer: Any, messages: list[dict[str, Any]], tools: str | None) -> list[int]:
    # transformers 5 returns a BatchEncoding for tokenize=True; ask for it explicitly.
    # `tools` is the JSON string worker/data/sft_data.py keeps (trl decodes it the same way).
    return list(tokenizer.apply_chat_template(messages, tools=json.loads(tools) if tools
                                              else None, tokenize=True,
                                              return_dict=True)["input_ids"])


def row_length(tokenizer: Any, row: dict[str, Any]) -> int:
    """Tokens of one converted row (chat, prompt/completion, text or preference), as the
    trainer will see it to within a token or two (an appended EOS)."""
    if "messages" in row:
        return len(_chat_ids(tokenizer, row["messages"], row.get("tools")))
    if isinstance(row.get("prompt"), list):  # conversational prompt/completion
        return len(_chat_ids(tokenizer, row["prompt"] + row.get("completion", []),
                             row.get("tools")))
    text = "".join(row[key] for key in ("prompt", "completion", "text", "chosen")
                   if isinstance(row.get(key), str))
    return len(tokenizer(text, add_special_tokens=True).input_ids)


def row_lengths(tokenizer: Any, rows: list[dict[str, Any]]) -> list[int]:
    return [row_length(tokenizer, row) for row in rows]


def report_truncation(ctx: JobContext, lengths: list[int], max_length: int) -> int:
    """Write a warning event if rows exceed `max_length`; returns how many do."""
    over = sum(length > max_length for length in lengths)
    if over:
        ctx.event(
            f"{over} of {len(lengths)} rows are longer than max_seq_length={max_length} tokens "
            f"(longest {max(lengths)}) and will be truncated; raise "
            "hyperparameters.max_seq_length (up to the model's limit) or shorten them.",
            level="warn",
            data={"rows_truncated": over, "rows": len(lengths), "max_seq_length": max_length,
                  "longest_row_tokens": max(lengths)})
    return over
