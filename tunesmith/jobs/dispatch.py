"""Sending a job's message: which queue it goes to, and when it counts as sent.

The message is sent after the job's row is committed (a worker never receives an id it
cannot read), and the send time is recorded on the job: the reaper sends again a queued job
that has none, or whose message is no longer in the broker.
"""

import logging
import time

from sqlalchemy.orm import Session

from tunesmith.db.models import Job
from tunesmith.queue import RUN_JOB_TASK, celery_app
from tunesmith.settings import settings
from tunesmith.spec.job import stored_spec

log = logging.getLogger(__name__)


def queue_for(gpu_class: str | None) -> str:
    """Jobs that ask for a GPU class go to that class's queue (`gpu.h100`), others to `gpu`."""
    return f"{settings.queue}.{gpu_class}" if gpu_class else settings.queue


def queue_of(job: Job) -> str:
    """The queue the job's spec asks for (`resources.gpu_class`)."""
    return queue_for(stored_spec(job.spec).resources.gpu_class)


def send(job_id: str, *, queue: str) -> float:
    """Send the job's message (its id only). Returns the send time to record on the job."""
    celery_app().send_task(RUN_JOB_TASK, args=[job_id], queue=queue)
    return time.time()


def dispatch(session: Session, job: Job) -> None:
    """Send a committed queued job to its queue and record when, then commit.

    The job was committed with a dispatch time of now, so the reaper, which sends jobs that
    have none, cannot send it a second time while we do. If the broker is down, the dispatch
    time is cleared and the reaper sends the job on its next round."""
    try:
        job.dispatched_at = send(job.id, queue=queue_of(job))
    except Exception:
        log.exception("could not send job %s to the broker; the reaper will retry", job.id)
        job.dispatched_at = None
    try:
        session.commit()
    except Exception:  # the job was sent, or will be after the redispatch period
        log.exception("could not record the dispatch of job %s", job.id)
        session.rollback()
