"""A request body as a JSON object, read by the one reader of user input
(tunesmith/json_input.py: no NaN/Infinity, no oversized integers, no deep nesting, no lone
surrogates), or a 400 that names the field at fault."""

from typing import Any

from api.errors import InvalidRequest
from tunesmith.json_input import MAX_BODY_BYTES, JSONInputError, parse_body


def json_object(raw: bytes, *, needs: str, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """`needs` completes "Body must be a JSON object with at least ...". The message starts
    with the field at fault, as every 400 of this API does."""
    try:
        body = parse_body(raw or b"null", max_bytes=max_bytes)
    except JSONInputError as exc:
        raise InvalidRequest(f"{exc.field + ': ' if exc.field else ''}Body is not usable JSON: "
                             f"{exc.message}.", param=exc.field) from exc
    if not isinstance(body, dict):
        raise InvalidRequest(f"Body must be a JSON object with at least {needs}.")
    return body
