"""Recovery that keeps the database the source of truth.

- A running job whose lease ran out lost its worker: requeue it (it resumes from its last
  checkpoint) or, past its attempts, fail it with `worker_lost`.
- A queued job that waits on a queue no live worker consumes (`gpu.h100` with no such
  worker, or the only worker dead) says so once in its events, so its owner does not wait
  in silence.
- A queued job whose message was never sent or was lost (a broker restarted without
  persistence) is sent again. A job that simply waits its turn keeps its one message: the
  broker is read first, and a message still waiting there, or just delivered to a worker
  that is about to claim it, is left alone. (A duplicate would be
  harmless, since claims are atomic, but a long queue would pile them up.)
- A running export whose lease ran out is queued and sent again, or failed past its attempts;
  a queued export whose message was lost is sent again, as a job is.
"""

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tunesmith.db.models import Export, Job, JobEvent
from tunesmith.db.session import session_scope
from tunesmith.jobs.attempts import lease_lost
from tunesmith.jobs.dispatch import queue_of, send
from tunesmith.jobs.events import add_event
from tunesmith.jobs.exports import ExportStatus, reap_lost_exports, send_export
from tunesmith.jobs.states import HELD, JobStatus
from tunesmith.queue import JOB_ID, jobs_waiting_in
from tunesmith.settings import settings
from tunesmith.workers import live_queues

log = logging.getLogger(__name__)
EXPORT_ID = re.compile(r"ftexp-[0-9a-f]{24}")
# How long a message may take to go from its queue to kombu's unacknowledged set.
SETTLE_SECONDS = 0.25


def reap_expired_leases(now: float | None = None) -> list[str]:
    """Requeue or fail jobs whose worker stopped renewing the lease. Returns requeued ids."""
    now = time.time() if now is None else now
    with session_scope() as session:
        expired = session.scalars(sa.select(Job).where(
            Job.status.in_([status.value for status in HELD]),
            Job.lease_expires_at < now)).all()
        requeued = [job.id for job in expired if lease_lost(session, job)]
    return requeued


def _waiting_in_broker(queues: set[str], ids: re.Pattern[str]) -> set[str]:
    try:
        return jobs_waiting_in(queues, ids=ids,
                               delivered_within=settings.redispatch_after_seconds) or set()
    except Exception:  # unreadable now: send again, a duplicate costs one dropped claim
        log.warning("could not read the broker's queues; stale messages are sent again",
                    exc_info=True)
        return set()


def redispatch_queued(now: float | None = None) -> list[str]:
    """Send again the queued jobs never sent, or sent long ago, unclaimed, and whose
    message is no longer in the broker."""
    now = time.time() if now is None else now
    with session_scope() as session:
        stale = session.scalars(sa.select(Job).where(
            Job.status == JobStatus.queued.value,
            sa.or_(Job.dispatched_at.is_(None),
                   Job.dispatched_at < now - settings.redispatch_after_seconds))).all()
        return _send_again(session, stale, {job.id: queue_of(job) for job in stale},
                           send=lambda row_id, queue: send(row_id, queue=queue),
                           ids=JOB_ID, now=now)


def redispatch_queued_exports(now: float | None = None) -> list[str]:
    """The same for exports: a broker restarted without persistence, or a message dropped
    on the way, leaves an export `queued` with nothing that would ever start it."""
    now = time.time() if now is None else now
    with session_scope() as session:
        stale = session.scalars(sa.select(Export).where(
            Export.status == ExportStatus.queued.value,
            sa.func.coalesce(Export.dispatched_at, Export.created_at)
            < now - settings.redispatch_after_seconds)).all()
        return _send_again(session, stale, {export.id: settings.queue for export in stale},
                           send=lambda row_id, _queue: send_export(row_id),
                           ids=EXPORT_ID, now=now)


