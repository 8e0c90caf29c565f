"""Follow a job's event stream (server-sent events), reconnecting where it dropped."""

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
from httpx_sse import EventSource

from tunesmith.client.http import APIError, Client

RECONNECT_SECONDS = 1.0


def follow_events(client: Client, job_id: str, *, retries: int = 30) -> Iterator[dict[str, Any]]:
    """Every event of the job from the first, oldest first, until the stream says [DONE]
    (the job ended or paused). A dropped connection is re-opened with `Last-Event-ID`, so
    no event is repeated or missed; `retries` drops in a row give up."""
    last_id: str | None = None
    failures = 0
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            with client.stream(f"/v1/fine_tuning/jobs/{job_id}/events",
                               params={"stream": "true"}, headers=headers,
                               timeout=httpx.Timeout(60, read=None)) as response:
                for sse in EventSource(response).iter_sse():
                    failures = 0
                    if not sse.data:  # a keep-alive
                        continue
                    if sse.data == "[DONE]":
                        return
                    if sse.event == "error":
                        raise APIError(json.loads(sse.data)["error"]["message"], 401)
                    if sse.id:
                        last_id = sse.id
                    yield json.loads(sse.data)
        except (httpx.TransportError, APIError) as exc:
            transport = isinstance(exc, httpx.TransportError) or (
                isinstance(exc, APIError) and exc.status is None)
            if not transport or failures >= retries:
                raise
        # The stream closed without [DONE] (a restart, a proxy's idle timeout): re-open.
        failures += 1
        time.sleep(RECONNECT_SECONDS)
