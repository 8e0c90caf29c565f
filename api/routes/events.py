"""A job's events: a page of them, newest first, or a live stream (server-sent events)."""

import json
import time
from collections.abc import Iterator
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.deps import CurrentProject, SessionDep
from api.errors import InvalidRequest, error_responses
from api.routes.jobs import get_job
from api.serializers import event_object, list_object
from tunesmith.db.models import Job, JobEvent
from tunesmith.db.session import new_session
from tunesmith.jobs.events import event_seq
from tunesmith.jobs.states import TERMINAL, JobStatus

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["jobs"])

STREAM_POLL_SECONDS = 0.5
STREAM_KEEPALIVE_SECONDS = 15.0


def _stream_events(job_id: str, after_seq: int) -> Iterator[str]:
    """Server-sent events, oldest first, until the job has ended and every event is sent."""
    last_sent = time.monotonic()
    while True:
        with new_session() as session:
            events = session.scalars(
                sa.select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > after_seq)
                .order_by(JobEvent.seq).limit(500)).all()
            status = session.scalar(sa.select(Job.status).where(Job.id == job_id))
        for event in events:
            after_seq = event.seq
            yield f"id: {event_object(event)['id']}\ndata: {json.dumps(event_object(event))}\n\n"
            last_sent = time.monotonic()
        if not events and (status is None or JobStatus(status) in TERMINAL):
            yield "data: [DONE]\n\n"
            return
        if not events:
            if time.monotonic() - last_sent > STREAM_KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            time.sleep(STREAM_POLL_SECONDS)


@router.get("/{job_id}/events", response_model=None, responses={
    200: {"description": "A page of events, or with `stream=true` server-sent events",
          "content": {"text/event-stream": {"schema": {  # one server-sent event
              "type": "object", "required": ["data"],
              "properties": {"id": {"type": "string"}, "event": {"type": "string"},
                             "data": {"type": "string", "description": "an event as JSON, "
                                      "or [DONE] after the last one"}}}}}},
    **error_responses(400, 404)})
def read_events(
    session: SessionDep, project: CurrentProject, job_id: str,
    after: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    stream: bool = False,
) -> dict[str, Any] | StreamingResponse:
    """Events, newest first; `?stream=true` streams them live (SSE) until the job ends."""
    get_job(session, project, job_id)
    after_seq = None
    if after is not None:
        after_seq = event_seq(after)
        if after_seq is None:
            raise InvalidRequest(f"after: '{after}' is not an event id.", param="after")
    if stream:
        return StreamingResponse(_stream_events(job_id, after_seq or 0),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    query = sa.select(JobEvent).where(JobEvent.job_id == job_id)
    if after_seq is not None:
        query = query.where(JobEvent.seq < after_seq)
    rows = session.scalars(query.order_by(JobEvent.seq.desc()).limit(limit + 1)).all()
    return list_object([event_object(e) for e in rows[:limit]], has_more=len(rows) > limit)
