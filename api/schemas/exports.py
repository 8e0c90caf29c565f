"""Exports: a fine-tuned model written out as a merged folder or one GGUF file."""

from typing import Any, Literal

from pydantic import BaseModel, Field

from api.schemas.lists import ListPage
from tunesmith.jobs.exports import ExportStatus


class ExportFile(BaseModel):
    name: str
    bytes: int
    sha256: str
    url: str


class ExportObject(BaseModel):
    object: Literal["fine_tuning.export"]
    id: str
    fine_tuning_job_id: str
    status: ExportStatus
    format: Literal["merged", "gguf"]
    quantization: str | None
    checkpoint: int | None = Field(description="The exported checkpoint's step; null: the "
                                   "job's final result.")
    artifacts: list[ExportFile] = Field(description="Empty until the export succeeds.")
    error: dict[str, Any] | None
    created_at: int
    started_at: int | None
    finished_at: int | None


class ExportList(ListPage[ExportObject]):
    pass


class ExportArtifact(ExportFile):
    object: Literal["fine_tuning.export.artifact"]


class ExportArtifactList(ListPage[ExportArtifact]):
    pass
