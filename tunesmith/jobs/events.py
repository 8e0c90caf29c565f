"""Job events: the log a user reads with `GET .../events`, written in the caller's transaction."""

from typing import Any

from sqlalchemy.orm import Session

from tunesmith.db.models import JobEvent


def add_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> JobEvent:
    event = JobEvent(job_id=job_id, message=message, level=level, type=type, data=data)
    session.add(event)
    return event


def event_public_id(seq: int) -> str:
    return f"ftevent-{seq}"


def event_seq(public_id: str) -> int | None:
    """The sequence number of an event id, or None for an id that is not one of ours."""
    prefix, _, number = public_id.partition("-")
    return int(number) if prefix == "ftevent" and number.isdigit() else None
