"""The supervisor: what a worker's Celery task does with a job id.

It claims the job atomically (a second delivery claims nothing), starts the training child,
renews the lease while the child lives, relays a cancel or the time limit as SIGTERM, and
records the outcome. Training itself never runs in the Celery process: a crash, a leak or
a CUDA fault in the child cannot take the worker down with it.
"""

import json
import logging
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tunesmith import storage
from tunesmith.db.models import Job
from tunesmith.db.session import session_scope
from tunesmith.jobs import attempts
from tunesmith.jobs.events import add_event
from tunesmith.jobs.states import TERMINAL, JobStatus
from tunesmith.settings import settings
from tunesmith.spec.job import Resources, stored_spec
from worker.process.db_retry import is_db_outage, with_db_retry
from worker.process.launch import TrainingProcess, start_training
from worker.process.oom_recovery import next_replan, read_replan, write_replan
from worker.training.child import ERROR_FILE, EXIT_STOPPED
from worker.training.listed_checkpoints import drop_kept_artifact, keep_as_artifact

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5


def training_processes(job_id: str) -> int:
    """How many training processes the job asked for: one per GPU, or `processes`."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        resources = stored_spec(job.spec).resources if job is not None else Resources()
    if resources.processes:
        return resources.processes
    return resources.gpus if isinstance(resources.gpus, int) and resources.gpus > 1 else 1


def _status(job_id: str) -> str | None:
    with session_scope() as session:
        return session.scalar(sa.select(Job.status).where(Job.id == job_id))


def _log_tail(job_id: str, lines: int = 20) -> str:
    path = storage.job_dir(job_id) / "train.log"
    if not path.is_file():
        return ""
    with path.open(errors="replace") as handle:
        return "".join(deque(handle, maxlen=lines))


def _stop_child(child: TrainingProcess) -> int:
    """SIGTERM (the child checkpoints and exits), then SIGKILL after the grace period."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=settings.cancel_grace_seconds)
        except subprocess.TimeoutExpired:
            child.kill()
    return child.wait()


def supervise(job_id: str, *, worker_id: str) -> str:
    """Run the job if this worker can claim it. Returns the status it ended in."""
    def claim() -> bool:
        with session_scope() as session:
            return attempts.claim(session, job_id, worker_id=worker_id,
                                  lease_seconds=settings.lease_seconds)

    if not with_db_retry(claim, what="claim"):
        log.info("job %s is not queued (gone, taken or finished); message dropped", job_id)
        return "skipped"
    (storage.job_dir(job_id) / ERROR_FILE).unlink(missing_ok=True)
    processes = with_db_retry(lambda: training_processes(job_id), what="resources")
    while True:
        watched = _attempt(job_id, processes, worker_id=worker_id)
        if watched is None:
            return "lost"
        code, ending = watched
        # Out of memory: a fresh process (whole device memory) with a smaller micro-batch,
        # resuming from the last checkpoint; the job stays running.
        if ending is not None or code in (0, EXIT_STOPPED) or not with_db_retry(
                lambda: _replan_after_oom(job_id, worker_id=worker_id), what="oom recovery"):
            break
    outcome = with_db_retry(lambda: _record_outcome(job_id, code, ending, worker_id=worker_id),
                            what="outcome")
    # Ended, and by this worker: nobody resumes it, so its scratch can go. A paused or
    # requeued job keeps it (it may resume here, from local checkpoints).
    if outcome in TERMINAL:
        storage.clear_job_scratch(job_id)
    return outcome


