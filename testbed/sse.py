"""Reading a job's event stream as a client does: server-sent events, parsed strictly."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Message:
    id: str | None
    event: str | None
    data: str

    @property
    def json(self) -> Any:
        return strict_loads(self.data)


def _refuse(token: str) -> Any:
    raise ValueError(f"not strict JSON: {token}")


def strict_loads(text: str) -> Any:
    """json.loads that refuses NaN, Infinity and -Infinity, as JavaScript's JSON.parse does."""
    return json.loads(text, parse_constant=_refuse)


def messages(response: httpx.Response) -> Iterator[Message]:
    """The messages of an open `text/event-stream` response, as the SSE spec splits them."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in response.iter_lines():
        if not line:
            if data or fields:
                yield Message(fields.get("id"), fields.get("event"), "\n".join(data))
            fields, data = {}, []
        elif not line.startswith(":"):  # a comment: keep-alive
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value


def open_stream(http: httpx.Client, job_id: str, headers: dict[str, str] | None = None,
                **params: str) -> Any:
    """`with open_stream(...) as response:` a stream of the job's events."""
    return http.stream("GET", f"/v1/fine_tuning/jobs/{job_id}/events",
                       params={"stream": "true", **params}, headers=headers or {},
                       timeout=httpx.Timeout(60, read=60))
