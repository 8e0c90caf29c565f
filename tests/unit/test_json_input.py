"""Property tests of the one JSON reader (tunesmith/json_input.py) and of the job spec read
through it: over generated JSON with huge integers, deep nesting, NaN/Infinity, lone
surrogates and long strings, the readers either return a value that can be written back
as strict UTF-8 JSON, or refuse it as bad input. Nothing else may come out: the API would
answer 500, the worker would fail the job as `internal`.

No servers: the readers and the spec are plain Python (no torch).
"""

import io
import json
import tempfile
from pathlib import Path
from typing import Any

from fastapi.exceptions import RequestValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.errors import APIError
from api.routes.jobs import _parse_spec
from tunesmith.json_input import (
    MAX_DEPTH,
    JSONInputError,
    iter_lines,
    parse_body,
    parse_json,
    read_rows,
)
from tunesmith.spec.data_formats import check_jsonl
from tunesmith.spec.job import JobSpec

LINE_LIMIT = 1 << 20
# Every code point, lone surrogates (category Cs) included.
ANY_CHAR = st.characters(exclude_categories=())
TEXT = st.text(ANY_CHAR, max_size=40) | st.builds(lambda n: "a" * n, st.integers(0, 300_000))
# Up to what json.dumps can write; longer digit strings are spliced in as text below.
HUGE_INT = st.integers(1, 4000).map(lambda n: 10**n - 1) | st.integers()
FLOAT = st.floats(allow_nan=True, allow_infinity=True)
SCALAR = st.none() | st.booleans() | HUGE_INT | FLOAT | TEXT
VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(ANY_CHAR, max_size=8), inner, max_size=4),
                     max_leaves=20)


def _render(value: Any, ascii_only: bool) -> str:
    # allow_nan: write NaN/Infinity tokens, as a client that does not check would.
    return json.dumps(value, allow_nan=True, ensure_ascii=ascii_only)


@st.composite
def json_documents(draw: st.DrawFn) -> bytes:
    """A JSON text as a client might send it: sometimes deeply nested, sometimes not UTF-8
    (a lone surrogate written raw), sometimes with a digit string longer than Python reads."""
    text = _render(draw(VALUE), draw(st.booleans()))
    depth = draw(st.sampled_from([0, 0, 0, MAX_DEPTH - 1, MAX_DEPTH + 1, 5000, 200_000]))
    text = "[" * depth + text + "]" * depth
    if draw(st.booleans()):
        text = f'{{"n": {"1" * draw(st.integers(1, 10_000))}, "v": {text}}}'
    return text.encode("utf-8", errors="surrogatepass")


def _assert_storable(value: Any) -> None:
    """What an accepted value must allow: strict JSON out, UTF-8 out, the same value back."""
    dumped = json.dumps(value, allow_nan=False, ensure_ascii=False)
    dumped.encode("utf-8")
    assert parse_json(dumped) == value


FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FAST
@given(json_documents())
def test_body_parser_accepts_only_storable_json(raw: bytes) -> None:
    try:
        value = parse_body(raw, max_bytes=4 << 20)
    except JSONInputError as exc:
        assert exc.message
        return
    _assert_storable(value)


@FAST
@given(st.lists(json_documents() | st.binary(max_size=50), min_size=1, max_size=6),
       st.lists(st.sampled_from([b"\n", b"\r\n", b"\r", b"\n\n", b"\x85", "\u2028".encode()]),
                min_size=6, max_size=6))
def test_upload_check_and_worker_read_a_file_alike(lines: list[bytes], ends: list[bytes]) -> None:
    # Whatever the bytes, the upload check only reports problems by line, and a file it
    # accepts is read by the worker's reader to the same number of storable rows.
    content = b"".join(line + end for line, end in zip(lines, ends, strict=False))
    check = check_jsonl(iter_lines(io.BytesIO(content), max_line_bytes=LINE_LIMIT),
                        max_line_bytes=LINE_LIMIT)
    for problem in check.problems:
        assert problem.message and problem.line >= 0
    if not check.ok:
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rows.jsonl"
        path.write_bytes(content)
        rows = [row for _, row in read_rows(path, max_line_bytes=LINE_LIMIT)]
    assert len(rows) == check.rows
    for row in rows:
        _assert_storable(row)


BASE_SPEC = {"model": "tiny-llama", "training_file": "file-abc",
             "method": {"type": "supervised"}, "tuning": {"type": "lora"}}
SPEC_PATHS = [("metadata",), ("suffix",), ("seed",), ("tuning", "alpha"), ("tuning", "r"),
              ("tuning", "target_modules"), ("method", "supervised", "hyperparameters",
                                             "learning_rate"),
              ("method", "supervised", "hyperparameters", "n_epochs"), ("hyperparameters",),
              ("resources",), ("integrations",), ("validation_file",), ("model",)]


@st.composite
def job_bodies(draw: st.DrawFn) -> bytes:
    spec: dict[str, Any] = json.loads(json.dumps(BASE_SPEC))
    if draw(st.booleans()):
        spec["tuning"] = {"type": "lora"}
        spec["method"] = {"type": draw(st.sampled_from(["supervised", "dpo", "reward"]))}
    for path in draw(st.lists(st.sampled_from(SPEC_PATHS), max_size=4)):
        target = spec
        for key in path[:-1]:
            target = target.setdefault(key, {}) if isinstance(target.get(key, {}), dict) \
                else target
        target[path[-1]] = draw(VALUE)
    text = _render(spec, draw(st.booleans()))
    return text.encode("utf-8", errors="surrogatepass")


@FAST
@given(job_bodies())
def test_job_spec_read_through_the_parser_is_refused_or_storable(raw: bytes) -> None:
    try:
        spec, _dry_run = _parse_spec(raw)
    except (APIError, RequestValidationError):
        return
    assert isinstance(spec, JobSpec)
    _assert_storable(spec.model_dump(mode="json"))


def test_each_limit_names_what_is_wrong() -> None:
    cases = {
        b'{"a": NaN}': "NaN",
        b'{"a": [1, -Infinity]}': "Infinity",
        b'{"a": 1e400}': "Infinity",
        b'{"meta": {"k": "\\ud800"}}': "meta.k",
        b'{"a": ' + b"7" * 5000 + b"}": "digits",
        b"[" * 100 + b"]" * 100: "nested",
        b'{"a": "' + b"x" * 20_000 + b'"}': "over the limit",
    }
    for raw, says in cases.items():
        try:
            parse_body(raw, max_bytes=10_000)
        except JSONInputError as exc:
            assert says in str(exc), (raw[:30], str(exc))
        else:
            raise AssertionError(f"accepted {raw[:30]!r}")


def test_line_breaks_are_newlines_only() -> None:
    # A `\r` between tokens and a U+2028 inside a string are not line breaks: the upload
    # check and the worker see one row, where str.splitlines would have seen two.
    content = b'{"text":\r"a\xe2\x80\xa8b"}\r\n{"text": "c"}\n'
    lines = list(iter_lines(io.BytesIO(content), max_line_bytes=LINE_LIMIT))
    assert [line.number for line in lines] == [1, 2]
    check = check_jsonl(iter(lines), max_line_bytes=LINE_LIMIT)
    assert check.ok and check.rows == 2
