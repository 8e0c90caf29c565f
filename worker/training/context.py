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
from worker.process.db_retry import with_db_retry
from worker.training.failures import InvalidData


@dataclass
class JobContext:
    job_id: str
    spec: JobSpec
    device: str  # "cuda" or "cpu"
    seed: int
    # Set by SIGTERM (cancel, time limit, shutdown): the trainer checkpoints and stops.
    stop: threading.Event = field(default_factory=threading.Event)
    # The stage of a multi-stage objective ("rlhf") this context runs; "" for one-stage jobs.
    # The one place the label is applied: every event, metric, progress and hyperparameter
    # record written through this context carries it, so callers never handle it.
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

    def rows(self, file_id: str | None) -> list[dict[str, Any]]:
        """The rows of an uploaded file, read as the upload check read them (same reader,
        same limits), so a row it accepted cannot fail here; if one does, the job fails
        as bad data naming the field and the line, not as `internal`."""
        if file_id is None:  # the spec requires the file for every method that reads it
            raise ValueError("this method reads a training_file and the job names none")
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

    def _labelled(self, message: str, data: dict[str, Any] | None
                  ) -> tuple[str, dict[str, Any] | None]:
        """A stage's events say so: "sft: Training to step 40", data["stage"] = "sft"."""
        if not self.stage:
            return message, data
        return f"{self.stage}: {message}", {**(data or {}), "stage": self.stage}

    def event(self, message: str, *, level: Level = "info", type: str = "message",
              data: dict[str, Any] | None = None) -> None:
        if not self.is_main:  # the other ranks of a data-parallel job stay quiet
            return
        message, data = self._labelled(message, data)

        def write() -> None:
            with session_scope() as session:
                add_event(session, self.job_id, message, level=level, type=type, data=data)

        with_db_retry(write, what="event")

    def record_hyperparameters(self, values: dict[str, Any]) -> None:
        """The hyperparameters that run, on the job: the job's own, or under the stage's
        name for a stage of a multi-stage job (each stage keeps the others')."""
        if not self.is_main:  # the other ranks of a data-parallel job stay quiet
            return

        def write() -> None:
            with session_scope() as session:
                job = session.get(Job, self.job_id, with_for_update=True)
                if job is not None:
                    job.hyperparameters = ({**(job.hyperparameters or {}), self.stage: values}
                                           if self.stage else values)

        with_db_retry(write, what="hyperparameters")

    def metrics(self, data: dict[str, Any], *, progress: dict[str, Any],
                trained_tokens: int | None) -> None:
        """One metrics event plus the job's progress and last metrics, in one transaction."""
        if not self.is_main:  # the other ranks of a data-parallel job stay quiet
            return
        summary = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in data.items())
        message, labelled = self._labelled(f"step {data.get('step')}: {summary}", data)
        data = labelled or {}
        progress = {**progress, "stage": self.stage or None}

        def write() -> None:
            with session_scope() as session:
                add_event(session, self.job_id, message, type="metrics", data=data)
                values: dict[str, Any] = {"progress": progress, "last_metrics": data}
                if trained_tokens is not None:
                    values["trained_tokens"] = trained_tokens
                session.execute(sa.update(Job).where(Job.id == self.job_id).values(**values))

        with_db_retry(write, what="metrics")

    def checkpoint(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        """List the trainer's checkpoint at `path` (worker/training/listed_checkpoints.py)."""
        from worker.training import listed_checkpoints
        listed_checkpoints.record(self, step, path, metrics)
