"""The rules of the job and export operations, on the real tables in an in-memory SQLite
database (the embedded default's engine): what each request does from each status, what it
refuses and why, and that two racing writers never both win.

The broker is out of scope here (tests/api send real messages); `send` records what would
be sent instead.
"""

import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tunesmith.db.base import Base
from tunesmith.db.models import Export, Job, JobEvent, Project
from tunesmith.jobs import attempts, dispatch, exports, operations
from tunesmith.jobs.exports import ExportStatus
from tunesmith.jobs.lifecycle import Refused
from tunesmith.jobs.states import ALLOWED_FROM, TERMINAL, JobStatus
from tunesmith.spec.job import JobSpec


@pytest.fixture
def session() -> Iterator[Session]:
    # One connection for the whole test: an in-memory database lives as long as it does.
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    Base.metadata.create_all(engine)
    with Session(engine, expire_on_commit=False) as session:
        session.add(Project(id="proj-1", name="p"))
        session.commit()
        yield session
    engine.dispose()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    messages: list[tuple[str, str]] = []

    def send(job_id: str, *, queue: str) -> float:
        messages.append((job_id, queue))
        return time.time()

    monkeypatch.setattr(dispatch, "send", send)
    return messages


def _stored_spec(gpu_class: str | None) -> dict[str, Any]:
    """A spec as the API stores it: the queue is read through JobSpec, like every spec read."""
    return JobSpec.model_validate({
        "model": "tiny-llama", "training_file": "file-1",
        "method": {"type": "supervised"}, "tuning": {"type": "lora"},
        "resources": {"gpu_class": gpu_class}}).model_dump(mode="json")


def job_in(session: Session, status: JobStatus, *, worker: str | None = None,
           attempt: int = 1, max_attempts: int = 3, gpu_class: str | None = None) -> Job:
    job = Job(id=f"ftjob-{status.value}-{time.monotonic_ns()}", project_id="proj-1",
              model="tiny-llama", method_type="supervised", tuning_type="lora",
              spec=_stored_spec(gpu_class), status=status.value, seed=1,
              max_attempts=max_attempts, attempt=attempt, worker_id=worker,
              lease_expires_at=time.time() + 60 if worker else None)
    session.add(job)
    session.commit()
    return job


def reread(session: Session, job: Job) -> Job:
    session.expire_all()
    found = session.get(Job, job.id)
    assert found is not None
    return found


def last_event(session: Session, job: Job) -> JobEvent:
    event = session.scalars(sa.select(JobEvent).where(JobEvent.job_id == job.id)
                            .order_by(JobEvent.seq.desc()).limit(1)).first()
    assert event is not None
    return event


def test_no_state_leads_out_of_a_final_one() -> None:
    assert all(not (sources & TERMINAL) for sources in ALLOWED_FROM.values())
    assert all(not (sources & exports.EXPORT_LIFECYCLE.terminal)
               for sources in exports.EXPORT_LIFECYCLE.allowed_from.values())


def test_create_queues_the_job_and_dispatch_sends_it_to_its_gpu_class(
        session: Session, sent: list[tuple[str, str]]) -> None:
    spec = JobSpec.model_validate({"model": "tiny-llama", "training_file": "file-x",
                                   "resources": {"gpu_class": "h100"}})
    job = operations.create(session, "proj-1", spec)
    session.commit()
    dispatch.dispatch(session, job)
    job = reread(session, job)
    assert job.status == JobStatus.queued and job.dispatched_at is not None
    assert sent == [(job.id, dispatch.queue_for("h100"))]
    assert last_event(session, job).data == {"status": "queued"}


@pytest.mark.parametrize(("before", "after", "message"), [
    (JobStatus.queued, JobStatus.cancelled, "Job cancelled before it started"),
    (JobStatus.paused, JobStatus.cancelled, "Job cancelled while paused"),
    (JobStatus.running, JobStatus.cancelling, "Cancel requested; stopping the training"),
    (JobStatus.pausing, JobStatus.cancelling, "Cancel requested; stopping the training"),
])
def test_cancel(session: Session, before: JobStatus, after: JobStatus, message: str) -> None:
    job = job_in(session, before, worker="w1" if before in (JobStatus.running,
                                                           JobStatus.pausing) else None)
    operations.cancel(session, job)
    job = reread(session, job)
    assert job.status == after
    assert last_event(session, job).message == message
    assert (job.finished_at is not None) == (after == JobStatus.cancelled)


def test_cancel_of_a_cancelling_job_changes_nothing(session: Session) -> None:
    job = job_in(session, JobStatus.cancelling, worker="w1")
    operations.cancel(session, job)
    assert reread(session, job).status == JobStatus.cancelling
    assert session.scalar(sa.select(sa.func.count()).select_from(JobEvent)) == 0


@pytest.mark.parametrize("final", sorted(TERMINAL))
def test_a_finished_job_cannot_be_cancelled(session: Session, final: JobStatus) -> None:
    job = job_in(session, final)
    with pytest.raises(Refused, match=f"already {final.value}; nothing to cancel") as refused:
        operations.cancel(session, job)
    assert refused.value.code == "job_not_cancellable"
    assert reread(session, job).status == final


@pytest.mark.parametrize(("before", "after"), [
    (JobStatus.queued, JobStatus.paused), (JobStatus.running, JobStatus.pausing),
    (JobStatus.pausing, JobStatus.pausing), (JobStatus.paused, JobStatus.paused),
])
def test_pause(session: Session, before: JobStatus, after: JobStatus) -> None:
    job = job_in(session, before)
    operations.pause(session, job)
    assert reread(session, job).status == after


