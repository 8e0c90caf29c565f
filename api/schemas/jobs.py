"""`/v1/fine_tuning/jobs`: OpenAI's job object plus ours, and the dry run's answer."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.lists import ListPage
from tunesmith.jobs.states import JobStatus

Auto = Literal["auto"]


class JobHyperparameters(BaseModel):
    """OpenAI's deprecated top-level hyperparameters, "auto" replaced once known."""

    # int | float: a whole multiplier stays as it was written (2, not 2.0).
    n_epochs: int | Auto
    batch_size: int | Auto
    learning_rate_multiplier: int | float | Auto


class JobError(BaseModel):
    """Why a failed job failed."""

    # A worker's error file may add keys of its own: they pass through.
    model_config = ConfigDict(extra="allow")
    code: str
    message: str
    param: str | None


class JobIntegration(BaseModel):
    type: Literal["wandb"]
    wandb: dict[str, Any]


class JobObject(BaseModel):
    """OpenAI's fine-tuning job, then our fields. Sent without unset fields: `method` is
    there only for the method types OpenAI's schema knows (supervised, dpo)."""

    id: str
    object: Literal["fine_tuning.job"]
    created_at: int
    finished_at: int | None
    model: str
    fine_tuned_model: str | None
    organization_id: str
    status: Literal["validating_files", "queued", "running", "succeeded", "failed",
                    "cancelled"] = Field(description="OpenAI's status a client should act "
                                                     "on; `status_detail` has ours.")
    # null for a multitask job, whose tasks name their files.
    training_file: str | None
    validation_file: str | None
    hyperparameters: JobHyperparameters
    result_files: list[str]
    trained_tokens: int | None
    error: JobError | None
    seed: int
    user_provided_suffix: str | None
    metadata: dict[str, str] | None
    estimated_finish: int | None
    integrations: list[JobIntegration]
    method: dict[str, Any] | None = Field(
        default=None, description="The spec's method (supervised or dpo only), with the "
        "values that ran in place of \"auto\".")
    # Ours.
    status_detail: JobStatus
    objective: dict[str, Any] | None = Field(
        description="The spec's method of any type, with the values that ran in place of "
        "\"auto\".")
    tuning: dict[str, Any] | None
    resources: dict[str, Any] | None
    tracking: list[dict[str, Any]] = Field(description="Every integration the job named.")
    resolved_hyperparameters: dict[str, Any]
    progress: dict[str, Any] = Field(description="step, total_steps, steps_per_second, "
                                     "eta_seconds while running, ...")
    last_metrics: dict[str, Any]
    attempt: int
    max_attempts: int
    started_at: int | None
    done: bool


class JobList(ListPage[JobObject]):
    pass


class GpuClassFit(BaseModel):
    gpu_class: str
    memory_gib: int | float
    fits: bool
    plan: dict[str, Any]
    suggestions: list[str] | None = Field(default=None,
                                          description="Only when the job does not fit.")


class DryRun(BaseModel):
    """What `"dry_run": true` answers: nothing stored, nothing queued."""

    object: Literal["fine_tuning.job.dry_run"]
    model: str
    method: str
    tuning: str
    quantization: str | None
    hyperparameters: dict[str, Any]
    optimizer: str
    devices: int
    memory: dict[str, Any] | None
    gpu_classes: list[GpuClassFit]
    fits: bool | None
    notes: list[str]
