"""A job's results file, as OpenAI makes it: a CSV of the logged steps, stored as a File of
the job's project (purpose `fine-tune-results`) whose id the job lists in `result_files`,
so `client.files.content(job.result_files[0])` reads it.

Written by `change_status` as the job enters a final state, whoever ends it (its worker,
the reaper, a cancel of a paused job), so no way of ending a job that trained skips it."""

import csv
import hashlib
import io
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tunesmith import storage
from tunesmith.db.models import File, JobEvent
from tunesmith.ids import new_id

FILENAME = "step_metrics.csv"
# OpenAI's columns, each with the event keys it is read from, first found wins (PPO logs
# its loss under the trainer's name only).
COLUMNS: dict[str, tuple[str, ...]] = {
    "train_loss": ("train_loss", "loss"),
    "train_accuracy": ("train_mean_token_accuracy",),
    "valid_loss": ("valid_loss",),
    "valid_mean_token_accuracy": ("valid_mean_token_accuracy",),
}


def step_rows(metrics: Iterable[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """One row per logged step, from the job's metrics events oldest first: a step's
    training and validation logs join in one row; a step logged again after a resume
    keeps its latest values. Each stage of a multi-stage job has its own steps."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for data in metrics:
        if not data or "step" not in data:
            continue
        values = {column: next(data[k] for k in keys if k in data)
                  for column, keys in COLUMNS.items() if any(k in data for k in keys)}
        if values:
            step = int(data["step"])
            rows.setdefault((data.get("stage") or "", step), {"step": step}).update(values)
    return list(rows.values())


def to_csv(rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["step", *COLUMNS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def add_results_file(session: Session, job_id: str, project_id: str) -> list[str]:
    """Write the job's results CSV and add its File row to `session` (the caller commits
    it with the job's final status). Returns the ids for `result_files`: none for a job
    that logged no step."""
    metrics = session.scalars(sa.select(JobEvent.data).where(
        JobEvent.job_id == job_id, JobEvent.type == "metrics").order_by(JobEvent.seq)).all()
    rows = step_rows(metrics)
    if not rows:
        return []
    content = to_csv(rows)
    file_id = new_id("file")
    path = storage.file_path(file_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(content)
    partial.rename(path)
    storage.keep_file(file_id)
    session.add(File(id=file_id, project_id=project_id, filename=FILENAME,
                     purpose="fine-tune-results", bytes=len(content),
                     sha256=hashlib.sha256(content).hexdigest(), format="csv",
                     row_count=len(rows)))
    return [file_id]
