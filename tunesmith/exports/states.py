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
    ExportStatus.queued: frozenset({ExportStatus.running}),  # its worker was lost
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
    if to != ExportStatus.running:
        values.setdefault("lease_expires_at", None)
    query = sa.update(Export).where(
        Export.id == export_id, Export.status.in_([s.value for s in ALLOWED_FROM[to]]))
    if owner is not None:
        query = query.where(Export.worker_id == owner)
    return session.execute(query.values(**values)).rowcount == 1


def claim_export(session: Session, export_id: str, *, worker_id: str) -> bool:
    """Take a queued export for this worker: the guard that stops an export running twice."""
    return change_export_status(session, export_id, ExportStatus.running,
                                worker_id=worker_id, attempt=Export.attempt + 1,
                                lease_expires_at=time.time() + settings.lease_seconds,
                                started_at=sa.func.coalesce(Export.started_at, now()))


def renew_export_lease(session: Session, export_id: str, *, worker_id: str) -> bool:
    """Extend the lease while the export is still this worker's."""
    return session.execute(
        sa.update(Export).where(Export.id == export_id, Export.worker_id == worker_id,
                                Export.status == ExportStatus.running.value)
        .values(lease_expires_at=time.time() + settings.lease_seconds)).rowcount == 1


def reap_lost_exports(now_s: float | None = None) -> list[str]:
    """Running exports whose worker stopped renewing: queued and sent again, or failed with
    `worker_lost` past `max_attempts`. Returns the ids sent again."""
    from tunesmith.db.session import session_scope

    now_s = time.time() if now_s is None else now_s
    again: list[str] = []
    with session_scope() as session:
        lost = session.scalars(sa.select(Export).where(
            Export.status == ExportStatus.running.value,
            Export.lease_expires_at < now_s)).all()
        for export in lost:
            if export.attempt >= settings.max_attempts:
                change_export_status(session, export.id, ExportStatus.failed, error={
                    "code": "worker_lost", "param": None,
                    "message": f"The worker writing this export died {export.attempt} times. "
                               "Check the worker logs (out of host memory or disk?)."})
            elif change_export_status(session, export.id, ExportStatus.queued,
                                      worker_id=None):
                again.append(export.id)
    for export_id in again:  # after the commit, as on creation
        dispatch_export(export_id)
    return again


def dispatch_export(export_id: str) -> float:
    """Send the export's message (its id only), after its row is committed."""
    celery_app().send_task(RUN_EXPORT_TASK, args=[export_id], queue=settings.queue)
    return time.time()
