"""`/v1/models`: OpenAI's model object plus where a fine-tuned model came from."""

from typing import Literal

from pydantic import BaseModel, Field

from api.schemas.lists import ListPage


class ModelObject(BaseModel):
    """Sent without unset fields: a base model has no job, tuning or parent."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    # Ours, on fine-tuned models and checkpoints only.
    fine_tuning_job_id: str | None = Field(default=None, description="Fine-tuned models only.")
    tuning: str | None = Field(default=None, description="Fine-tuned models only.")
    parent: str | None = Field(default=None, description="Fine-tuned models only: the model "
                               "it was trained from.")


class ModelList(ListPage[ModelObject]):
    pass


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"]
    deleted: bool
