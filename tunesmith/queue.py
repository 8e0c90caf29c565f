"""The Celery app as the API sees it: it sends tasks by name and never imports the worker.

What a job's message says and which queue it goes to: tunesmith/jobs/dispatch.py."""

import re
import time
from collections.abc import Iterable
from functools import cache
from typing import Any

from celery import Celery

from tunesmith.settings import settings

RUN_JOB_TASK = "tunesmith.run_job"
RUN_EXPORT_TASK = "tunesmith.run_export"


@cache
def celery_app() -> Celery:
    app = Celery("tunesmith", broker=settings.celery_broker_url)
    app.conf.update(
        task_default_queue=settings.queue,
        # A job is acknowledged only when its task returns, and given back if the
        # worker process dies, so a crash never silently drops it.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
    )
    if settings.celery_broker_url.startswith(("redis://", "rediss://")):
        # Redis hides an unacked message this long before redelivering it; the reaper's
        # leases do the fast recovery, this is the slow safety net. (The SQLAlchemy
        # transport passes its options to create_engine, which refuses this one.)
        app.conf.broker_transport_options = {"visibility_timeout": 6 * 3600}
    return app


def prepare_broker(queues: Iterable[str], *, attempts: int = 10) -> None:
    """Create the broker's queues before any worker or sender uses them.

    kombu's SQLAlchemy transport (the embedded broker) creates its tables and a queue's row
    on first use with a select-then-insert guarded only within one process: two processes
    starting together (serve's API and its local worker) could both insert `gpu`, and the
    loser died of `UNIQUE constraint failed: kombu_queue.name`. `tunesmith serve` declares
    the queues here before it starts its worker, and every worker does so at start; a
    process that loses the race anyway retries and then finds the row. On Redis a declare
    creates nothing and is harmless."""
    for attempt in range(1, attempts + 1):
        try:
            with celery_app().connection_for_write() as connection:
                channel: Any = connection.default_channel  # kombu's typing lacks queue_declare
                for name in queues:
                    channel.queue_declare(queue=name)
            return
        except Exception:  # IntegrityError/OperationalError from a concurrent creator
            if attempt == attempts:
                raise
            time.sleep(0.2 * attempt)


JOB_ID = re.compile(r"ftjob-[0-9a-f]{24}")
# Kombu's Redis transport: delivered, unacknowledged messages by delivery tag, and the time
# each was delivered.
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"


def jobs_waiting_in(queues: Iterable[str], *, delivered_within: float,
                    ids: re.Pattern[str] = JOB_ID) -> set[str] | None:
    """Ids of the jobs whose messages wait in `queues`, or were delivered to a worker in the
    last `delivered_within` seconds and not yet acknowledged (a live worker claims its
    message within moments: such a job is in flight, not lost). None where the broker
    cannot be read that way (the embedded SQLAlchemy transport).

    An unacknowledged message older than that, of a job still queued, went to a worker that
    died before claiming it: it does not count, and the job is sent again. A message's
    headers carry its arguments as text (`argsrepr`), so job ids are found by pattern."""
    if not settings.celery_broker_url.startswith(("redis://", "rediss://")):
        return None
    import redis

    client = redis.Redis.from_url(settings.celery_broker_url, socket_timeout=5)
    try:
        # bytes: the client decodes nothing (no decode_responses); redis-py types it loosely
        raw: list[Any] = [m for queue in queues for m in client.lrange(queue, 0, -1)]
        recent: Any = client.zrangebyscore(UNACKED_INDEX, time.time() - delivered_within,
                                           "+inf")
        if recent:
            raw += [m for m in client.hmget(UNACKED, recent) if m]
    finally:
        client.close()
    return {job_id for message in raw
            for job_id in ids.findall(message.decode("utf-8", "replace"))}
