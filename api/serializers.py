"""Rows as the JSON objects OpenAI's API returns, plus our extra fields."""

import time
from typing import Any

from tunesmith.db.models import Artifact, Checkpoint, File, Job, JobEvent
from tunesmith.jobs.events import event_public_id
from tunesmith.jobs.states import TERMINAL, JobStatus


def file_object(file: File) -> dict[str, Any]:
    return {
        "id": file.id, "object": "file", "bytes": file.bytes, "created_at": file.created_at,
        "filename": file.filename, "purpose": file.purpose, "status": file.status,
        "status_details": None, "expires_at": None,
        # Ours: what validation found.
        "format": file.format, "rows": file.row_count, "sha256": file.sha256,
    }


def _openai_hyperparameters(job: Job) -> dict[str, Any]:
    resolved = job.hyperparameters or {}
    requested = (job.spec.get("method", {}).get(job.method_type) or {}).get("hyperparameters", {})
    pick = {**requested, **resolved}
    return {k: pick.get(k, "auto") for k in ("n_epochs", "batch_size", "learning_rate_multiplier")}


def _progress(job: Job) -> dict[str, Any]:
    progress = dict(job.progress or {})
    step, total = progress.get("step"), progress.get("total_steps")
    rate = progress.get("steps_per_second")
    if job.status == JobStatus.running and step and total and rate:
        progress["eta_seconds"] = round(max(total - step, 0) / rate, 1)
    return progress


def job_object(job: Job) -> dict[str, Any]:
    estimated = None
    progress = _progress(job)
    if "eta_seconds" in progress:
        estimated = int(time.time() + progress["eta_seconds"])
    return {
        "id": job.id, "object": "fine_tuning.job", "created_at": job.created_at,
        "finished_at": job.finished_at, "model": job.model,
        "fine_tuned_model": job.fine_tuned_model, "organization_id": job.project_id,
        "status": job.status, "training_file": job.training_file_id,
        "validation_file": job.validation_file_id, "hyperparameters": _openai_hyperparameters(job),
        "result_files": job.result_files or [], "trained_tokens": job.trained_tokens,
        "error": job.error, "seed": job.seed, "user_provided_suffix": job.suffix,
        "metadata": job.metadata_, "estimated_finish": estimated, "integrations": [],
        "method": job.spec.get("method"),
        # Ours.
        "tuning": job.spec.get("tuning"), "resources": job.spec.get("resources"),
        "resolved_hyperparameters": job.hyperparameters or {}, "progress": progress,
        "last_metrics": job.last_metrics or {}, "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "started_at": job.started_at, "done": JobStatus(job.status) in TERMINAL,
    }


def event_object(event: JobEvent) -> dict[str, Any]:
    return {
        "id": event_public_id(event.seq), "object": "fine_tuning.job.event",
        "created_at": event.created_at, "level": event.level, "message": event.message,
        "data": event.data, "type": event.type,
    }


def checkpoint_object(checkpoint: Checkpoint, job: Job) -> dict[str, Any]:
    return {
        "id": checkpoint.id, "object": "fine_tuning.job.checkpoint",
        "created_at": checkpoint.created_at,
        "fine_tuned_model_checkpoint": f"{job.id}:ckpt-step-{checkpoint.step}",
        "fine_tuning_job_id": job.id, "step_number": checkpoint.step,
        "metrics": {"step": checkpoint.step, **(checkpoint.metrics or {})},
        # Ours: its files, one by one or as one archive.
        "files_url": f"/v1/fine_tuning/jobs/{job.id}/checkpoints/{checkpoint.id}/files",
        "archive_url": f"/v1/fine_tuning/jobs/{job.id}/checkpoints/{checkpoint.id}.tar.gz",
    }


def artifact_object(artifact: Artifact) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.artifact", "name": artifact.name, "kind": artifact.kind,
        "bytes": artifact.bytes, "sha256": artifact.sha256, "created_at": artifact.created_at,
        "url": f"/v1/fine_tuning/jobs/{artifact.job_id}/artifacts/{artifact.name}",
    }


def list_object(data: list[dict[str, Any]], *, has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more,
            "first_id": data[0]["id"] if data and "id" in data[0] else None,
            "last_id": data[-1]["id"] if data and "id" in data[-1] else None}
