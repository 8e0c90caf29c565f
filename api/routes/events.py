"""A job's events: a page of them, newest first, or a live stream (server-sent events).

A stream is an async generator on the event loop: while it waits it holds no database
connection and no thread; api/job_watch.py wakes it with the job's new events (a stream far
behind reads its backlog in a short session of its own). It ends with `data: [DONE]` once
the job has ended or paused and every event is sent, with an `error` event when its key is
revoked, and at once when the server shuts down (sse-starlette watches uvicorn's exit flag).
"""

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import sqlalchemy as sa
from anyio import to_thread
from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from api.deps import CurrentProject, SessionDep
from api.errors import InvalidRequest, RateLimited, error_responses
from api.job_watch import READ_LIMIT, JobWatcher, Watch, read_backlog
from api.routes.jobs import get_job
from api.schemas.events import EventList
from api.schemas.media import event_stream
from api.serializers import event_object, list_object
from tunesmith.db.models import JobEvent
from tunesmith.jobs.events import event_seq
from tunesmith.jobs.states import TERMINAL, JobStatus
from tunesmith.keys import hash_key
from tunesmith.settings import settings

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["jobs"])

KEEPALIVE_SECONDS = 15
# A stream ends here too: the client re-opens it after `resume`.
_STREAM_ENDS = TERMINAL | {JobStatus.paused}
_watcher = JobWatcher(settings.event_poll_seconds)
# Streams behind the watcher's kept events read their backlog a few at a time, so fifty
# reconnecting at once cannot take the thread pool and connections the other routes need.
_backlog_reads = anyio.CapacityLimiter(4)

_REVOKED = {"error": {"type": "authentication_error", "code": "invalid_api_key", "param": None,
                      "message": "The API key of this stream was revoked; the stream ended."}}


def _cursor(param: str, value: str | None) -> int | None:
    if value is None:
        return None
    seq = event_seq(value)
    if seq is None:
        raise InvalidRequest(f"{param}: {value!r} is not an event id (ftevent-<number>, as in "
                             "an event's `id`).", param=param)
    return seq


def _read_page(session: Session, job_id: str, before_seq: int | None,
               limit: int) -> dict[str, Any]:
    query = sa.select(JobEvent).where(JobEvent.job_id == job_id)
    if before_seq is not None:
        query = query.where(JobEvent.seq < before_seq)
    rows = session.scalars(query.order_by(JobEvent.seq.desc()).limit(limit + 1)).all()
    return list_object([event_object(e) for e in rows[:limit]], has_more=len(rows) > limit)


async def _stream(watch: Watch, after_seq: int) -> AsyncIterator[ServerSentEvent]:
    while True:
        await watch.changed.wait()
        watch.changed.clear()
        view = _watcher.views.get(watch.job_id)
        kept = view.after(after_seq) if view is not None else None
        if view is not None and kept is not None:
            status, live, events, more = view.status, watch.key_live, kept, False
        else:  # the first poll has not run yet, or the stream is behind the kept events
            status, live, events = await to_thread.run_sync(
                read_backlog, watch.job_id, watch.key_hash, after_seq, limiter=_backlog_reads)
            more = len(events) == READ_LIMIT
        if not live:
            yield ServerSentEvent(event="error", data=json.dumps(_REVOKED))
            return
        for event in events:
            after_seq = event.seq
            yield ServerSentEvent(id=event.id, data=event.json)
        if more:
            watch.changed.set()
        elif status is None or JobStatus(status) in _STREAM_ENDS:
            yield ServerSentEvent(data="[DONE]")
            return


class _EventStream(EventSourceResponse):
    """The SSE response; gives its slot of the key's stream cap back however it ends."""

    def __init__(self, watch: Watch, after_seq: int) -> None:
        super().__init__(_stream(watch, after_seq), ping=KEEPALIVE_SECONDS,
                         headers={"X-Accel-Buffering": "no"})
        self.watch = watch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            _watcher.release(self.watch)


@router.get("/{job_id}/events", response_model=EventList, responses={
    **event_stream("A page of events, or with `stream=true` server-sent events",
                   data="An event as JSON, or [DONE] after the last one"),
    **error_responses(400, 404, 429)})
async def read_events(
    request: Request, session: SessionDep, project: CurrentProject, job_id: str,
    after: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    stream: bool = False,
    last_event_id: Annotated[str | None, Header(
        description="With `stream=true`: resume after this event (what EventSource sends "
        "when it reconnects); wins over `after`.")] = None,
) -> dict[str, Any] | EventSourceResponse:
    """Events, newest first (`after`: older than that event); `?stream=true` streams them
    live, oldest first (`after` or `Last-Event-ID`: newer than that event), until the job
    ends or pauses."""
    after_seq = _cursor("after", after)
    await run_in_threadpool(get_job, session, project, job_id)
    if not stream:
        return await run_in_threadpool(_read_page, session, job_id, after_seq, limit)
    if last_event_id is not None:
        after_seq = _cursor("Last-Event-ID", last_event_id)
    await run_in_threadpool(session.close)  # a stream must not hold the request's connection
    # get_project has accepted this header, so it is "Bearer <secret>".
    key_hash = hash_key(request.headers["authorization"].partition(" ")[2].strip())
    watch = _watcher.reserve(job_id, key_hash, cap=settings.max_event_streams_per_key)
    if watch is None:
        raise RateLimited(
            f"This API key already has {settings.max_event_streams_per_key} event streams "
            "open (TUNESMITH_MAX_EVENT_STREAMS_PER_KEY); close one, or read the events page "
            "instead.", param="stream", headers={"Retry-After": "5"})
    return _EventStream(watch, after_seq or 0)
