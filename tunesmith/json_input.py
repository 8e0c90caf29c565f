"""The one reader of JSON a user sends: job bodies, and JSONL rows at upload and in the worker.

`json.loads` alone lets through what later breaks the service: `NaN`/`Infinity` (stored as
non-standard tokens, then unreadable by strict clients), integers past Python's int-str
digit limit (a `ValueError` that used to surface as a 500), nesting deep enough to raise
`RecursionError`, and lone surrogate escapes (`"\\ud800"`) that decode to a `str` no
UTF-8 encoder (the database, the response) can write. Everything here is refused as bad
input, with the line and the field where they are known. No torch: the API imports it.

The upload check and the worker read a file through `iter_lines`/`parse_row` alike, so a
file the upload accepted is read the same way for training (lines end at `\\n` only: a
`\\r` or a Unicode line separator inside a line is JSON whitespace or string content,
never a line break, as `str.splitlines` or text-mode files would make it).
"""

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import IO, Any

# Far above what any spec or data row needs (a spec nests 6 deep, a tool's JSON schema
# rarely 15), far below where the C scanner recurses into a RecursionError (~1000).
MAX_DEPTH = 64
# A row or body has no use for integers longer than this; Python refuses past 4300 digits.
MAX_INT_DIGITS = 100
# Job bodies are small (a spec is under 2 KB); 1 MiB leaves room for large metadata.
MAX_BODY_BYTES = 1024 * 1024

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_BRACKETS = re.compile(r"[^\[\]{}]+")


class JSONInputError(ValueError):
    """Input that is not JSON the service can hold; names the line and field when known."""

    def __init__(self, message: str, *, line: int | None = None,
                 field: str | None = None) -> None:
        self.message, self.line, self.field = message, line, field
        super().__init__(self.describe())

    def describe(self) -> str:
        where = (f"line {self.line}: " if self.line else "") + (f"{self.field}: "
                                                              if self.field else "")
        return where + self.message

    def at_line(self, line: int) -> "JSONInputError":
        return JSONInputError(self.message, line=line, field=self.field)


class _Refused:
    """What a number hook returns in place of a value it refuses, so that the walk after
    parsing can say in which field it stood (the hooks themselves cannot know)."""

    def __init__(self, message: str) -> None:
        self.message = message


class _Hooks:
    """json.loads hooks that refuse NaN/Infinity, oversized integers and floats that
    overflow to Infinity; `refused` says whether any did."""

    def __init__(self) -> None:
        self.refused = False

    def _refuse(self, message: str) -> _Refused:
        self.refused = True
        return _Refused(message)

    def constant(self, name: str) -> Any:
        return self._refuse(f"{name} is not a number JSON allows; send a finite number or null")

    def integer(self, text: str) -> Any:
        digits = len(text.lstrip("-"))
        if digits > MAX_INT_DIGITS:
            return self._refuse(f"an integer of {digits} digits is longer than the limit of "
                                f"{MAX_INT_DIGITS}")
        return int(text)

    def real(self, text: str) -> Any:
        value = float(text)
        if not math.isfinite(value):
            return self._refuse(f"the number {text[:40]} is too large for a float (it would "
                                "be Infinity); send a finite number")
        return value


def _nesting_depth(text: str) -> int:
    brackets = _BRACKETS.sub("", _STRING.sub("", text))
    return max(accumulate(1 if c in "[{" else -1 for c in brackets), default=0)


def _path(parts: tuple[str | int, ...]) -> str | None:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or None


def _check_values(value: Any) -> None:
    """Refuse a number a hook refused, or a lone surrogate in any string or key, naming
    the field where it stands."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, where = stack.pop()
        if isinstance(item, _Refused):
            raise JSONInputError(item.message, field=_path(where))
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise JSONInputError("a lone surrogate escape (such as \\ud800) is not valid "
                                     "Unicode; send UTF-8 text", field=_path(where)) from None
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                stack.append((child, (*where, key)))
                stack.append((key, where))
        elif isinstance(item, list):
            stack.extend((child, (*where, i)) for i, child in reversed(list(enumerate(item))))


def parse_json(text: str) -> Any:
    """Parse one JSON document within the limits above, or raise JSONInputError."""
    if text.count("[") + text.count("{") > MAX_DEPTH and _nesting_depth(text) > MAX_DEPTH:
        raise JSONInputError(f"nested deeper than the limit of {MAX_DEPTH} levels")
    hooks = _Hooks()
    try:
        value = json.loads(text, parse_constant=hooks.constant, parse_int=hooks.integer,
                           parse_float=hooks.real)
    except json.JSONDecodeError as exc:
        raise JSONInputError(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:  # only if the depth scan above were fooled
        raise JSONInputError(f"nested deeper than the limit of {MAX_DEPTH} levels") from None
    except ValueError as exc:  # e.g. Python's own int-str limit, should ours be raised
        raise JSONInputError(f"invalid number: {exc}") from None
    if hooks.refused or _SURROGATE_ESCAPE.search(text):
        _check_values(value)
    return value


def parse_body(raw: bytes, *, max_bytes: int = MAX_BODY_BYTES) -> Any:
    """A request body: UTF-8 JSON of at most `max_bytes`."""
    if len(raw) > max_bytes:
        raise JSONInputError(f"the body is {len(raw)} bytes, over the limit of {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONInputError(f"not UTF-8: bad byte at offset {exc.start}") from None
    return parse_json(text)


@dataclass(frozen=True)
class Line:
    number: int  # 1-based
    raw: bytes  # without its line break; cut short when too_long
    too_long: bool


def iter_lines(handle: IO[bytes], *, max_line_bytes: int) -> Iterator[Line]:
    """The lines of a binary file, split at `\n` only (a `\r\n` end loses its `\r`).
    Holds at most one line of `max_line_bytes` in memory: the rest of a longer one is
    skipped, and the line is reported as too long."""
    number = 0
    while line := handle.readline(max_line_bytes + 2):  # room for a `\r\n` end
        number += 1
        length, tail = len(line), line[-2:]
        if not line.endswith(b"\n"):  # cut at the limit (or the file's last line)
            while (rest := handle.readline(1 << 20)):
                length, tail = length + len(rest), (tail + rest)[-2:]
                if rest.endswith(b"\n"):
                    break
        ending = 2 if tail == b"\r\n" else 1 if tail.endswith(b"\n") else 0
        raw = line[:len(line) - ending] if length == len(line) else line
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark
            raw = raw[3:]
        yield Line(number, raw, length - ending > max_line_bytes)


def parse_row(line: Line, *, max_line_bytes: int) -> Any | None:
    """One JSONL row, or None for a blank line; JSONInputError names the line."""
    if line.too_long:
        raise JSONInputError(f"line is longer than the limit of {max_line_bytes} bytes",
                             line=line.number)
    try:
        text = line.raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONInputError(f"not UTF-8 ({exc.reason} at byte {exc.start})",
                             line=line.number) from None
    if not text.strip():
        return None
    try:
        return parse_json(text)
    except JSONInputError as exc:
        raise exc.at_line(line.number) from None


def read_rows(path: Path, *, max_line_bytes: int) -> Iterator[tuple[int, Any]]:
    """(line number, row) for every non-blank line of a JSONL file."""
    with path.open("rb") as handle:
        for line in iter_lines(handle, max_line_bytes=max_line_bytes):
            row = parse_row(line, max_line_bytes=max_line_bytes)
            if row is not None:
                yield line.number, row
