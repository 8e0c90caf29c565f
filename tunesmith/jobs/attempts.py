"""What happens to a job while a worker holds it: the claim, the lease, and how the attempt
ends (succeeded, failed, cancelled, paused, or queued again for another worker).

The worker's supervisor ends its own attempts with these (`owner`: only while the job is
still that worker's); the reaper ends those whose worker stopped answering (`lease_lost`).
"""

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tunesmith.db.base import now
from tunesmith.db.models import Job
from tunesmith.jobs.states import HELD, JobStatus, change_status

ErrorBody = dict[str, Any]


def claim(session: Session, job_id: str, *, worker_id: str, lease_seconds: float) -> bool:
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
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def succeed(session: Session, job: Job, *, owner: str) -> bool:
    """The training finished: the job's model gets its `ft:` name."""
    suffix = f":{job.suffix}" if job.suffix else ""
    return change_status(
        session, job.id, JobStatus.succeeded, "The job has successfully completed",
        owner=owner, fine_tuned_model=f"ft:{job.model}:{job.project_id}{suffix}:{job.id}")


def fail(session: Session, job_id: str, message: str, error: ErrorBody, *,
         owner: str | None = None, expect: set[JobStatus] | None = None,
         event_data: dict[str, Any] | None = None) -> bool:
    """The job failed for good; `error` is what the user reads (code, param, message)."""
    return change_status(session, job_id, JobStatus.failed, message, level="error",
                         error=error, owner=owner, expect=expect, event_data=event_data)


def cancelled(session: Session, job_id: str, message: str, *, owner: str | None = None) -> bool:
    """A cancel asked for (`cancelling`) is done: the training is gone."""
    return change_status(session, job_id, JobStatus.cancelled, message,
                         expect={JobStatus.cancelling}, owner=owner)


def paused(session: Session, job_id: str, message: str, *, owner: str | None = None) -> bool:
    """A pause asked for (`pausing`) is done: the job waits for `resume`, no worker holds it,
    and the attempt the pause ended does not count against the job."""
    return change_status(session, job_id, JobStatus.paused, message,
                         expect={JobStatus.pausing}, owner=owner, worker_id=None,
                         lease_expires_at=None, max_attempts=Job.max_attempts + 1)


def requeue(session: Session, job_id: str, message: str, *, reason: str, attempt: int,
            owner: str | None = None) -> bool:
    """The running job lost its worker (lease expired, host shutdown): queued again, to
    resume from its last checkpoint on whichever worker takes it. The reaper sends it (it
    has no dispatch time)."""
    return change_status(session, job_id, JobStatus.queued, message,
                         expect={JobStatus.running}, owner=owner, level="warn",
                         event_data={"reason": reason, "attempt": attempt},
                         worker_id=None, lease_expires_at=None, dispatched_at=None)


def lease_lost(session: Session, job: Job) -> bool:
    """End the attempt of a job whose worker stopped renewing its lease: a cancel or pause
    it was carrying out is done, a running job is queued again or, past its attempts,
    failed with `worker_lost`. Returns whether it was queued again."""
    lost = f"Worker {job.worker_id} stopped answering (lease expired)"
    if job.status == JobStatus.cancelling:
        cancelled(session, job.id, f"{lost}; job cancelled")
        return False
    if job.status == JobStatus.pausing:
        paused(session, job.id, f"{lost}; job paused at its last checkpoint")
        return False
    if job.attempt >= job.max_attempts:
        fail(session, job.id,
             f"{lost} on attempt {job.attempt} of {job.max_attempts}; giving up",
             {"code": "worker_lost", "param": None,
              "message": f"The worker running this job died {job.attempt} times. "
                         "Check the worker logs (out of host memory?)."},
             expect={JobStatus.running})
        return False
    return requeue(session, job.id,
                   f"{lost}; requeued (attempt {job.attempt + 1} of {job.max_attempts}) to "
                   "resume from the last checkpoint", reason="worker_lost", attempt=job.attempt)
