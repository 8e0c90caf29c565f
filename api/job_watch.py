"""One poll loop per API process that every open event stream waits on.

A stream holds neither a database connection nor a thread while it waits. This loop reads,
for all watched jobs at once, each job's status, its events newer than the last poll and
which watched keys are still live, in one short checkout of a pooled connection; it keeps
each job's recent events, serialised once, and wakes the job's streams. Fifty streams on one
job that logs ten events a second cost one query a poll, not five hundred reads a second; a
stream behind the kept events (a reconnect far back) reads its backlog itself.
"""

import asyncio
import json
import logging
from collections import deque
from dataclasses import dataclass, field

import anyio
import sqlalchemy as sa
from anyio import to_thread

from api.serializers import event_object
from tunesmith.db.models import Job, JobEvent
from tunesmith.db.session import new_session
from tunesmith.keys import live_key_hashes

log = logging.getLogger(__name__)

KEPT_EVENTS = 1000  # per watched job
READ_LIMIT = 500  # events one query reads


@dataclass(frozen=True)
class StreamEvent:
    seq: int
    id: str
    json: str  # strict JSON (no NaN: event_object cleans it)


def stream_events(rows: list[JobEvent]) -> list[StreamEvent]:
    return [StreamEvent(row.seq, obj["id"], json.dumps(obj, allow_nan=False))
            for row in rows for obj in (event_object(row),)]


@dataclass
class JobView:
    """What the last poll saw of a job. `events` holds every event with a seq above `since`
    (up to the newest seen), oldest first, and the status was read before them: an event
    written with a status change is always among them."""

    status: str | None  # None: the job is gone
    since: int
    events: deque[StreamEvent] = field(default_factory=lambda: deque(maxlen=KEPT_EVENTS))

    @property
    def newest(self) -> int:
        return self.events[-1].seq if self.events else self.since

    def after(self, seq: int) -> list[StreamEvent] | None:
        """The kept events after `seq`, or None when some of them are no longer kept."""
        if seq < self.since:
            return None
        return [event for event in self.events if event.seq > seq]

    def keep(self, new: list[StreamEvent]) -> None:
        for event in new:
            if len(self.events) == self.events.maxlen:
                self.since = self.events.popleft().seq
            self.events.append(event)


@dataclass(eq=False)
class Watch:
    """One open stream's interest in a job, counted against its key's cap."""

    job_id: str
    key_hash: str
    # Set on every poll that changed something, and at the start so the stream reads at once.
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    key_live: bool = True

    def __post_init__(self) -> None:
        self.changed.set()


def _poll(views: dict[str, JobView | None], key_hashes: set[str]
          ) -> tuple[dict[str, JobView], set[str]]:
    """New views of the jobs. A view is never changed once made: streams read the old ones
    on the event loop while this runs in a thread."""
    with new_session() as session:
        statuses = dict(session.execute(
            sa.select(Job.id, Job.status).where(Job.id.in_(views))).tuples().all())
        result = {}
        for job_id, old in views.items():
            status = statuses.get(job_id)
            if old is None:  # first poll of this job: keep what comes from now on
                newest = session.scalar(sa.select(sa.func.max(JobEvent.seq))
                                        .where(JobEvent.job_id == job_id)) or 0
                result[job_id] = JobView(status, newest)
                continue
            rows = session.scalars(
                sa.select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > old.newest)
                .order_by(JobEvent.seq).limit(READ_LIMIT)).all()
            if not rows and status == old.status:
                result[job_id] = old  # nothing new: no copy
                continue
            view = JobView(status, old.since, deque(old.events, maxlen=KEPT_EVENTS))
            view.keep(stream_events(list(rows)))
            if len(rows) == READ_LIMIT:  # more to read next poll: the status may be ahead
                view.status = old.status
            result[job_id] = view
        live = live_key_hashes(session, key_hashes)
    return result, live


class JobWatcher:
    def __init__(self, poll_seconds: float) -> None:
        self.poll_seconds = poll_seconds
        self._watches: set[Watch] = set()
        self.views: dict[str, JobView] = {}
        self._task: asyncio.Task[None] | None = None
        # The poll runs one at a time in a worker thread of its own, so that it never waits
        # behind (or holds up) the thread pool that serves the other routes.
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
            jobs = {w.job_id for w in watches}
            self.views = {job_id: view for job_id, view in self.views.items() if job_id in jobs}
            try:
                views, live = await to_thread.run_sync(
                    _poll, {job_id: self.views.get(job_id) for job_id in jobs},
                    {w.key_hash for w in watches}, limiter=self._limiter)
            except Exception:  # the database away: streams keep waiting, the loop retries
                log.warning("event stream poll failed; retrying", exc_info=True)
            else:
                for watch in watches:
                    old, new = self.views.get(watch.job_id), views[watch.job_id]
                    changed = (old is None or (old.newest, old.status) != (new.newest,
                                                                             new.status))
                    if changed or watch.key_live != (watch.key_hash in live):
                        watch.key_live = watch.key_hash in live
                        watch.changed.set()
                self.views.update(views)
            await asyncio.sleep(self.poll_seconds)
        self.views.clear()  # no stream left: a later one starts from a fresh poll


def read_backlog(job_id: str, key_hash: str,
                 after_seq: int) -> tuple[str | None, bool, list[StreamEvent]]:
    """For a stream behind the kept events: the job's status, whether the key is live, and
    up to READ_LIMIT events after `after_seq`. Status first, for the reason JobView says."""
    with new_session() as session:
        status = session.scalar(sa.select(Job.status).where(Job.id == job_id))
        live = bool(live_key_hashes(session, {key_hash}))
        rows = session.scalars(
            sa.select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > after_seq)
            .order_by(JobEvent.seq).limit(READ_LIMIT)).all()
        return status, live, stream_events(list(rows))