def _send_again(session: Session, stale: Sequence[Job | Export], queues: dict[str, str], *,
                send: Callable[[str, str], float], ids: re.Pattern[str],
                now: float) -> list[str]:
    """Send each stale queued row again unless its message still waits in the broker (one
    that simply waits its turn keeps its one message; a duplicate would be harmless, since
    claims are atomic, but a long queue would pile them up). A row never sent is sent."""
    sent: list[str] = []
    sent_before = [row for row in stale if row.dispatched_at is not None]
    waiting = _waiting_in_broker(set(queues.values()), ids) if sent_before else set()
    if any(row.id not in waiting for row in sent_before):
        # A message a worker is taking right now is in neither place for a moment
        # (popped, not yet recorded as unacknowledged): look once more, after that
        # moment, and drop the rows claimed meanwhile.
        time.sleep(SETTLE_SECONDS)
        waiting |= _waiting_in_broker(set(queues.values()), ids)
        for row in sent_before:
            session.refresh(row)
    for row in stale:
        if row.status != "queued":
            continue
        if row.dispatched_at is not None and row.id in waiting:
            row.dispatched_at = now  # still in line: look again one period from now
            continue
        try:
            row.dispatched_at = send(row.id, queues[row.id])
        except Exception:
            log.warning("broker unreachable; %s stays queued for the next round", row.id)
            break
        sent.append(row.id)
    return sent


NO_WORKER = "No live worker consumes queue"


def warn_unserved(now: float | None = None) -> list[str]:
    """Add an event, once per attempt, to each job queued longer than
    `no_worker_warning_seconds` on a queue that no live worker consumes. Returns their ids."""
    now = time.time() if now is None else now
    warned: list[str] = []
    with session_scope() as session:
        waiting = session.scalars(sa.select(Job).where(
            Job.status == JobStatus.queued.value,
            Job.created_at < now - settings.no_worker_warning_seconds)).all()
        if not waiting:
            return warned
        served = live_queues(now)
        unserved = {job.id: queue for job in waiting
                    if (queue := queue_of(job)) not in served}
        if not unserved:
            return warned
        told = {(event.job_id, (event.data or {}).get("attempt")) for event in session.scalars(
            sa.select(JobEvent).where(JobEvent.job_id.in_(list(unserved)),
                                      JobEvent.message.startswith(NO_WORKER)))}
        for job in waiting:
            wanted = unserved.get(job.id)
            if wanted is None or (job.id, job.attempt) in told:
                continue
            add_event(session, job.id,
                      f"{NO_WORKER} '{wanted}': the job waits until one starts "
                      f"(`tunesmith worker --queues {wanted}`)", level="warn",
                      data={"reason": "no_worker", "queue": wanted, "attempt": job.attempt})
            warned.append(job.id)
    return warned


def run_once(*, reap: bool = True) -> None:
    requeued = reap_expired_leases() if reap else []
    if reap:
        requeued += reap_lost_exports()
    sent = redispatch_queued() + redispatch_queued_exports()
    warned = warn_unserved()
    if requeued or sent or warned:
        log.info("reaper: requeued %s, sent %s, no worker for %s", requeued, sent, warned)


def start_reaper_thread(stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        # While the database is away no worker can renew its lease; a lease that ran out
        # then says nothing about the worker. After an outage every worker gets one full
        # lease to renew before any lease counts as expired again.
        reap_after = 0.0
        while not stop.wait(settings.reaper_interval_seconds):
            try:
                run_once(reap=time.time() >= reap_after)
            except sa.exc.DBAPIError as exc:
                reap_after = time.time() + settings.lease_seconds
                log.warning("database unavailable (%s); leases are not reaped until %.0f s "
                            "after it answers again", type(exc.orig).__name__,
                            settings.lease_seconds)
            except Exception:  # a broker outage or a bug must not end the loop
                log.exception("reaper round failed; retrying next interval")

    thread = threading.Thread(target=loop, name="tunesmith-reaper", daemon=True)
    thread.start()
    return thread
