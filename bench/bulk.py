"""Bulk rows for the scale test, written with SQLAlchemy core straight into the service's tables.

One project; jobs with ids that sort by time like the API's (`ftjob-<ms><random>`), a status
mix of a busy project (90% succeeded, 7% failed, 3% cancelled, two running), and events:
half on one long job (what a deep events page reads), the rest spread over the others.
"""

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tunesmith.db.models import Job, JobEvent

BATCH_ROWS = 10_000
RUNNING_EVERY = 50_000  # two running jobs in 100k


@dataclass
class ScaleData:
    project_id: str
    file_id: str
    spec: dict[str, Any]
    first_ms: int  # the oldest bulk job's id clock; every bulk job is older than "now"
    jobs: int = 0
    events: int = 0
    long_job_events: int = 0

    @property
    def long_job_id(self) -> str:
        return job_id(self.first_ms, 0)


def job_id(first_ms: int, index: int) -> str:
    """Like the API's ids (a millisecond clock, then 12 hex digits), but deterministic."""
    return f"ftjob-{first_ms + index:012x}{index:012x}"


def insert_rows(connection: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert in batches of 10k rows with core's executemany, which SQLAlchemy sends as
    multi-row INSERT ... VALUES statements under PostgreSQL's parameter limit, from one
    cached statement. (`insert().values([...])` compiles a new 60k-parameter statement for
    each batch: ten times slower here, ~9 min for the 1M events.)"""
    for start in range(0, len(rows), BATCH_ROWS):
        connection.execute(table.insert(), rows[start:start + BATCH_ROWS])


def _status(index: int) -> str:
    if index and index % RUNNING_EVERY == 0:
        return "running"
    bucket = index % 100
    return "succeeded" if bucket < 90 else "failed" if bucket < 97 else "cancelled"


def _job_row(data: ScaleData, index: int) -> dict[str, Any]:
    ms = data.first_ms + index
    status = _status(index)
    done = status in ("succeeded", "failed", "cancelled")
    return {
        "id": job_id(data.first_ms, index), "project_id": data.project_id, "model": "tiny-llama",
        "training_file_id": data.file_id, "validation_file_id": None,
        "method_type": "supervised", "tuning_type": "lora", "spec": data.spec,
        "hyperparameters": {"n_epochs": 3, "batch_size": 8, "learning_rate": 2e-4},
        "status": status,
        "error": {"code": "internal", "message": "bench", "param": None}
        if status == "failed" else None,
        "fine_tuned_model": f"ft:tiny-llama:{data.project_id}:{index}"
        if status == "succeeded" else None,
        "suffix": None, "seed": 42,
        # The oldest job alone carries a rare label: a metadata filter must find it.
        "metadata": {"team": "rare" if index == 0 else f"t{index % 10}"},
        "progress": {"step": 6, "total_steps": 6, "epoch": 3.0},
        "last_metrics": {"step": 6, "loss": 1.5}, "trained_tokens": 1000,
        "result_files": ["adapter/adapter_model.safetensors"] if status == "succeeded" else [],
        "attempt": 1, "max_attempts": 3,
        # Running jobs keep a lease far ahead, so the API's reaper leaves them be.
        "worker_id": "bench:0" if not done else None,
        "lease_expires_at": time.time() + 10 * 365 * 86400 if not done else None,
        "dispatched_at": ms / 1000, "created_at": ms // 1000, "started_at": ms // 1000,
        "finished_at": ms // 1000 + 60 if done else None,
    }


def event_row(job: str, created_at: int, step: int) -> dict[str, Any]:
    loss = 2.0 / (1 + step / 100)
    return {"job_id": job, "created_at": created_at, "level": "info", "type": "metrics",
            "message": f"step {step}: step={step}, loss={loss:.4g}",
            "data": {"step": step, "loss": loss}}


def grow(engine: Engine, data: ScaleData, *, jobs: int, events: int) -> None:
    """Add jobs (newer than those already there) and events until the totals are reached."""
    new_jobs = range(data.jobs, jobs)
    new_events = events - data.events
    long_share = new_events // 2
    spread = new_events - long_share
    per_job, extra = divmod(spread, max(len(new_jobs), 1))
    with engine.begin() as connection:
        for start in range(new_jobs.start, new_jobs.stop, BATCH_ROWS):
            batch = range(start, min(start + BATCH_ROWS, new_jobs.stop))
            insert_rows(connection, Job.__table__, [_job_row(data, i) for i in batch])
            rows = [event_row(job_id(data.first_ms, i), (data.first_ms + i) // 1000, step)
                    for i in batch for step in range(per_job + (1 if i - new_jobs.start < extra
                                                                 else 0))]
            if rows:
                insert_rows(connection, JobEvent.__table__, rows)
        created = data.first_ms // 1000
        for start in range(0, long_share, BATCH_ROWS):
            steps = range(data.long_job_events + start,
                          data.long_job_events + min(start + BATCH_ROWS, long_share))
            insert_rows(connection, JobEvent.__table__,
                        [event_row(data.long_job_id, created, s) for s in steps])
    data.jobs, data.events = jobs, events
    data.long_job_events += long_share
    # Fresh statistics, as autovacuum would give a table this size before long.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("VACUUM ANALYZE jobs"))
        connection.execute(sa.text("VACUUM ANALYZE job_events"))


def counts(engine: Engine, data: ScaleData) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            "jobs": connection.scalar(sa.select(sa.func.count()).select_from(Job).where(
                Job.project_id == data.project_id)),
            "long_job_events": connection.scalar(sa.select(sa.func.count()).select_from(
                JobEvent).where(JobEvent.job_id == data.long_job_id)),
            "events": connection.scalar(sa.select(sa.func.count()).select_from(JobEvent)),
        }


def deep_job_id(engine: Engine, data: ScaleData, depth: float = 0.9) -> str:
    """The id `depth` of the way down the project's list (newest first): a deep `after`."""
    with engine.connect() as connection:
        total = connection.scalar(sa.select(sa.func.count()).select_from(Job).where(
            Job.project_id == data.project_id))
        return connection.scalar(sa.select(Job.id).where(Job.project_id == data.project_id)
                                 .order_by(Job.id.desc()).offset(int(total * depth)).limit(1))


def deep_event_seq(engine: Engine, data: ScaleData, depth: float = 0.9) -> int:
    with engine.connect() as connection:
        return connection.scalar(sa.select(JobEvent.seq).where(
            JobEvent.job_id == data.long_job_id).order_by(JobEvent.seq.desc())
            .offset(int(data.long_job_events * depth)).limit(1))
