"""The tables: projects and their keys, files, jobs with their events, checkpoints, artifacts,
webhook endpoints and their deliveries, exports."""

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from tunesmith.db.base import Base, JSONType, now


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    created_at: Mapped[int] = mapped_column(sa.BigInteger, default=now)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(sa.ForeignKey("projects.id"), index=True)
    # Shown in listings so a person can tell keys apart; the secret itself is never stored.
    prefix: Mapped[str] = mapped_column(sa.String(16))
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[int] = mapped_column(sa.BigInteger, default=now)
    revoked_at: Mapped[int | None] = mapped_column(sa.BigInteger)


class ProjectRow:
    """A row a project owns, found by its public id: a project's key sees only its own."""

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(sa.ForeignKey("projects.id"))


class File(ProjectRow, Base):
    __tablename__ = "files"
    __table_args__ = (sa.Index("ix_files_project_id_id", "project_id", "id"),)

    filename: Mapped[str] = mapped_column(sa.String(255))
    purpose: Mapped[str] = mapped_column(sa.String(40))
    bytes: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    # The row format found at upload ("messages", "prompt_completion", "text", ...).
    format: Mapped[str] = mapped_column(sa.String(40))
    row_count: Mapped[int] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.String(20), default="processed")
    created_at: Mapped[int] = mapped_column(sa.BigInteger, default=now)