@pytest.mark.parametrize("status", [JobStatus.cancelling, *sorted(TERMINAL)])
def test_only_a_queued_or_running_job_pauses(session: Session, status: JobStatus) -> None:
    job = job_in(session, status)
    with pytest.raises(Refused, match="only a queued or running job can be paused") as refused:
        operations.pause(session, job)
    assert refused.value.code == "job_not_pausable"


def test_resume_queues_and_sends_a_paused_job(session: Session,
                                               sent: list[tuple[str, str]]) -> None:
    job = job_in(session, JobStatus.paused)
    operations.resume(session, job)
    assert reread(session, job).status == JobStatus.queued
    assert sent == [(job.id, dispatch.queue_for(None))]


@pytest.mark.parametrize(("status", "says"), [
    (JobStatus.pausing, "only a paused job can be resumed; wait until it is paused"),
    (JobStatus.running, "only a paused job can be resumed."),
    (JobStatus.succeeded, "only a paused job can be resumed."),
])
def test_resume_refuses_what_is_not_paused(session: Session, sent: list[tuple[str, str]],
                                           status: JobStatus, says: str) -> None:
    job = job_in(session, status)
    with pytest.raises(Refused, match=says):
        operations.resume(session, job)
    assert sent == [] and reread(session, job).status == status


def test_two_claims_one_winner(session: Session) -> None:
    job = job_in(session, JobStatus.queued, attempt=0)
    assert attempts.claim(session, job.id, worker_id="w1", lease_seconds=30)
    assert not attempts.claim(session, job.id, worker_id="w2", lease_seconds=30)
    session.commit()
    job = reread(session, job)
    assert (job.status, job.worker_id, job.attempt) == (JobStatus.running, "w1", 1)
    assert job.started_at is not None


def test_a_worker_that_lost_the_job_writes_nothing(session: Session) -> None:
    job = job_in(session, JobStatus.running, worker="w2")
    assert not attempts.succeed(session, job, owner="w1")
    assert not attempts.fail(session, job.id, "m", {"code": "internal"}, owner="w1")
    assert not attempts.renew_lease(session, job.id, worker_id="w1", lease_seconds=30)
    session.commit()
    assert reread(session, job).status == JobStatus.running


def test_succeed_names_the_model(session: Session) -> None:
    job = job_in(session, JobStatus.running, worker="w1")
    job.suffix = "mine"
    session.commit()
    assert attempts.succeed(session, job, owner="w1")
    session.commit()
    job = reread(session, job)
    assert job.fine_tuned_model == f"ft:tiny-llama:proj-1:mine:{job.id}"
    assert job.lease_expires_at is None and job.finished_at is not None


@pytest.mark.parametrize(("before", "attempt", "after", "requeued"), [
    (JobStatus.running, 1, JobStatus.queued, True),
    (JobStatus.running, 3, JobStatus.failed, False),
    (JobStatus.cancelling, 1, JobStatus.cancelled, False),
    (JobStatus.pausing, 1, JobStatus.paused, False),
])
def test_a_lost_lease(session: Session, before: JobStatus, attempt: int, after: JobStatus,
                      requeued: bool) -> None:
    job = job_in(session, before, worker="w1", attempt=attempt, max_attempts=3)
    assert attempts.lease_lost(session, job) is requeued
    session.commit()
    job = reread(session, job)
    assert job.status == after
    assert job.worker_id is None or after in TERMINAL
    if after == JobStatus.queued:
        assert job.dispatched_at is None  # the reaper sends it on its next round
        assert last_event(session, job).data == {"status": "queued", "reason": "worker_lost",
                                                 "attempt": 1}
    if after == JobStatus.failed:
        assert job.error is not None and job.error["code"] == "worker_lost"
    if after == JobStatus.paused:
        assert job.max_attempts == 4  # the attempt the pause ended does not count


def test_requeue_only_takes_a_running_job(session: Session) -> None:
    job = job_in(session, JobStatus.cancelling, worker="w1")
    assert not attempts.requeue(session, job.id, "m", reason="worker_shutdown", attempt=1,
                                owner="w1")


def export_in(session: Session, status: ExportStatus) -> Export:
    job = job_in(session, JobStatus.succeeded)
    export = exports.create_export(session, project_id="proj-1", job_id=job.id, fmt="merged",
                                   quantization=None, checkpoint_step=None)
    export.status = status.value
    session.commit()
    return export


def test_an_export_is_claimed_once_and_a_cancel_beats_its_finish(session: Session) -> None:
    export = export_in(session, ExportStatus.queued)
    assert exports.claim_export(session, export.id, worker_id="w1")
    assert not exports.claim_export(session, export.id, worker_id="w2")
    session.commit()
    exports.cancel_export(session, export)
    assert export.status == ExportStatus.cancelled and export.lease_expires_at is None
    # The worker finishing afterwards learns it was cancelled and keeps nothing.
    assert exports.finish_export(session, export.id, ExportStatus.succeeded, worker_id="w1",
                                 artifacts=[{"name": "x"}]) == ExportStatus.cancelled


@pytest.mark.parametrize("final", [ExportStatus.succeeded, ExportStatus.failed,
                                   ExportStatus.cancelled])
def test_a_finished_export_cannot_be_cancelled(session: Session, final: ExportStatus) -> None:
    export = export_in(session, final)
    with pytest.raises(Refused, match="only a queued or running export") as refused:
        exports.cancel_export(session, export)
    assert refused.value.code == "export_finished"
