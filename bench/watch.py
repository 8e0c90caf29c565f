"""Fine-grained timing of jobs: a thread that polls the database every few tens of ms.

Events and jobs carry `created_at` in whole seconds, too coarse for a dispatch that takes
a fraction of one; the watcher records when each status and each event first became
visible (wall clock, `time.time()`), and the training child's peak RSS from /proc.
"""

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tunesmith.db.models import Job, JobEvent

TERMINAL = {"succeeded", "failed", "cancelled"}
# Events of concurrent jobs can commit out of sequence order; look back this far each poll.
SEQ_LOOKBACK = 200


@dataclass
class SeenEvent:
    seq: int
    message: str
    type: str
    data: dict[str, Any] | None
    seen_at: float


@dataclass
class JobTrace:
    job_id: str
    status_seen: dict[str, float] = field(default_factory=dict)
    events: list[SeenEvent] = field(default_factory=list)
    worker_id: str | None = None
    dispatched_at: float | None = None
    child_pid: int | None = None
    child_peak_rss_kib: int | None = None

    @property
    def done(self) -> bool:
        return any(s in self.status_seen for s in TERMINAL)

    @property
    def final_status(self) -> str | None:
        return next((s for s in TERMINAL if s in self.status_seen), None)

    def first(self, prefix: str) -> SeenEvent | None:
        """The first event whose message starts with prefix."""
        return next((e for e in self.events if e.message.startswith(prefix)), None)

    def metrics(self) -> list[SeenEvent]:
        return [e for e in self.events if e.type == "metrics"]


def _peak_rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class Watcher:
    """Polls the jobs it was told about until stopped; use as a context manager."""

    def __init__(self, engine: Engine, *, interval: float = 0.05) -> None:
        self.engine, self.interval = engine, interval
        self.traces: dict[str, JobTrace] = {}
        self._seen_seqs: set[int] = set()
        self._last_seq = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="job-watcher")
        self.cpu_share = 0.0  # of one core, over the watcher's life (set when it stops)

    def __enter__(self) -> "Watcher":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def watch(self, job_id: str) -> JobTrace:
        with self._lock:
            return self.traces.setdefault(job_id, JobTrace(job_id))

    def wait(self, job_ids: list[str], *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(self.traces[j].done for j in job_ids):
            if time.monotonic() > deadline:
                waiting = [j for j in job_ids if not self.traces[j].done]
                raise TimeoutError(f"{len(waiting)} jobs not finished after {timeout:.0f} s, "
                                   f"e.g. {waiting[:3]}")
            time.sleep(self.interval)

    def _run(self) -> None:
        # Its own CPU time, to show what the watching costs the machine it measures.
        started_cpu, started = time.thread_time(), time.monotonic()
        while not self._stop.is_set():
            # A busy database misses one round, not the whole trace.
            with contextlib.suppress(sa.exc.OperationalError):
                self._poll()
            self._stop.wait(self.interval)
        self.cpu_share = (time.thread_time() - started_cpu) / max(time.monotonic() - started,
                                                                  1e-9)

    def _poll(self) -> None:
        with self._lock:
            ids = [j for j, t in self.traces.items() if not t.done]
        if not ids:
            return
        with self.engine.connect() as connection:
            # Jobs first: the events query then sees every event committed with a status
            # change it has just seen (they share a transaction), the last one included.
            jobs = connection.execute(sa.select(
                Job.id, Job.status, Job.worker_id, Job.dispatched_at).where(Job.id.in_(ids))).all()
            events = connection.execute(sa.select(
                JobEvent.seq, JobEvent.job_id, JobEvent.message, JobEvent.type, JobEvent.data)
                .where(JobEvent.job_id.in_(ids), JobEvent.seq > self._last_seq - SEQ_LOOKBACK)
                .order_by(JobEvent.seq)).all()
        now = time.time()
        for seq, job_id, message, type_, data in events:
            if seq in self._seen_seqs:
                continue
            self._seen_seqs.add(seq)
            self._last_seq = max(self._last_seq, seq)
            trace = self.traces[job_id]
            trace.events.append(SeenEvent(seq, message, type_, data, now))
            if message.startswith("Training process started") and data:
                trace.child_pid = data.get("pid")
        for job_id, status, worker_id, dispatched_at in jobs:
            trace = self.traces[job_id]
            trace.status_seen.setdefault(status, now)
            trace.worker_id = worker_id or trace.worker_id
            trace.dispatched_at = dispatched_at
            if trace.child_pid and not trace.done:
                # VmHWM is the peak so far; the last reading before the child exits wins.
                trace.child_peak_rss_kib = _peak_rss_kib(trace.child_pid) or \
                    trace.child_peak_rss_kib