class Job(ProjectRow, Base):
    __tablename__ = "jobs"
    __table_args__ = (
        sa.Index("ix_jobs_project_id_id", "project_id", "id"),
        # The count of a project's queued jobs (checked on every create) and `list ?status=`
        # read this range alone, whatever other projects hold.
        sa.Index("ix_jobs_project_id_status_id", "project_id", "status", "id"),
        sa.Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        # `list ?metadata[k]=v` on PostgreSQL (jsonb @>). SQLite builds a plain index from
        # the same line, unused but harmless, so both schemas follow one declaration.
        sa.Index("ix_jobs_metadata", "metadata", postgresql_using="gin",
                 postgresql_ops={"metadata": "jsonb_path_ops"}),
    )

    # Ids sort by creation time, so keyset pagination is `ORDER BY id DESC`.
    model: Mapped[str] = mapped_column(sa.String(255))
    training_file_id: Mapped[str | None] = mapped_column(sa.ForeignKey("files.id"))
    validation_file_id: Mapped[str | None] = mapped_column(sa.ForeignKey("files.id"))
    method_type: Mapped[str] = mapped_column(sa.String(40))
    tuning_type: Mapped[str] = mapped_column(sa.String(40))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(sa.String(20))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    fine_tuned_model: Mapped[str | None] = mapped_column(sa.String(255))
    suffix: Mapped[str | None] = mapped_column(sa.String(64))
    seed: Mapped[int] = mapped_column(sa.Integer)
    metadata_: Mapped[dict[str, str] | None] = mapped_column("metadata", JSONType)
    progress: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    last_metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    trained_tokens: Mapped[int | None] = mapped_column(sa.BigInteger)
    result_files: Mapped[list[str]] = mapped_column(JSONType, default=list)
    attempt: Mapped[int] = mapped_column(sa.Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(sa.Integer)
    worker_id: Mapped[str | None] = mapped_column(sa.String(255))
    lease_expires_at: Mapped[float | None] = mapped_column(sa.Float)
    # When the job's message was last sent, or last found still waiting in the broker: the
    # reconciler's clock for queued jobs.
    dispatched_at: Mapped[float | None] = mapped_column(sa.Float)
    created_at: Mapped[int] = mapped_column(sa.BigInteger, default=now)
    started_at: Mapped[int | None] = mapped_column(sa.BigInteger)
    finished_at: Mapped[int | None] = mapped_column(sa.BigInteger)


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (sa.Index("ix_job_events_job_id_seq", "job_id", "seq"),)

    # An integer sequence gives events a total order for pagination and streaming.
    seq: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                                     primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(sa.BigInteger, default=now)
    level: Mapped[str] = mapped_column(sa.String(10), default="info")
    type: Mapped[str] = mapped_column(sa.String(20), default="message")
    message: Mapped[str] = mapped_column(sa.Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    # A multi-stage job (rlhf) restarts its step count per stage, so the path is the key.
    __table_args__ = (sa.UniqueConstraint("job_id", "path"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(sa.Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Relative to the job's folder; never an absolute path a client could steer.
    path: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[int] = mapped_column(sa.BigInteger, default=now)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (sa.UniqueConstraint("job_id", "name"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    # A path relative to the job's artifacts folder, e.g. "adapter/adapter_model.safetensors".
    name: Mapped[str] = mapped_column(sa.String(255))
    kind: Mapped[str] = mapped_column(sa.String(40))
    bytes: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[int] = mapped_column(sa.BigInteger, default=now)


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_records"

    project_id: Mapped[str] = mapped_column(sa.ForeignKey("projects.id"), primary_key=True)
    route: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    status_code: Mapped[int] = mapped_column(sa.Integer)
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[int] = mapped_column(sa.BigInteger, default=now)


class WorkerHeartbeat(Base):
    """A live training worker: the queues it consumes and when it last said so.

    The broker cannot tell (the embedded SQLAlchemy transport has no broadcast for Celery's
    ping), the database can, for Redis and the embedded broker alike: /readyz and the
    reaper read these rows; a worker that stops renewing its row counts as gone."""

    __tablename__ = "worker_heartbeats"

    hostname: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    # Comma-separated queue names, as `tunesmith worker --queues` takes them.
    queues: Mapped[str] = mapped_column(sa.String(1000))
    pid: Mapped[int] = mapped_column(sa.Integer)
    started_at: Mapped[float] = mapped_column(sa.Float)
    heartbeat_at: Mapped[float] = mapped_column(sa.Float)


class WebhookEndpoint(ProjectRow, Base):
    """A project's webhook receiver: where to send which job events, signed with `secret`."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (sa.Index("ix_webhook_endpoints_project_id_id", "project_id", "id"),)

    url: Mapped[str] = mapped_column(sa.String(2048))
    events: Mapped[list[str]] = mapped_column(JSONType)
    description: Mapped[str | None] = mapped_column(sa.String(512))
    # The signing secret (`whsec_...`), sealed by tunesmith/webhooks/secrets.py: the sender
    # needs it whole for HMAC, so it cannot be hashed as API keys are.
    secret: Mapped[str] = mapped_column(sa.String(512))
    created_at: Mapped[int] = mapped_column(sa.BigInteger, default=now)


class WebhookDelivery(Base):
    """The outbox: one event for one endpoint, written in the transaction that changed the
    job's status, and its delivery log (attempts, last answer, next try)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
        sa.Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(
        sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    # The event's id is the `webhook-id` header: the same on every retry, so a receiver can
    # drop a duplicate of an at-least-once delivery.
    event_id: Mapped[str] = mapped_column(sa.String(40))
    event_type: Mapped[str] = mapped_column(sa.String(64))
    # The exact body sent, signed and re-sent byte for byte on every attempt.
    payload: Mapped[str] = mapped_column(sa.Text)
    # pending -> delivered | failed (given up after webhook_max_attempts).
    status: Mapped[str] = mapped_column(sa.String(20), default="pending")
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(sa.Integer)
    last_error: Mapped[str | None] = mapped_column(sa.String(1000))
    next_attempt_at: Mapped[float | None] = mapped_column(sa.Float)
    # A sender holds the row until then: two senders (API replicas) never send it at once.
    claimed_until: Mapped[float | None] = mapped_column(sa.Float)
    created_at: Mapped[int] = mapped_column(sa.BigInteger, default=now)
    delivered_at: Mapped[int | None] = mapped_column(sa.BigInteger)


class Export(Base):
    """A fine-tuned model written out in a format to ship (DESIGN §8 "Exports"); a worker runs
    it like a job. Its files are in the export's folder, listed in `artifacts` (name, bytes,
    sha256) once it succeeds."""

    __tablename__ = "exports"
    __table_args__ = (sa.Index("ix_exports_job_id_id", "job_id", "id"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(sa.ForeignKey("projects.id"), index=True)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    format: Mapped[str] = mapped_column(sa.String(20))
    quantization: Mapped[str | None] = mapped_column(sa.String(20))
    # None: the job's final result; else the step of a listed checkpoint.
    checkpoint_step: Mapped[int | None] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.String(20))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    artifacts: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    worker_id: Mapped[str | None] = mapped_column(sa.String(255))
    # Renewed by the worker while it runs; the API's reaper requeues (or, past max_attempts,
    # fails) an export whose lease ran out, as it does for jobs.
    lease_expires_at: Mapped[float | None] = mapped_column(sa.Float)
    # When its message was last sent (None: at creation): the reaper sends again a queued
    # export whose message the broker no longer holds (tunesmith/reaper.py).
    dispatched_at: Mapped[float | None] = mapped_column(sa.Float)
    attempt: Mapped[int] = mapped_column(sa.Integer, default=0)
    created_at: Mapped[int] = mapped_column(sa.BigInteger, default=now)
    started_at: Mapped[int | None] = mapped_column(sa.BigInteger)
    finished_at: Mapped[int | None] = mapped_column(sa.BigInteger)