def _attempt(job_id: str, processes: int, *,
             worker_id: str) -> tuple[int, JobStatus | None] | None:
    """One training process, start to end: its exit code and why we stopped it (see
    _watch), or None if the job was taken from this worker."""
    with _lease_kept(job_id, worker_id=worker_id):
        child = start_training(job_id, processes=processes)
    try:
        with _relay_sigterm(child) as host_stop:
            watched = _watch(job_id, child, worker_id=worker_id)
    finally:
        # However supervision ends (an unexpected error included), the training ends with
        # it: a child left running without a lease would train beside the requeued job.
        if child.poll() is None:
            _stop_child(child)
    if watched is None:
        return None
    code, ending = watched
    if ending is None and host_stop.is_set():
        ending = JobStatus.queued  # however the child ended, the host stopped it
    return code, ending


def _replan_after_oom(job_id: str, *, worker_id: str) -> bool:
    """If the attempt failed out of memory and recovery has a step left: record it (the next
    attempt reads it) and say so on the job. False: the failure stands."""
    folder = storage.job_dir(job_id)
    error_path = folder / ERROR_FILE
    if not error_path.is_file() or json.loads(error_path.read_text()).get("code") != \
            "out_of_memory":
        return False
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.running or job.worker_id != worker_id:
            return False
        current = read_replan(folder)
        found = next_replan(current, job.hyperparameters or {},
                            max_halvings=settings.oom_max_halvings)
        if found is None:
            return False
        replan, change = found
        add_event(session, job_id, f"Out of memory; retrying from the last checkpoint with "
                  f"{change}", level="warn",
                  data={"oom_recovery": {**asdict(replan), "change": change,
                                         "estimated_peak_memory_gib": (job.hyperparameters or {})
                                         .get("estimated_peak_memory_gib")}})
        write_replan(folder, replan)
    error_path.unlink(missing_ok=True)
    return True


