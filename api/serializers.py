"""Rows as the JSON objects OpenAI's API returns, plus our extra fields."""

import time
from typing import Any

from tunesmith.db.models import Artifact, Checkpoint, File, Job, JobEvent
from tunesmith.jobs.events import event_public_id, finite_json
from tunesmith.jobs.states import TERMINAL, JobStatus
from tunesmith.spec.job import JobSpec, stored_spec


def file_object(file: File) -> dict[str, Any]:
    # No `expires_at` or `status_details`: our files never expire and carry no status
    # details, and OpenAI's schema types both as integer and string, never null.
    return {
        "id": file.id, "object": "file", "bytes": file.bytes, "created_at": file.created_at,
        "filename": file.filename, "purpose": file.purpose, "status": file.status,
        # Ours: what validation found.
        "format": file.format, "rows": file.row_count, "sha256": file.sha256,
    }


# OpenAI's job statuses; our finer ones show as the OpenAI status a client should act on,
# and in full in `status_detail`. A cancelling or pausing job still holds its worker
# (running); a paused one waits, holding none, for `resume` (queued).
PUBLIC_STATUS = {JobStatus.cancelling: JobStatus.running, JobStatus.pausing: JobStatus.running,
                 JobStatus.paused: JobStatus.queued}


def _fill_auto(requested: dict[str, Any], resolved: dict[str, Any]) -> dict[str, Any]:
    """The requested hyperparameters with each "auto" replaced by the value that ran."""
    return {key: resolved.get(key, value) if value == "auto" else value
            for key, value in requested.items()}


def _resolved_by_stage(job: Job, spec: JobSpec) -> dict[str, dict[str, Any]]:
    """What ran, per stage of the method: "" for a one-stage method, else each stage's name
    (an rlhf job records "sft", "reward" and "ppo")."""
    resolved = job.hyperparameters or {}
    if spec.method.stages:
        return {k: v for k, v in resolved.items() if isinstance(v, dict)}
    return {"": resolved}


def _method(job: Job, spec: JobSpec) -> dict[str, Any]:
    """The spec's method, with the values that ran in place of "auto" once they are known."""
    method: dict[str, Any] = spec.method.model_dump(mode="json")
    config = method[spec.method.type]
    for stage, resolved in _resolved_by_stage(job, spec).items():
        if not resolved:
            continue
        holder = config if not stage else config.get(stage)
        if not isinstance(holder, dict):
            continue
        if isinstance(holder.get("hyperparameters"), dict):
            holder["hyperparameters"] = _fill_auto(holder["hyperparameters"], resolved)
        else:  # an rlhf job's PPO stage keeps its hyperparameters in `ppo` itself
            holder.update(_fill_auto(holder, resolved))
    return method


def _openai_hyperparameters(job: Job, spec: JobSpec) -> dict[str, Any]:
    """The deprecated top-level `hyperparameters`: of the stage OpenAI's fields describe
    (a staged method's first stage)."""
    stage = spec.method.stages[0] if spec.method.stages else ""
    resolved = _resolved_by_stage(job, spec).get(stage, {})
    pick = {**spec.method.hyperparameters.model_dump(mode="json"), **resolved}
    return {k: pick[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier")}


def _progress(job: Job) -> dict[str, Any]:
    progress = dict(job.progress or {})
    step, total = progress.get("step"), progress.get("total_steps")
    rate = progress.get("steps_per_second")
    if job.status == JobStatus.running and step and total and rate:
        progress["eta_seconds"] = round(max(total - step, 0) / rate, 1)
    return progress


def _openai_integrations(integrations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI's enum holds only wandb (every integration the job named is in `tracking`),
    and its `tags` is a list or absent, never null."""
    return [{"type": "wandb", "wandb": {k: v for k, v in i["wandb"].items()
                                        if v is not None or k in ("name", "entity")}}
            for i in integrations if i.get("type") == "wandb"]


def job_object(job: Job) -> dict[str, Any]:
    estimated = None
    progress = _progress(job)
    if "eta_seconds" in progress:
        estimated = int(time.time() + progress["eta_seconds"])
    status = JobStatus(job.status)
    spec = stored_spec(job.spec)
    method = _method(job, spec)
    integrations = [i.model_dump(mode="json") for i in spec.integrations or []]
    body = {
        "id": job.id, "object": "fine_tuning.job", "created_at": job.created_at,
        "finished_at": job.finished_at, "model": job.model,
        "fine_tuned_model": job.fine_tuned_model, "organization_id": job.project_id,
        "status": PUBLIC_STATUS.get(status, status).value,
        "training_file": job.training_file_id,
        "validation_file": job.validation_file_id,
        "hyperparameters": _openai_hyperparameters(job, spec),
        "result_files": job.result_files or [], "trained_tokens": job.trained_tokens,
        "error": job.error, "seed": job.seed, "user_provided_suffix": job.suffix,
        "metadata": job.metadata_, "estimated_finish": estimated,
        "integrations": _openai_integrations(integrations),
        # Ours.
        "status_detail": status.value, "objective": method,
        "tuning": spec.tuning.model_dump(mode="json"),
        "resources": spec.resources.model_dump(mode="json"),
        "tracking": integrations,
        "resolved_hyperparameters": job.hyperparameters or {}, "progress": progress,
        "last_metrics": job.last_metrics or {}, "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "started_at": job.started_at, "done": status in TERMINAL,
    }
    if spec.method.openai:
        body["method"] = method
    return body


def event_object(event: JobEvent) -> dict[str, Any]:
    # finite_json again on the way out: rows stored before add_event cleaned them may
    # hold NaN, which strict JSON cannot carry.
    return {
        "id": event_public_id(event.seq), "object": "fine_tuning.job.event",
        "created_at": event.created_at,
        # Levels are OpenAI's (info, warn, error: add_event allows no other); `data` is
        # always an object, as OpenAI's schema types it.
        "level": event.level, "message": event.message,
        "data": finite_json(event.data or {}), "type": event.type,
    }


def checkpoint_model_name(job: Job, step: int) -> str:
    """OpenAI's name of a checkpoint as a model: the job's fine-tuned model plus the step.
    Before the job has succeeded that name is not set yet; it is the one it will get."""
    return f"{job.fine_tuned_model or fine_tuned_model_name(job)}:ckpt-step-{step}"


def fine_tuned_model_name(job: Job) -> str:
    suffix = f":{job.suffix}" if job.suffix else ""
    return f"ft:{job.model}:{job.project_id}{suffix}:{job.id}"


def checkpoint_object(checkpoint: Checkpoint, job: Job) -> dict[str, Any]:
    return {
        "id": checkpoint.id, "object": "fine_tuning.job.checkpoint",
        "created_at": checkpoint.created_at,
        "fine_tuned_model_checkpoint": checkpoint_model_name(job, checkpoint.step),
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


def list_object(data: list[dict[str, Any]], *, has_more: bool,
                empty_id: str | None = None) -> dict[str, Any]:
    """OpenAI's list. `empty_id` stands for first_id and last_id of an empty page: null, or
    "" where OpenAI's schema types them as strings only (the files list)."""
    return {"object": "list", "data": data, "has_more": has_more,
            "first_id": data[0]["id"] if data and "id" in data[0] else empty_id,
            "last_id": data[-1]["id"] if data and "id" in data[-1] else empty_id}
