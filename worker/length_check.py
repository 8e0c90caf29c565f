"""Token lengths against the job's limit: how many rows training will truncate, said up front."""

from typing import Any

from worker.context import JobContext


def row_length(tokenizer: Any, row: dict[str, Any]) -> int:
    """Tokens of one converted row (chat, prompt/completion, text or preference)."""
    if "messages" in row:
        return len(tokenizer.apply_chat_template(row["messages"], tokenize=True))
    texts = []
    for key in ("prompt", "completion", "text", "chosen"):
        value = row.get(key)
        if isinstance(value, list):
            value = tokenizer.apply_chat_template(value, tokenize=False)
        if isinstance(value, str):
            texts.append(value)
    return len(tokenizer("".join(texts), add_special_tokens=True).input_ids)


def report_truncation(ctx: JobContext, tokenizer: Any, rows: list[dict[str, Any]],
                      max_length: int) -> int:
    """Write a warning event if rows exceed `max_length`; returns how many do."""
    lengths = [row_length(tokenizer, row) for row in rows]
    over = sum(length > max_length for length in lengths)
    if over:
        ctx.event(
            f"{over} of {len(rows)} rows are longer than max_seq_length={max_length} tokens "
            f"(longest {max(lengths)}) and will be truncated; raise "
            "hyperparameters.max_seq_length (up to the model's limit) or shorten them.",
            level="warning",
            data={"rows_truncated": over, "rows": len(rows), "max_seq_length": max_length,
                  "longest_row_tokens": max(lengths)})
    return over
