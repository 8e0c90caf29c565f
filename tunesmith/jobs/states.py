"""A job's states, and the one function that changes them: a conditional UPDATE
(tunesmith/jobs/lifecycle.py) that writes its event in the same transaction. The operations
built on it (cancel, pause, ...) are in tunesmith/jobs/operations.py."""

from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tunesmith.db.models import Job
from tunesmith.jobs.events import Level, add_event
from tunesmith.jobs.lifecycle import Lifecycle
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


JOB_LIFECYCLE: Lifecycle[JobStatus] = Lifecycle(Job, ALLOWED_FROM, TERMINAL)


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
    and, with `owner`, still held by that worker; its event (and, at a final state, its
    results file and webhook) are written in the same transaction.

    Returns whether this call made the change. `fields` are further columns to set in
    the same UPDATE (lease, error, ...). The caller commits.
    """
    if not JOB_LIFECYCLE.change(session, job_id, to, expect=expect, owner=owner, **fields):
        return False
    if to in TERMINAL:
        project_id = session.scalar(sa.select(Job.project_id).where(Job.id == job_id))
        assert project_id is not None  # the UPDATE above just found the row
        results = add_results_file(session, job_id, project_id)
        if results:
            session.execute(sa.update(Job).where(Job.id == job_id)
                            .values(result_files=results))
        # The webhook outbox row commits with the change, or neither does.
        add_job_event(session, project_id, job_id, to.value)
    add_event(session, job_id, message, level=level,
              data={"status": to.value, **(event_data or {})})
    return True
