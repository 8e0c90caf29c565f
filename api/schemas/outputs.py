"""What a job produces: its checkpoints (OpenAI's objects plus their files) and artifacts."""

from typing import Any, Literal

from pydantic import BaseModel

from api.schemas.lists import ListPage


class CheckpointObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"]
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, Any]
    # Ours: its files, one by one or as one archive.
    files_url: str
    archive_url: str


class CheckpointList(ListPage[CheckpointObject]):
    pass


class CheckpointFile(BaseModel):
    object: Literal["fine_tuning.job.checkpoint.file"]
    name: str
    bytes: int
    sha256: str
    url: str


class CheckpointFileList(ListPage[CheckpointFile]):
    pass


class ArtifactObject(BaseModel):
    object: Literal["fine_tuning.job.artifact"]
    name: str
    kind: str
    bytes: int
    sha256: str
    created_at: int
    url: str


class ArtifactList(ListPage[ArtifactObject]):
    pass
