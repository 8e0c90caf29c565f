"""An export's states and what is done with it: create, send, claim, renew, cancel, finish,
and the reaper's recovery of one whose worker was lost.

As for jobs, every change goes through the one conditional UPDATE
(tunesmith/jobs/lifecycle.py): a cancel and the worker finishing race on one row and exactly
one of them wins. An export keeps no events: its status and error are its story.
"""

import logging
import time
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tunesmith.db.base import now
from tunesmith.db.models import Export
from tunesmith.ids import new_id
from tunesmith.jobs.lifecycle import Lifecycle, Refused
from tunesmith.queue import RUN_EXPORT_TASK, celery_app
from tunesmith.settings import settings

log = logging.getLogger(__name__)


class ExportStatus(StrEnum):
    """A job's states less those of validation, pause and the stops in between."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


EXPORT_LIFECYCLE: Lifecycle[ExportStatus] = Lifecycle(
    Export,
    allowed_from={
        ExportStatus.queued: frozenset({ExportStatus.running}),  # its worker was lost
        ExportStatus.running: frozenset({ExportStatus.queued}),
        ExportStatus.succeeded: frozenset({ExportStatus.running}),
        ExportStatus.failed: frozenset({ExportStatus.queued, ExportStatus.running}),
        ExportStatus.cancelled: frozenset({ExportStatus.queued, ExportStatus.running}),
    },
    terminal=frozenset({ExportStatus.succeeded, ExportStatus.failed,
                        ExportStatus.cancelled}),
)


def _change(session: Session, export_id: str, to: ExportStatus, *,
            owner: str | None = None, **fields: Any) -> bool:
    if to != ExportStatus.running:  # only a running export has a worker renewing its lease
        fields.setdefault("lease_expires_at", None)
    return EXPORT_LIFECYCLE.change(session, export_id, to, owner=owner, **fields)


def create_export(session: Session, *, project_id: str, job_id: str, fmt: str,
                  quantization: str | None, checkpoint_step: int | None) -> Export:
    """The queued export's row, in the caller's transaction (commit, then `dispatch_export`)."""
    export = Export(id=new_id("ftexp"), project_id=project_id, job_id=job_id, format=fmt,
                    quantization=quantization, checkpoint_step=checkpoint_step,
                    status=ExportStatus.queued.value, artifacts=[])
    session.add(export)
    return export


def dispatch_export(session: Session, export: Export) -> None:
    """Send the committed export's message (its id only); if the broker cannot be reached the
    export fails at once, saying so (nothing would ever run it). Commits."""
    try:
        export.dispatched_at = send_export(export.id)
        session.commit()
    except Exception as exc:
        log.exception("could not send export %s to the broker", export.id)
        _change(session, export.id, ExportStatus.failed, error={
            "code": "broker_unavailable", "message": f"The queue could not be reached: {exc}",
            "param": None})
        session.commit()
    session.refresh(export)


def send_export(export_id: str) -> float:
    celery_app().send_task(RUN_EXPORT_TASK, args=[export_id], queue=settings.queue)
    return time.time()


def claim_export(session: Session, export_id: str, *, worker_id: str) -> bool:
    """Take a queued export for this worker: the guard that stops an export running twice."""
    return _change(session, export_id, ExportStatus.running,
                   worker_id=worker_id, attempt=Export.attempt + 1,
                   lease_expires_at=time.time() + settings.lease_seconds,
                   started_at=sa.func.coalesce(Export.started_at, now()))


def renew_export_lease(session: Session, export_id: str, *, worker_id: str) -> bool:
    """Extend the lease while the export is still this worker's."""
    result = session.execute(
        sa.update(Export).where(Export.id == export_id, Export.worker_id == worker_id,
                                Export.status == ExportStatus.running.value)
        .values(lease_expires_at=time.time() + settings.lease_seconds))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def cancel_export(session: Session, export: Export) -> None:
    """Cancel a queued or running export (a running one's worker finds it cancelled when it
    finishes, and discards its files). Commits."""
    if not _change(session, export.id, ExportStatus.cancelled):
        session.rollback()
        raise Refused(f"Export '{export.id}' is {export.status}; only a queued or running "
                      "export can be cancelled.", code="export_finished")
    session.commit()
    session.refresh(export)


def finish_export(session: Session, export_id: str, to: ExportStatus, *, worker_id: str,
                  **fields: Any) -> str:
    """The worker's outcome (`succeeded` with its artifacts, or `failed` with its error), if
    the export is still its own. Returns the status the export is in now."""
    if _change(session, export_id, to, owner=worker_id, **fields):
        return to.value
    return session.scalar(sa.select(Export.status).where(Export.id == export_id)) or "gone"


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
                _change(session, export.id, ExportStatus.failed, error={
                    "code": "worker_lost", "param": None,
                    "message": f"The worker writing this export died {export.attempt} times. "
                               "Check the worker logs (out of host memory or disk?)."})
            elif _change(session, export.id, ExportStatus.queued, worker_id=None,
                         dispatched_at=now_s):
                again.append(export.id)
    for export_id in again:  # after the commit, as on creation
        send_export(export_id)
    return again
