"""Which training workers are alive, and on which queues: a heartbeat row per worker.

A worker's main process renews its row every `heartbeat_seconds` from a thread; a row older
than `worker_stale_seconds()` belongs to a worker that is gone (killed, frozen, cut off).
A worker that stops cleanly deletes its row at once.
"""

import logging
import os
import threading
import time
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tunesmith.db.models import WorkerHeartbeat
from tunesmith.settings import settings

log = logging.getLogger(__name__)


def worker_stale_seconds() -> float:
    # Three missed beats, and never under 15 s: a loaded host may delay a beat or two.
    return max(3 * settings.heartbeat_seconds, 15.0)


def beat(engine: Engine, hostname: str, queues: str, started_at: float) -> None:
    now = time.time()
    with engine.begin() as connection:
        updated = connection.execute(
            sa.update(WorkerHeartbeat).where(WorkerHeartbeat.hostname == hostname)
            .values(queues=queues, pid=os.getpid(), heartbeat_at=now)).rowcount
        if not updated:
            connection.execute(sa.insert(WorkerHeartbeat).values(
                hostname=hostname, queues=queues, pid=os.getpid(), started_at=started_at,
                heartbeat_at=now))


def forget(engine: Engine, hostname: str) -> None:
    with engine.begin() as connection:
        connection.execute(sa.delete(WorkerHeartbeat).where(WorkerHeartbeat.hostname == hostname))


def start_heartbeat(hostname: str, queues: str, stop: threading.Event) -> threading.Thread:
    """Renew this worker's row until `stop` is set, then delete it."""
    from tunesmith.db.session import make_engine

    # An engine of its own without a pool: Celery forks its pool processes from this one,
    # and a forked child must not inherit an open database connection.
    engine = make_engine(settings.sqlalchemy_url, pooled=False)
    started_at = time.time()

    def loop() -> None:
        while True:
            try:
                beat(engine, hostname, queues, started_at)
            except Exception:  # a database outage: beat again next round
                log.warning("worker heartbeat failed; retrying", exc_info=True)
            if stop.wait(settings.heartbeat_seconds):
                break
        try:
            forget(engine, hostname)
        except Exception:
            log.warning("could not remove this worker's heartbeat row", exc_info=True)

    thread = threading.Thread(target=loop, name="tunesmith-worker-heartbeat", daemon=True)
    thread.start()
    return thread


def live_queues(now: float | None = None) -> set[str]:
    """The queues at least one live worker consumes."""
    from tunesmith.db.session import session_scope

    now = time.time() if now is None else now
    with session_scope() as session:
        rows = session.scalars(sa.select(WorkerHeartbeat.queues).where(
            WorkerHeartbeat.heartbeat_at >= now - worker_stale_seconds())).all()
    return {queue.strip() for row in rows for queue in row.split(",") if queue.strip()}


def missing_queues(wanted: Iterable[str]) -> list[str]:
    """The queues in `wanted` that no live worker consumes."""
    live = live_queues()
    return sorted(set(wanted) - live)
