"""The one place where an export's status changes, and how its message is sent.

As for jobs (tunesmith/jobs/states.py), every change is a conditional UPDATE: a cancel and
the worker finishing race on one row and exactly one of them wins.
"""

import time
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tunesmith.db.base import now
from tunesmith.db.models import Export
from tunesmith.queue import celery_app
from tunesmith.settings import settings

RUN_EXPORT_TASK = "tunesmith.run_export"


class ExportStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL = frozenset({ExportStatus.succeeded, ExportStatus.failed, ExportStatus.cancelled})
ALLOWED_FROM: dict[ExportStatus, frozenset[ExportStatus]] = {
    ExportStatus.running: frozenset({ExportStatus.queued}),
    ExportStatus.succeeded: frozenset({ExportStatus.running}),
    ExportStatus.failed: frozenset({ExportStatus.queued, ExportStatus.running}),
    ExportStatus.cancelled: frozenset({ExportStatus.queued, ExportStatus.running}),
}


def change_export_status(session: Session, export_id: str, to: ExportStatus, *,
                         owner: str | None = None, **fields: Any) -> bool:
    """Move the export to `to` if its status allows it (and, with `owner`, that worker still
    holds it). Returns whether this call made the change; the caller commits."""
    values: dict[str, Any] = {"status": to.value, **fields}
    if to in TERMINAL:
        values.setdefault("finished_at", now())
    query = sa.update(Export).where(
        Export.id == export_id, Export.status.in_([s.value for s in ALLOWED_FROM[to]]))
    if owner is not None:
        query = query.where(Export.worker_id == owner)
    return session.execute(query.values(**values)).rowcount == 1


def claim_export(session: Session, export_id: str, *, worker_id: str) -> bool:
    """Take a queued export for this worker: the guard that stops an export running twice."""
    return change_export_status(session, export_id, ExportStatus.running,
                                worker_id=worker_id, started_at=now())


def dispatch_export(export_id: str) -> float:
    """Send the export's message (its id only), after its row is committed."""
    celery_app().send_task(RUN_EXPORT_TASK, args=[export_id], queue=settings.queue)
    return time.time()
