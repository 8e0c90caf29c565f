"""The body of `POST /v1/fine_tuning/jobs`: OpenAI's fields plus `tuning` and `resources`."""

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tunesmith.spec.data_formats import RowFormat
from tunesmith.spec.hyperparameters import Hyperparameters
from tunesmith.spec.objectives import (
    SUPPORTED_TUNINGS,
    TRAINING_FORMATS,
    Method,
    MultitaskMethod,
    PPOMethod,
    RLHFMethod,
    SupervisedMethod,
)
from tunesmith.spec.tunings import PROMPT_LEARNING, LoraTuning, Tuning


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gpus: Annotated[int, Field(ge=0, le=64)] | Literal["auto"] = Field(
        "auto",
        description="GPUs for this job: auto takes one where the worker has "
        "one, else the CPU; 0 forces the CPU; more than one runs the training through accelerate "
        "(data parallel, one process per GPU).",
    )
    processes: int | None = Field(
        None, ge=1, le=64, description="Training processes (data parallel, one per GPU); "
        "default: one per GPU, or one on CPU. Several processes on CPU use the gloo backend.",
    )
    gpu_class: str | None = Field(
        None,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Queue of workers with this GPU class.",
    )


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1,
        max_length=255,
        description="A model the server knows: a "
        "folder under the models root, a hub id where downloads are allowed, or a "
        "fine-tuned model of the project (a job's `fine_tuned_model`, or that plus "
        "`:ckpt-step-N` for a checkpoint): the job then trains on top of its weights.",
    )
    training_file: str | None = Field(
        None,
        description="Id of an uploaded training file "
        "(optional only for multitask, whose tasks name files).",
    )
    validation_file: str | None = None
    method: Method = Field(default_factory=SupervisedMethod)
    tuning: Tuning = Field(default_factory=LoraTuning)
    hyperparameters: Hyperparameters | None = Field(
        None,
        description="Deprecated by OpenAI in favour of method.<type>.hyperparameters; "
        "accepted and used when the method sets none.",
    )
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")
    metadata: dict[str, str] | None = Field(None, max_length=16)
    resources: Resources = Field(default_factory=Resources)
    integrations: list[Any] | None = Field(None, description="Accepted for OpenAI clients; unused.")

    @model_validator(mode="after")
    def _fits_together(self) -> "JobSpec":
        supported = SUPPORTED_TUNINGS[self.method.type]
        if self.tuning.type not in supported:
            raise ValueError(
                f"tuning '{self.tuning.type}' does not work with method '{self.method.type}'; "
                f"use one of {sorted(supported)}"
            )
        if (isinstance(self.method, SupervisedMethod)
                and self.method.supervised.padding_free is True
                and self.tuning.type in PROMPT_LEARNING):
            raise ValueError(
                "method.supervised.padding_free cannot be true with tuning "
                f"'{self.tuning.type}', which puts virtual tokens in front of every row of a "
                "batch; leave it auto"
            )
        if self.training_file is None and not isinstance(self.method, MultitaskMethod):
            raise ValueError("training_file is required")
        if self.hyperparameters is not None:
            config = getattr(self.method, self.method.type)
            if isinstance(self.method, RLHFMethod):
                config = self.method.rlhf.sft  # the stage OpenAI's fields describe
            if not config.hyperparameters.model_fields_set:
                merged = config.hyperparameters.model_copy(
                    update=self.hyperparameters.model_dump(exclude_unset=True)
                )
                config.hyperparameters = merged
        return self


@dataclass(frozen=True)
class FileUse:
    """A file a job reads, the spec field that names it, and the formats that field accepts."""

    field: str
    file_id: str
    formats: frozenset[RowFormat]


def file_uses(spec: JobSpec) -> list[FileUse]:
    method = spec.method
    uses: list[FileUse] = []
    if spec.training_file is not None:
        uses.append(FileUse("training_file", spec.training_file, TRAINING_FORMATS[method.type]))
    if spec.validation_file is not None:
        uses.append(FileUse("validation_file", spec.validation_file, TRAINING_FORMATS[method.type]))
    if isinstance(method, MultitaskMethod):
        uses += [
            FileUse(f"method.multitask.tasks[{i}].file", task.file, TRAINING_FORMATS["multitask"])
            for i, task in enumerate(method.multitask.tasks)
        ]
    if isinstance(method, RLHFMethod):
        uses.append(
            FileUse(
                "method.rlhf.preference_file",
                method.rlhf.preference_file,
                TRAINING_FORMATS["reward"],
            )
        )
        uses.append(
            FileUse("method.rlhf.prompt_file", method.rlhf.prompt_file, TRAINING_FORMATS["ppo"])
        )
    return uses


def method_hyperparameters(spec: JobSpec) -> Hyperparameters:
    if isinstance(spec.method, RLHFMethod):
        return spec.method.rlhf.sft.hyperparameters
    return getattr(spec.method, spec.method.type).hyperparameters


def reward_model_reference(spec: JobSpec) -> str | None:
    """The id of the reward job a PPO job depends on, if it names one."""
    if isinstance(spec.method, PPOMethod):
        return spec.method.ppo.reward_model.job
    return None
