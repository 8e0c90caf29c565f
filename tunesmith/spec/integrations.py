"""`integrations`: where a job's training metrics go besides our own events.

OpenAI's shape (`{"type": "wandb", "wandb": {...}}`) for W&B, and the same shape for
TensorBoard and MLflow. A job names only projects, experiments and runs: credentials and
server addresses (WANDB_API_KEY, WANDB_BASE_URL, MLFLOW_TRACKING_URI, ...) come from the
worker's environment only, so a job body or its log never holds a secret and a user cannot
point a worker at a server of their choosing."""

from typing import Annotated, Literal

from pydantic import Field

from tunesmith.spec.base import SpecModel

RUN_NAME_LENGTH = 128
Name = Annotated[str, Field(min_length=1, max_length=RUN_NAME_LENGTH)]
Tag = Annotated[str, Field(min_length=1, max_length=64)]


class WandbSettings(SpecModel):
    project: Name = Field(description="The W&B project the run goes to.")
    name: Name | None = Field(None, description="The run's name; default: the job id.")
    entity: Name | None = Field(None, description="Team or user; default: the API key's.")
    tags: list[Tag] | None = Field(None, max_length=50, description="Tags on the run.")


class WandbIntegration(SpecModel):
    type: Literal["wandb"]
    wandb: WandbSettings


class TensorboardSettings(SpecModel):
    pass


class TensorboardIntegration(SpecModel):
    """Event files written beside the job and published as its `tensorboard/` artifacts."""

    type: Literal["tensorboard"]
    tensorboard: TensorboardSettings = Field(default_factory=TensorboardSettings)


class MlflowSettings(SpecModel):
    experiment_name: Name = Field(description="Created on the server if it does not exist.")
    run_name: Name | None = Field(None, description="The run's name; default: the job id.")


class MlflowIntegration(SpecModel):
    """A run on the worker's MLflow server (MLFLOW_TRACKING_URI in the worker's environment)."""

    type: Literal["mlflow"]
    mlflow: MlflowSettings


Integration = Annotated[WandbIntegration | TensorboardIntegration | MlflowIntegration,
                        Field(discriminator="type")]
INTEGRATION_TYPES = ("wandb", "tensorboard", "mlflow")
