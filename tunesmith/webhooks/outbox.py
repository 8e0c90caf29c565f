"""Writing job events into the outbox, in the transaction that changes the job's status.

A row written with the status change commits or rolls back with it: no event is sent for a
change that did not happen, and none is lost when the API or a worker dies right after it.
"""

import json
import secrets

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tunesmith.db.base import now
from tunesmith.db.models import WebhookDelivery, WebhookEndpoint
from tunesmith.ids import new_id

# OpenAI's webhook event names for the end of a fine-tuning job, by the job's status.
EVENT_FOR_STATUS = {
    "succeeded": "fine_tuning.job.succeeded",
    "failed": "fine_tuning.job.failed",
    "cancelled": "fine_tuning.job.cancelled",
}
EVENT_TYPES = tuple(EVENT_FOR_STATUS.values())


def new_event_id() -> str:
    # OpenAI's webhook events are `evt_` followed by hex.
    return f"evt_{secrets.token_hex(16)}"


def event_payload(event_id: str, event_type: str, job_id: str, created_at: int) -> str:
    """The body OpenAI sends: the event names the job; the receiver reads the job itself."""
    return json.dumps({"id": event_id, "object": "event", "type": event_type,
                       "created_at": created_at, "data": {"id": job_id}},
                      separators=(",", ":"))


def add_job_event(session: Session, project_id: str, job_id: str, status: str) -> int:
    """One outbox row per endpoint of the project that listens to this status's event.
    Returns how many were written. The caller commits."""
    event_type = EVENT_FOR_STATUS.get(status)
    if event_type is None:
        return 0
    endpoints = session.scalars(sa.select(WebhookEndpoint).where(
        WebhookEndpoint.project_id == project_id)).all()
    listening = [endpoint for endpoint in endpoints if event_type in endpoint.events]
    if not listening:
        return 0
    event_id, created_at = new_event_id(), now()
    payload = event_payload(event_id, event_type, job_id, created_at)
    for endpoint in listening:
        session.add(WebhookDelivery(
            id=new_id("whdel"), endpoint_id=endpoint.id, event_id=event_id,
            event_type=event_type, payload=payload, status="pending", attempts=0,
            next_attempt_at=float(created_at), created_at=created_at))
    session.flush()
    return len(listening)
