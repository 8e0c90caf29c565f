"""OpenAPI `responses` entries for answers that are not JSON: downloads and event streams."""

from typing import Any

Responses = dict[int | str, dict[str, Any]]

BINARY = {"type": "string", "format": "binary"}


def binary(description: str, *media_types: str) -> Responses:
    """A 200 whose body is bytes of one of `media_types` (a file, an archive)."""
    return {200: {"description": description,
                  "content": {media_type: {"schema": BINARY} for media_type in media_types}}}


def event_stream(description: str, data: str) -> Responses:
    """A 200 that is, with `stream=true`, server-sent events; FastAPI adds the JSON answer
    of the route's response model beside it."""
    return {200: {"description": description, "content": {"text/event-stream": {"schema": {
        "type": "object", "required": ["data"], "description": "One server-sent event.",
        "properties": {"id": {"type": "string"}, "event": {"type": "string"},
                       "data": {"type": "string", "description": data}}}}}}}
