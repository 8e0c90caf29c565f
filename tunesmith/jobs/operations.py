"""What a user asks of a job: create, cancel, pause, resume.

Each is a rule on the job's status made of guarded changes (tunesmith/jobs/states.py): a
request that races a worker or the reaper either wins or sees what the job became, and says
so. A request the job's status does not allow raises `Refused`, whose message says why; the
API answers it with 409.
"""

import time

from sqlalchemy.orm import Session

from tunesmith.db.models import Job
from tunesmith.ids import new_id
from tunesmith.jobs.dispatch import dispatch
from tunesmith.jobs.events import add_event
from tunesmith.jobs.lifecycle import Refused
from tunesmith.jobs.states import TERMINAL, JobStatus, change_status
from tunesmith.settings import settings
from tunesmith.spec.job import JobSpec

NOT_STARTED = {JobStatus.queued, JobStatus.validating_files}


def create(session: Session, project_id: str, spec: JobSpec) -> Job:
    """The queued job's row and its first event, in the caller's transaction (the caller
    checks references and the project's queue first, commits, then calls `dispatch`)."""
    job = Job(
        id=new_id("ftjob"), project_id=project_id, model=spec.model,
        training_file_id=spec.training_file, validation_file_id=spec.validation_file,
        method_type=spec.method.type, tuning_type=spec.tuning.type,
        spec=spec.model_dump(mode="json"), status=JobStatus.queued.value,
        suffix=spec.suffix, seed=spec.seed if spec.seed is not None else 42,
        metadata_=spec.metadata, max_attempts=settings.max_attempts,
        # Being sent right after the commit (see dispatch): the reaper leaves it to us.
        dispatched_at=time.time(),
    )
    session.add(job)
    session.flush()
    add_event(session, job.id, f"Created fine-tuning job: {spec.method.type} x "
              f"{spec.tuning.type} on {spec.model}", data={"status": JobStatus.queued.value})
    return job


def cancel(session: Session, job: Job) -> None:
    """A job not yet started, or paused, is cancelled at once; a running (or pausing) one
    becomes `cancelling`, and its worker stops the training and records `cancelled`.
    Commits; a job already cancelling is left as it is."""
    if JobStatus(job.status) in TERMINAL:
        raise _not_cancellable(job)
    if job.status == JobStatus.cancelling:
        return
    done = change_status(session, job.id, JobStatus.cancelled,
                         "Job cancelled while paused" if job.status == JobStatus.paused
                         else "Job cancelled before it started",
                         expect=NOT_STARTED | {JobStatus.paused})
    if not done:
        done = change_status(session, job.id, JobStatus.cancelling,
                             "Cancel requested; stopping the training",
                             expect={JobStatus.running, JobStatus.pausing})
    session.commit()
    session.refresh(job)
    if not done and JobStatus(job.status) in TERMINAL:  # it ended meanwhile
        raise _not_cancellable(job)


def _not_cancellable(job: Job) -> Refused:
    return Refused(f"Job '{job.id}' is already {job.status}; nothing to cancel.",
                   code="job_not_cancellable")


def pause(session: Session, job: Job) -> None:
    """A job not yet started is paused at once; a running one becomes `pausing`, and its
    worker saves a checkpoint, stops and records `paused`. Commits; a job already pausing or
    paused is left as it is."""
    if job.status in (JobStatus.pausing, JobStatus.paused):
        return
    done = change_status(session, job.id, JobStatus.paused, "Job paused before it started",
                         expect=NOT_STARTED)
    if not done:
        done = change_status(session, job.id, JobStatus.pausing,
                             "Pause requested; saving a checkpoint and stopping the training",
                             expect={JobStatus.running})
    session.commit()
    session.refresh(job)
    if not done and job.status not in (JobStatus.pausing, JobStatus.paused):
        raise Refused(f"Job '{job.id}' is {job.status}; only a queued or running job can be "
                      "paused.", code="job_not_pausable")


def resume(session: Session, job: Job) -> None:
    """A paused job is queued again, to continue from its last checkpoint, and sent."""
    if not change_status(session, job.id, JobStatus.queued,
                         "Job resumed; queued to continue from its last checkpoint",
                         expect={JobStatus.paused}, dispatched_at=time.time()):
        hint = " wait until it is paused" if job.status == JobStatus.pausing else ""
        raise Refused(f"Job '{job.id}' is {job.status}; only a paused job can be resumed"
                      f"{';' + hint if hint else '.'}", code="job_not_resumable")
    session.commit()
    session.refresh(job)
    dispatch(session, job)
