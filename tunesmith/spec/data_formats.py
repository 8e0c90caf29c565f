"""JSONL row formats, and the validation of an uploaded file against them (no torch)."""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class RowFormat(StrEnum):
    messages = "messages"  # {"messages": [{"role": ..., "content": ...}, ...]}
    prompt_completion = "prompt_completion"  # {"prompt": ..., "completion": ...}
    alpaca = "alpaca"  # {"instruction": ..., "input": ..., "output": ...}
    text = "text"  # {"text": ...}
    preference = "preference"  # {"prompt": ..., "chosen": ..., "rejected": ...}
    prompt = "prompt"  # {"prompt": ..., "answer"?: ...}


ROLES = {"system", "user", "assistant", "developer", "tool"}


class RowError(ValueError):
    """A row that fits no format; the message says what is wrong with it."""


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise RowError(f'"{key}" must be a string')
    if not value.strip():
        raise RowError(f'"{key}" is empty')
    return value


def detect_row_format(row: Any) -> RowFormat:
    """The format of one parsed row, or RowError naming the field at fault."""
    if not isinstance(row, dict):
        raise RowError("a row must be a JSON object")
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            raise RowError('"messages" must be a non-empty list')
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                raise RowError(f"messages[{i}].role must be one of {sorted(ROLES)}")
            if not isinstance(message.get("content"), str):
                raise RowError(f"messages[{i}].content must be a string")
        if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
            raise RowError("messages needs at least one non-empty assistant message")
        return RowFormat.messages
    if "chosen" in row or "rejected" in row:
        _text(row, "prompt")
        chosen, rejected = _text(row, "chosen"), _text(row, "rejected")
        if chosen == rejected:
            raise RowError('"chosen" and "rejected" are the same text')
        return RowFormat.preference
    if "completion" in row:
        _text(row, "prompt")
        _text(row, "completion")
        return RowFormat.prompt_completion
    if "instruction" in row or "output" in row:
        _text(row, "instruction")
        _text(row, "output")
        if not isinstance(row.get("input", ""), str):
            raise RowError('"input" must be a string')
        return RowFormat.alpaca
    if "text" in row:
        _text(row, "text")
        return RowFormat.text
    if "prompt" in row:
        _text(row, "prompt")
        if "answer" in row and not isinstance(row["answer"], str):
            raise RowError('"answer" must be a string')
        return RowFormat.prompt
    raise RowError(
        "no known format: expected one of messages | prompt+completion | instruction+output | "
        "text | prompt+chosen+rejected | prompt"
    )


@dataclass
class LineProblem:
    line: int
    message: str


@dataclass
class FileCheck:
    """What validation found: the file's format and row count, or the problems by line."""

    format: RowFormat | None = None
    rows: int = 0
    problems: list[LineProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.format is not None


def check_jsonl(
    lines: Iterable[bytes], *, max_line_bytes: int, max_rows: int | None = None,
    max_problems: int = 20,
) -> FileCheck:
    """Validate JSONL: every line one row, all rows of one format. Blank lines are skipped."""
    check = FileCheck()
    for number, raw in enumerate(lines, start=1):
        if len(check.problems) >= max_problems:
            break
        if max_rows is not None and check.rows >= max_rows:
            check.problems.append(LineProblem(
                number, f"the file has more than {max_rows} rows, the most one upload may hold"))
            break
        if len(raw) > max_line_bytes:
            check.problems.append(
                LineProblem(number, f"line is longer than the limit of {max_line_bytes} bytes")
            )
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            check.problems.append(
                LineProblem(number, f"not UTF-8 ({exc.reason} at byte {exc.start})")
            )
            continue
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            check.problems.append(
                LineProblem(number, f"invalid JSON: {exc.msg} (column {exc.colno})")
            )
            continue
        try:
            row_format = detect_row_format(row)
        except RowError as exc:
            check.problems.append(LineProblem(number, str(exc)))
            continue
        if check.format is None:
            check.format = row_format
        elif row_format != check.format:
            check.problems.append(
                LineProblem(
                    number,
                    f"row is {row_format.value} but earlier rows are {check.format.value}; "
                    "one file holds one format",
                )
            )
            continue
        check.rows += 1
    if check.rows == 0 and not check.problems:
        check.problems.append(LineProblem(0, "the file has no rows"))
    return check
