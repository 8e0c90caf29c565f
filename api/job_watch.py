"""One poll loop per API process that every open event stream waits on.

A stream holds neither a database connection nor a thread while it waits: this loop reads,
for all watched jobs at once, each job's newest event and status and which watched keys are
still live, in one short checkout of a pooled connection, then wakes the streams whose job
or key changed. Fifty streams on one job cost one poll, not fifty.
"""

import asyncio
import logging
from dataclasses import dataclass, field

import anyio
import sqlalchemy as sa
from anyio import to_thread

from tunesmith.db.models import Job, JobEvent
from tunesmith.db.session import new_session
from tunesmith.keys import live_key_hashes

log = logging.getLogger(__name__)

# What a stream is woken on: the job's newest event seq, its status (None: gone), and
# whether the stream's key is still live.
Signature = tuple[int | None, str | None, bool]


@dataclass(eq=False)
class Watch:
    """One open stream's interest in a job, counted against its key's cap."""

    job_id: str
    key_hash: str
    # Set on every change the loop sees, and at the start so the stream reads once at once.
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    signature: Signature | None = None

    def __post_init__(self) -> None:
        self.changed.set()


def _read_state(job_ids: set[str], key_hashes: set[str]
                ) -> tuple[dict[str, tuple[int | None, str]], set[str]]:
    with new_session() as session:
        statuses = dict(session.execute(
            sa.select(Job.id, Job.status).where(Job.id.in_(job_ids))).tuples().all())
        newest = dict(session.execute(
            sa.select(JobEvent.job_id, sa.func.max(JobEvent.seq))
            .where(JobEvent.job_id.in_(job_ids)).group_by(JobEvent.job_id)).tuples().all())
        live = live_key_hashes(session, key_hashes)
    return {job_id: (newest.get(job_id), status) for job_id, status in statuses.items()}, live


class JobWatcher:
    def __init__(self, poll_seconds: float) -> None:
        self.poll_seconds = poll_seconds
        self._watches: set[Watch] = set()
        self._task: asyncio.Task[None] | None = None
        # The poll runs in a worker thread of its own so that it never waits behind (or
        # holds up) the thread pool that serves the other routes.
        self._limiter = anyio.CapacityLimiter(1)

    def open_streams(self, key_hash: str) -> int:
        return sum(1 for watch in self._watches if watch.key_hash == key_hash)

    def reserve(self, job_id: str, key_hash: str, *, cap: int) -> Watch | None:
        """A watch for a new stream, or None when the key already has `cap` open. Runs on
        the event loop without awaiting, so the count and the add cannot interleave."""
        if self.open_streams(key_hash) >= cap:
            return None
        watch = Watch(job_id, key_hash)
        self._watches.add(watch)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run())
        return watch

    def release(self, watch: Watch) -> None:
        self._watches.discard(watch)

    async def _run(self) -> None:
        while self._watches:
            watches = list(self._watches)
            try:
                jobs, live = await to_thread.run_sync(
                    _read_state, {w.job_id for w in watches}, {w.key_hash for w in watches},
                    limiter=self._limiter)
            except Exception:  # the database away: streams keep waiting, the loop retries
                log.warning("event stream poll failed; retrying", exc_info=True)
            else:
                for watch in watches:
                    newest, status = jobs.get(watch.job_id, (None, None))
                    signature = (newest, status, watch.key_hash in live)
                    if signature != watch.signature:
                        watch.signature = signature
                        watch.changed.set()
            await asyncio.sleep(self.poll_seconds)
