"""What a training child knows about its job: the spec, its folders, its device, its events."""

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tunesmith import storage
from tunesmith.db.models import Job
from tunesmith.db.session import session_scope
from tunesmith.jobs.events import Level, add_event
from tunesmith.json_input import JSONInputError, read_rows
from tunesmith.settings import settings
from tunesmith.spec.job import JobSpec, file_uses
from worker.db_retry import with_db_retry
from worker.failures import InvalidData


@dataclass
class JobContext:
    job_id: str
    spec: JobSpec
    device: str  # "cuda" or "cpu"
    seed: int
    # Set by SIGTERM (cancel, time limit, shutdown): the trainer checkpoints and stops.
    stop: threading.Event = field(default_factory=threading.Event)
    # Where an objective with several stages ("rlhf") writes; "" for one-stage jobs.
    stage: str = ""

    @property
    def job_dir(self) -> Path:
        return storage.job_dir(self.job_id)

    @property
    def artifacts_dir(self) -> Path:
        return storage.artifacts_dir(self.job_id)

    @property
    def checkpoints_dir(self) -> Path:
        folder = storage.checkpoints_dir(self.job_id)
        return folder / self.stage if self.stage else folder

    @property
    def is_main(self) -> bool:
        """Rank 0 of a multi-process job (or the only process): the one that reports."""
        return int(os.environ.get("RANK", "0")) == 0

    @property
    def world_size(self) -> int:
        return int(os.environ.get("WORLD_SIZE", "1"))

    def rows(self, file_id: str) -> list[dict[str, Any]]:
        """The rows of an uploaded file, read as the upload check read them (same reader,
        same limits), so a row it accepted cannot fail here; if one does, the job fails
        as bad data naming the field and the line, not as `internal`."""
        try:
            return [row for _, row in read_rows(storage.local_file(file_id),
                                                 max_line_bytes=settings.max_line_bytes)]
        except JSONInputError as exc:
            field = next((use.field for use in file_uses(self.spec) if use.file_id == file_id),
                         "training_file")
            raise InvalidData(f"{field}: file '{file_id}' {exc.describe()}", field) from exc

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint of this stage, to resume from after a crash."""
        folder = self.checkpoints_dir
        # A job resumed on another node finds its checkpoints in the store (uploaded as each
        # was saved, trainer_state.json last), not on this node's scratch.
        names = {p.name for p in folder.glob("checkpoint-*")} | set(
            storage.stored_folders(self.job_id, folder))
        # The trainer writes trainer_state.json last: a checkpoint without a readable one
        # was cut short by the crash we are recovering from, and the one before it is used.
        steps = [n for n in names if n.rsplit("-", 1)[1].isdigit()]
        for name in sorted(steps, key=lambda n: int(n.rsplit("-", 1)[1]), reverse=True):
            path = folder / name
            try:
                json.loads((storage.fetch_job_path(self.job_id, path)
                            / "trainer_state.json").read_text())
            except (OSError, ValueError):
                continue
            return path
        return None

    # -- writes to the job row; each retried through a database restart ---------------

    def event(self, message: str, *, level: Level = "info", type: str = "message",
              data: dict[str, Any] | None = None) -> None:
        if not self.is_main:  # the other ranks of a data-parallel job stay quiet
            return
        def write() -> None:
            with session_scope() as session:
                add_event(session, self.job_id, message, level=level, type=type, data=data)

        with_db_retry(write, what="event")

    def update_job(self, **values: Any) -> None:
        if not self.is_main:  # the other ranks of a data-parallel job stay quiet
            return
        def write() -> None:
            with session_scope() as session:
                session.execute(sa.update(Job).where(Job.id == self.job_id).values(**values))

        with_db_retry(write, what="job update")

    def record_stage_hyperparameters(self, values: dict[str, Any]) -> None:
        """A multi-stage job's resolved hyperparameters sit on the job under each stage's name."""
        if not self.is_main:  # the other ranks of a data-parallel job stay quiet
            return
        def write() -> None:
            with session_scope() as session:
                job = session.get(Job, self.job_id, with_for_update=True)
                if job is not None:
                    job.hyperparameters = {**(job.hyperparameters or {}), self.stage: values}

        with_db_retry(write, what="stage hyperparameters")

    def metrics(self, data: dict[str, Any], *, progress: dict[str, Any],
                trained_tokens: int | None) -> None:
        """One metrics event plus the job's progress and last metrics, in one transaction."""
        if not self.is_main:  # the other ranks of a data-parallel job stay quiet
            return
        def write() -> None:
            with session_scope() as session:
                summary = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in data.items())
                add_event(session, self.job_id, f"{self.stage + ' ' if self.stage else ''}"
                          f"step {data.get('step')}: {summary}", type="metrics", data=data)
                values: dict[str, Any] = {"progress": progress, "last_metrics": data}
                if trained_tokens is not None:
                    values["trained_tokens"] = trained_tokens
                session.execute(sa.update(Job).where(Job.id == self.job_id).values(**values))

        with_db_retry(write, what="metrics")

    def checkpoint(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        """List the trainer's checkpoint at `path` (worker/listed_checkpoints.py)."""
        from worker import listed_checkpoints

        listed_checkpoints.record(self, step, path, metrics)
