"""The one place where a job's status changes.

Every change is a conditional UPDATE (`WHERE status IN (...)`) that writes its event in
the same transaction: two workers, a reaper and a cancel request can race on one job
and exactly one of them wins; the others see `False` and do nothing.
"""

import time
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tunesmith.db.base import now
from tunesmith.db.models import Job
from tunesmith.jobs.events import Level, add_event
from tunesmith.jobs.results_file import add_results_file
from tunesmith.webhooks.outbox import add_job_event


class JobStatus(StrEnum):
    validating_files = "validating_files"
    queued = "queued"
    running = "running"
    cancelling = "cancelling"
    # Pause: a running job saves a checkpoint and frees its worker (`pausing` until the
    # training process is gone); `resume` queues it again to continue from that checkpoint.
    pausing = "pausing"
    paused = "paused"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})

# Which states each state may be entered from.
ALLOWED_FROM: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.queued: frozenset({JobStatus.validating_files, JobStatus.running,
                                 JobStatus.paused}),
    JobStatus.running: frozenset({JobStatus.queued}),
    JobStatus.cancelling: frozenset({JobStatus.running, JobStatus.pausing}),
    JobStatus.pausing: frozenset({JobStatus.running}),
    JobStatus.paused: frozenset({JobStatus.validating_files, JobStatus.queued,
                                 JobStatus.pausing}),
    # From pausing: the last step finished as the pause arrived.
    JobStatus.succeeded: frozenset({JobStatus.running, JobStatus.cancelling,
                                    JobStatus.pausing}),
    JobStatus.failed: frozenset({JobStatus.validating_files, JobStatus.queued, JobStatus.running,
                                 JobStatus.cancelling, JobStatus.pausing}),
    JobStatus.cancelled: frozenset({JobStatus.validating_files, JobStatus.queued,
                                    JobStatus.running, JobStatus.cancelling,
                                    JobStatus.pausing, JobStatus.paused}),
}
# States in which a worker holds the job and renews its lease.
HELD = frozenset({JobStatus.running, JobStatus.cancelling, JobStatus.pausing})


def change_status(
    session: Session,
    job_id: str,
    to: JobStatus,
    message: str,
    *,
    expect: set[JobStatus] | None = None,
    owner: str | None = None,
    event_data: dict[str, Any] | None = None,
    level: Level = "info",
    **fields: Any,
) -> bool:
    """Move the job to `to` if it is in one of the `expect` states (default: any allowed one)
    and, with `owner`, still held by that worker.

    Returns whether this call made the change. `fields` are further columns to set in
    the same UPDATE (lease, error, ...). The caller commits.
    """
    allowed = ALLOWED_FROM[to] if expect is None else ALLOWED_FROM[to] & expect
    values: dict[str, Any] = {"status": to.value, **fields}
    if to in TERMINAL:
        values.setdefault("finished_at", now())
        values.setdefault("lease_expires_at", None)
    query = sa.update(Job).where(Job.id == job_id, Job.status.in_([s.value for s in allowed]))
    if owner is not None:
        # A worker whose lease ran out must not write over the attempt that replaced it.
        query = query.where(Job.worker_id == owner)
    result = session.execute(query.values(**values))
    if result.rowcount != 1:
        return False
    if to in TERMINAL:
        project_id = session.scalar(sa.select(Job.project_id).where(Job.id == job_id))
        results = add_results_file(session, job_id, project_id)
        if results:
            session.execute(sa.update(Job).where(Job.id == job_id)
                            .values(result_files=results))
        # The webhook outbox row commits with the change, or neither does.
        add_job_event(session, project_id, job_id, to.value)
    add_event(session, job_id, message, level=level,
              data={"status": to.value, **(event_data or {})})
    return True


def claim_job(session: Session, job_id: str, *, worker_id: str, lease_seconds: float) -> bool:
    """Take a queued job for this worker: the guard that stops a job running twice."""
    return change_status(
        session, job_id, JobStatus.running, f"Job started on {worker_id}",
        expect={JobStatus.queued},
        event_data={"worker": worker_id},
        worker_id=worker_id,
        lease_expires_at=time.time() + lease_seconds,
        attempt=Job.attempt + 1,
        started_at=sa.func.coalesce(Job.started_at, now()),
    )


def renew_lease(session: Session, job_id: str, *, worker_id: str, lease_seconds: float) -> bool:
    """Extend the lease while the job is still this worker's; False means it was taken away."""
    result = session.execute(
        sa.update(Job)
        .where(Job.id == job_id, Job.worker_id == worker_id,
               Job.status.in_([status.value for status in HELD]))
        .values(lease_expires_at=time.time() + lease_seconds)
    )
    return result.rowcount == 1
