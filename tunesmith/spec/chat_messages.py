"""Chat rows as users bring them, checked and brought to one shape (no torch).

Accepted, as OpenAI's fine-tuning API documents them: `content` as a string or a list of
text parts; assistant messages with `tool_calls` (and no content) and `weight` (0 or 1:
a weight-0 turn is context, never trained); `tool` messages answering a call; `tools` on
the row. ShareGPT rows (`conversations` of `from`/`value`, roles human/gpt/system) become
the same messages. The canonical message holds `role`, `content` (a string) and, when
given, `tool_calls`, `tool_call_id`, `name`, `weight`.
"""

import json
from typing import Any


class RowError(ValueError):
    """A row that fits no format; the message says what is wrong with it."""


ROLES = {"system", "user", "assistant", "developer", "tool"}
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def _content(message: dict[str, Any], where: str) -> str | None:
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RowError(f"{where}.content must be a string or a list of text parts")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(
                part.get("text"), str):
            raise RowError(f'{where}.content[{j}] must be {{"type": "text", "text": "..."}}; '
                           "only text parts can train here")
        texts.append(part["text"])
    return "".join(texts)


def _tool_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(calls, list) or not calls:
        raise RowError(f"{where}.tool_calls must be a non-empty list")
    out = []
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RowError(f"{where}.tool_calls[{j}].function.name must be a string")
        arguments = function.get("arguments", "{}")
        if isinstance(arguments, dict):  # OpenAI sends a JSON string; an object means the same
            arguments = json.dumps(arguments)
        if not isinstance(arguments, str):
            raise RowError(f"{where}.tool_calls[{j}].function.arguments must be a JSON string")
        call_id = call.get("id", f"call_{j}")
        if not isinstance(call_id, str):
            raise RowError(f"{where}.tool_calls[{j}].id must be a string")
        out.append({"id": call_id, "type": "function",
                    "function": {"name": function["name"], "arguments": arguments}})
    return out


def message(raw: Any, where: str) -> dict[str, Any]:
    """One message in canonical form, or RowError naming `where` (e.g. messages[2])."""
    if not isinstance(raw, dict) or raw.get("role") not in ROLES:
        raise RowError(f"{where}.role must be one of {sorted(ROLES)}")
    role = raw["role"]
    content = _content(raw, where)
    out: dict[str, Any] = {"role": role, "content": content or ""}
    if "tool_calls" in raw and raw["tool_calls"] is not None:
        if role != "assistant":
            raise RowError(f"{where}.tool_calls: only assistant messages make tool calls")
        out["tool_calls"] = _tool_calls(raw["tool_calls"], where)
    elif content is None:
        raise RowError(f"{where}.content must be a string (or a list of text parts)")
    if "weight" in raw:
        weight = raw["weight"]
        if role != "assistant":
            raise RowError(f"{where}.weight: only assistant messages carry a weight")
        if isinstance(weight, bool) or weight not in (0, 1):
            raise RowError(f"{where}.weight must be 0 or 1")
        out["weight"] = int(weight)
    for key in ("tool_call_id", "name"):
        if key in raw and raw[key] is not None:
            if not isinstance(raw[key], str):
                raise RowError(f"{where}.{key} must be a string")
            out[key] = raw[key]
    return out


def trains(message: dict[str, Any]) -> bool:
    """Whether a canonical message is an assistant turn that contributes to the loss."""
    return (message["role"] == "assistant" and message.get("weight", 1) != 0
            and bool(message["content"].strip() or message.get("tool_calls")))


def messages(row: dict[str, Any], key: str = "messages") -> list[dict[str, Any]]:
    """The canonical messages of a `messages` row, checked."""
    raw = row[key]
    if not isinstance(raw, list) or not raw:
        raise RowError(f'"{key}" must be a non-empty list')
    out = [message(m, f"{key}[{i}]") for i, m in enumerate(raw)]
    if not any(trains(m) for m in out):
        raise RowError(f"{key} needs at least one non-empty assistant message with weight 1 "
                       "(weight-0 turns are not trained)")
    return out


def sharegpt_messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    """ShareGPT `conversations` (plus an optional `system` text) as canonical messages."""
    turns = row["conversations"]
    if not isinstance(turns, list) or not turns:
        raise RowError('"conversations" must be a non-empty list')
    out = []
    if isinstance(row.get("system"), str) and row["system"].strip():
        out.append({"role": "system", "content": row["system"]})
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("from") not in SHAREGPT_ROLES:
            raise RowError(f"conversations[{i}].from must be one of {sorted(SHAREGPT_ROLES)}")
        if not isinstance(turn.get("value"), str):
            raise RowError(f"conversations[{i}].value must be a string")
        out.append({"role": SHAREGPT_ROLES[turn["from"]], "content": turn["value"]})
    if not any(trains(m) for m in out):
        raise RowError('conversations needs at least one non-empty "gpt" turn')
    return out


def tools(row: dict[str, Any], where: str = "tools") -> list[dict[str, Any]] | None:
    """The row's tool definitions (OpenAI's `{"type": "function", "function": {...}}`)."""
    value = row.get("tools")
    if value is None:
        return None
    if not isinstance(value, list):
        raise RowError(f'"{where}" must be a list of tools')
    for i, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RowError(f"{where}[{i}].function.name must be a string")
    return value or None
