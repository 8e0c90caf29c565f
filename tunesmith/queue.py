"""The Celery app as the API sees it: it sends tasks by name and never imports the worker."""

import re
import time
from collections.abc import Iterable
from functools import cache

from celery import Celery

from tunesmith.settings import settings

RUN_JOB_TASK = "tunesmith.run_job"


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


def dispatch_job(job_id: str, *, queue: str | None = None) -> float:
    """Send the job's message (its id only). Returns the send time to record on the job."""
    celery_app().send_task(RUN_JOB_TASK, args=[job_id], queue=queue or settings.queue)
    return time.time()


def queue_for(gpu_class: str | None) -> str:
    """Jobs that ask for a GPU class go to that class's queue (`gpu.h100`), others to `gpu`."""
    return f"{settings.queue}.{gpu_class}" if gpu_class else settings.queue


JOB_ID = re.compile(r"ftjob-[0-9a-f]{24}")


def jobs_waiting_in(queues: Iterable[str]) -> set[str] | None:
    """Ids of the jobs whose messages wait in `queues`, not yet delivered to a worker; None
    where the broker cannot be read that way (the embedded SQLAlchemy transport).

    Delivered, unacknowledged messages (kombu's `unacked` hash) do not count: a live worker
    claims its message within moments, so a queued job whose message was delivered long ago
    was delivered to a worker that died, and needs sending again. A message's headers carry
    its arguments as text (`argsrepr`), so job ids are found by pattern, bodies undecoded."""
    if not settings.celery_broker_url.startswith(("redis://", "rediss://")):
        return None
    import redis

    client = redis.Redis.from_url(settings.celery_broker_url, socket_timeout=5)
    try:
        raw = [m for queue in queues for m in client.lrange(queue, 0, -1)]
    finally:
        client.close()
    return {job_id for message in raw
            for job_id in JOB_ID.findall(message.decode("utf-8", "replace"))}