@contextmanager
def _lease_kept(job_id: str, *, worker_id: str) -> Iterator[None]:
    """Renew the lease while the training process is being started: the first job after a
    worker starts waits for the fork server's imports (seconds, more on a loaded node), and
    a lease that ran out meanwhile sent the job to another worker as if this one had died."""
    done = threading.Event()

    def renew() -> None:
        while not done.wait(settings.heartbeat_seconds):
            try:
                with session_scope() as session:
                    attempts.renew_lease(session, job_id, worker_id=worker_id,
                                         lease_seconds=settings.lease_seconds)
            except sa.exc.DBAPIError as exc:  # an outage: _watch copes once the child runs
                log.warning("could not renew the lease of %s while starting: %s", job_id, exc)

    thread = threading.Thread(target=renew, name=f"lease-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@contextmanager
def _relay_sigterm(child: TrainingProcess) -> Iterator[threading.Event]:
    """While we supervise, SIGTERM (worker shutdown, node preemption) stops the training,
    not us: the child checkpoints and exits, and we live to requeue the job at once.

    Without this the Celery pool process dies of the signal, and the job waits for its
    lease to run out and counts as a lost worker.
    """
    received = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield received  # signal handlers belong to the main thread; tests may call us there
        return

    def forward(signum: int, _frame: object) -> None:
        log.warning("SIGTERM while supervising; stopping the training to requeue the job")
        received.set()
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def _watch(job_id: str, child: TrainingProcess, *,
           worker_id: str) -> tuple[int, JobStatus | None] | None:
    """Renew the lease while the child lives; relay a cancel or the time limit.

    Returns the child's exit code and why we stopped it (None: it ended by itself), or
    None if the job was taken from this worker (its lease ran out and the reaper requeued it).
    """
    started = last_renewal = time.monotonic()
    ending: JobStatus | None = None  # why we stopped the child, if we did
    while (code := child.poll()) is None:
        time.sleep(POLL_SECONDS)
        now = time.monotonic()
        try:
            status = _status(job_id)
            if now - last_renewal >= settings.heartbeat_seconds:
                with session_scope() as session:
                    still_ours = attempts.renew_lease(
                        session, job_id, worker_id=worker_id, lease_seconds=settings.lease_seconds)
                last_renewal = now
                if not still_ours and status not in (JobStatus.cancelling, None):
                    log.warning("job %s was taken from this worker; stopping", job_id)
                    _stop_child(child)
                    return None
        except sa.exc.DBAPIError as exc:
            if not is_db_outage(exc):
                raise
            # The database is away (restarting): training goes on, we retry next round.
            log.warning("database unavailable while supervising %s", job_id)
            continue
        if ending is not None:
            continue
        if status == JobStatus.cancelling or status is None:
            ending = JobStatus.cancelled
            _stop_child(child)
        elif status == JobStatus.pausing:
            ending = JobStatus.paused
            _stop_child(child)
        elif now - started > settings.job_time_limit_seconds:
            ending = JobStatus.failed
            _stop_child(child)
    return code, ending


def _record_outcome(job_id: str, code: int, ending: JobStatus | None, *, worker_id: str) -> str:
    """Write how the attempt ended, unless the job was taken from this worker meanwhile."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            return "gone"
        kept = False
        if ending == JobStatus.paused and code != 0:
            # A job that stops before its end keeps its last checkpoint as an artifact; in
            # this transaction, so the status event stays the job's last.
            kept = keep_as_artifact(session, job_id) is not None
            if attempts.paused(session, job_id,
                               "Job paused; resume continues from the last checkpoint",
                               owner=worker_id):
                return JobStatus.paused
            ending = JobStatus.cancelled  # a cancel came while it was pausing
        if ending == JobStatus.cancelled:
            if not kept:
                keep_as_artifact(session, job_id)
            done = attempts.cancelled(session, job_id, "Job cancelled; training stopped",
                                      owner=worker_id)
            return _kept_if(session, done, JobStatus.cancelled)
        if ending == JobStatus.failed:
            keep_as_artifact(session, job_id)
            done = attempts.fail(
                session, job_id, "Job stopped at its time limit", owner=worker_id,
                error={"code": "timeout", "param": None,
                       "message": f"The job ran past the limit of "
                                  f"{settings.job_time_limit_seconds:.0f} s."})
            return _kept_if(session, done, JobStatus.failed)
        if code == 0:
            drop_kept_artifact(session, job_id)  # a resumed job has its real result now
            done = attempts.succeed(session, job, owner=worker_id)
            return JobStatus.succeeded if done else "lost"
        if ending == JobStatus.queued or code == EXIT_STOPPED:
            # SIGTERM from the host, not from the API: the worker is shutting down or the
            # node is preempted. The child saved a checkpoint (unless the signal came before
            # training began); another worker resumes from it.
            done = attempts.requeue(
                session, job_id, "Training stopped by the worker's host (shutdown or "
                "preemption); requeued to resume from the last checkpoint",
                reason="worker_shutdown", attempt=job.attempt, owner=worker_id)
            return JobStatus.queued if done else "lost"
        error = _read_error(job_id, code)
        add_event(session, job_id, "Training log tail:\n" + _log_tail(job_id), level="error")
        keep_as_artifact(session, job_id)
        done = attempts.fail(session, job_id, f"Job failed: {error['message']}", error,
                             event_data={"code": error["code"]}, owner=worker_id)
        # Not ours any more: neither the log tail nor the checkpoint is this job's story.
        return _kept_if(session, done, JobStatus.failed)


def _kept_if(session: Session, done: bool, status: JobStatus) -> str:
    """What the outcome wrote beside the status stays only if the status change was ours."""
    if not done:
        session.rollback()
        return "lost"
    return status


def _read_error(job_id: str, code: int) -> dict[str, str | None]:
    path: Path = storage.job_dir(job_id) / ERROR_FILE
    if path.is_file():
        return json.loads(path.read_text())
    if code == -signal.SIGKILL:
        return {"code": "out_of_memory", "param": None,
                "message": "The training process was killed (SIGKILL), most likely by the "
                           "host's out-of-memory killer: lower batch_size or max_seq_length."}
    return {"code": "internal", "param": None,
            "message": f"The training process exited with code {code}; see the job's events."}
