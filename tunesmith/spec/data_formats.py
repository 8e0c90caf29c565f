"""JSONL row formats, and the validation of an uploaded file against them (no torch)."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tunesmith.json_input import JSONInputError, Line, parse_row
from tunesmith.spec import chat_messages
from tunesmith.spec.chat_messages import RowError

__all__ = ["ChatRow", "FileCheck", "LineProblem", "PreferenceChat", "RowError",
           "RowFormat", "chat_row", "check_jsonl", "detect_row_format", "preference_chat"]


class RowFormat(StrEnum):
    # {"messages": [...], "tools"?: [...]}: OpenAI's chat format, with tool calls and weights
    messages = "messages"
    sharegpt = "sharegpt"  # {"conversations": [{"from": "human"|"gpt"|"system", "value"}]}
    prompt_completion = "prompt_completion"  # {"prompt": ..., "completion": ...}
    alpaca = "alpaca"  # {"instruction": ..., "input": ..., "output": ...}
    text = "text"  # {"text": ...}
    preference = "preference"  # {"prompt": ..., "chosen": ..., "rejected": ...}
    # OpenAI's DPO format: {"input": {"messages", "tools"?}, "preferred_output": [assistant
    # message], "non_preferred_output": [assistant message]}
    openai_preference = "openai_preference"
    prompt = "prompt"  # {"prompt": ..., "answer"?: ...}


CHAT_FORMATS = frozenset({RowFormat.messages, RowFormat.sharegpt})


@dataclass(frozen=True)
class ChatRow:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None


@dataclass(frozen=True)
class PreferenceChat:
    prompt: list[dict[str, Any]]
    chosen: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise RowError(f'"{key}" must be a string')
    if not value.strip():
        raise RowError(f'"{key}" is empty')
    return value


def chat_row(row: dict[str, Any]) -> ChatRow:
    """The canonical messages and tools of a messages or ShareGPT row."""
    if "conversations" in row:
        return ChatRow(chat_messages.sharegpt_messages(row), None)
    return ChatRow(chat_messages.messages(row), chat_messages.tools(row))


def _output(row: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = row.get(key)
    if not isinstance(value, list) or not value:
        raise RowError(f'"{key}" must be a non-empty list of assistant messages')
    out = [chat_messages.message(m, f"{key}[{i}]") for i, m in enumerate(value)]
    if not any(chat_messages.trains(m) for m in out):
        raise RowError(f'"{key}" needs a non-empty assistant message')
    return out


def preference_chat(row: dict[str, Any]) -> PreferenceChat:
    """The parts of a row in OpenAI's preference format, checked."""
    source = row.get("input")
    if not isinstance(source, dict):
        raise RowError('"input" must be an object with "messages"')
    raw = source.get("messages")
    if not isinstance(raw, list) or not raw:
        raise RowError('"input.messages" must be a non-empty list')
    prompt = [chat_messages.message(m, f"input.messages[{i}]") for i, m in enumerate(raw)]
    chosen, rejected = _output(row, "preferred_output"), _output(row, "non_preferred_output")
    if chosen == rejected:
        raise RowError('"preferred_output" and "non_preferred_output" are the same')
    return PreferenceChat(prompt, chosen, rejected, chat_messages.tools(source, "input.tools"))


def detect_row_format(row: Any) -> RowFormat:
    """The format of one parsed row, or RowError naming the field at fault."""
    if not isinstance(row, dict):
        raise RowError("a row must be a JSON object")
    if "messages" in row or "conversations" in row:
        chat_row(row)
        return RowFormat.messages if "messages" in row else RowFormat.sharegpt
    if "preferred_output" in row or "non_preferred_output" in row:
        preference_chat(row)
        return RowFormat.openai_preference
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
        "no known format: expected one of messages | conversations (ShareGPT) | "
        "prompt+completion | instruction+output | text | prompt+chosen+rejected | "
        "input+preferred_output+non_preferred_output | prompt"
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
    # Bad lines past `max_problems` are counted, not kept.
    more_problems: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and self.format is not None


def check_jsonl(
    lines: Iterable[Line], *, max_line_bytes: int, max_rows: int | None = None,
    max_problems: int = 100,
) -> FileCheck:
    """Validate JSONL (lines as `tunesmith.json_input.iter_lines` reads them, the same
    reader the worker uses): every line one row, all rows of one format. Blank lines are
    skipped. The first `max_problems` bad lines are kept; the rest are counted."""
    check = FileCheck()

    def problem(number: int, message: str) -> None:
        if len(check.problems) < max_problems:
            check.problems.append(LineProblem(number, message))
        else:
            check.more_problems += 1

    for line in lines:
        if max_rows is not None and check.rows >= max_rows:
            problem(line.number,
                    f"the file has more than {max_rows} rows, the most one upload may hold")
            break
        try:
            row = parse_row(line, max_line_bytes=max_line_bytes)
        except JSONInputError as exc:
            problem(line.number, exc.describe().removeprefix(f"line {line.number}: "))
            continue
        if row is None:
            continue
        try:
            row_format = detect_row_format(row)
        except RowError as exc:
            problem(line.number, str(exc))
            continue
        if check.format is None:
            check.format = row_format
        elif row_format != check.format:
            problem(line.number, f"row is {row_format.value} but earlier rows are "
                                 f"{check.format.value}; one file holds one format")
            continue
        check.rows += 1
    if check.rows == 0 and not check.problems:
        check.problems.append(LineProblem(0, "the file has no rows"))
    return check
