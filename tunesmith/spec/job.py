"""The body of `POST /v1/fine_tuning/jobs`: OpenAI's fields plus `tuning` and `resources`."""

import json
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from tunesmith.spec.base import ID_LENGTH, NAME_LENGTH, SpecModel
from tunesmith.spec.hyperparameters import Hyperparameters
from tunesmith.spec.integrations import INTEGRATION_TYPES, Integration
from tunesmith.spec.objectives import (
    FileUse,
    Method,
    MultitaskMethod,
    PPOMethod,
    SupervisedMethod,
)
from tunesmith.spec.quantization import Quantization, refusal
from tunesmith.spec.tunings import LoraTuning, Tuning


class Resources(SpecModel):
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


# OpenAI's limits on metadata: it is echoed in every listing, so it stays small.
METADATA_KEYS, METADATA_KEY_LENGTH, METADATA_VALUE_LENGTH = 16, 64, 512


class JobSpec(SpecModel):
    model: str = Field(
        min_length=1,
        max_length=NAME_LENGTH,
        description="A model the server knows: a "
        "folder under the models root, a hub id where downloads are allowed, or a "
        "fine-tuned model of the project (a job's `fine_tuned_model`, or that plus "
        "`:ckpt-step-N` for a checkpoint): the job then trains on top of its weights.",
    )
    training_file: str | None = Field(
        None, min_length=1, max_length=ID_LENGTH,
        description="Id of an uploaded training file "
        "(optional only for multitask, whose tasks name files).",
    )
    validation_file: str | None = Field(None, min_length=1, max_length=ID_LENGTH)
    method: Method = Field(default_factory=SupervisedMethod)
    tuning: Tuning = Field(default_factory=LoraTuning)
    quantization: Quantization | None = Field(
        None, description="Train the tuning on a quantised base: bitsandbytes NF4/FP4/int8 "
        "as it loads, or a GPTQ checkpoint as published (README, Methods).")
    hyperparameters: Hyperparameters | None = Field(
        None,
        description="Deprecated by OpenAI in favour of method.<type>.hyperparameters; "
        "merged into them (a value both set differently is refused).",
    )
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")
    metadata: dict[str, str] | None = Field(
        None, max_length=METADATA_KEYS,
        description=f"Up to {METADATA_KEYS} string pairs, keys at most {METADATA_KEY_LENGTH} "
        f"characters, values at most {METADATA_VALUE_LENGTH}.",
    )
    resources: Resources = Field(default_factory=Resources)
    integrations: list[Integration] | None = Field(
        None, max_length=len(INTEGRATION_TYPES), description="Where training metrics are "
        "also reported: wandb, tensorboard, mlflow (one of each); credentials come from the "
        "worker's environment, never from the job.")

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, metadata: dict[str, str] | None) -> dict[str, str] | None:
        # One message naming the limit; pydantic's own would quote a 100 kB key as the field.
        for key, value in (metadata or {}).items():
            if not 1 <= len(key) <= METADATA_KEY_LENGTH:
                raise ValueError(f"metadata keys must be 1 to {METADATA_KEY_LENGTH} characters")
            if len(value) > METADATA_VALUE_LENGTH:
                raise ValueError(f"metadata value of '{key}' is longer than "
                                 f"{METADATA_VALUE_LENGTH} characters")
        return metadata

    @model_validator(mode="after")
    def _fits_together(self) -> "JobSpec":
        if not self.method.supports(type(self.tuning)):
            raise ValueError(
                f"tuning '{self.tuning.type}' does not work with method '{self.method.type}'; "
                f"use one of {sorted(self.method.tunings())}"
            )
        if (isinstance(self.method, SupervisedMethod)
                and self.method.supervised.padding_free is True
                and self.tuning.prompt_learning):
            raise ValueError(
                "method.supervised.padding_free cannot be true with tuning "
                f"'{self.tuning.type}', which puts virtual tokens in front of every row of a "
                "batch; leave it auto"
            )
        if self.quantization is not None:
            why = refusal(self.quantization.method, self.tuning.type, self.method.type)
            if why is not None:
                raise ValueError(why)
        if self.training_file is None and not isinstance(self.method, MultitaskMethod):
            raise ValueError("training_file is required")
        types = [integration.type for integration in self.integrations or []]
        if len(set(types)) != len(types):
            raise ValueError("integrations: each type at most once")
        if self.hyperparameters is not None:
            self._merge_top_level_hyperparameters()
        if (not self.tuning.activation_checkpointing
                and self.method.hyperparameters.gradient_checkpointing is True):
            raise ValueError(
                f"{self.method.hyperparameters_field}.gradient_checkpointing cannot be true "
                f"with tuning '{self.tuning.type}': its prefixes reach the model as a KV "
                "cache, which checkpointing's recomputation drops; leave it auto or false"
            )
        return self

    def _merge_top_level_hyperparameters(self) -> None:
        """The deprecated top-level hyperparameters join the method's: neither is dropped;
        a value both set, differently, is a contradiction the user must settle."""
        assert self.hyperparameters is not None
        method_hyperparameters = self.method.hyperparameters
        own = method_hyperparameters.model_dump(exclude_unset=True)
        top = self.hyperparameters.model_dump(exclude_unset=True)
        clashes = sorted(k for k in own.keys() & top.keys() if own[k] != top[k])
        if clashes:
            raise ValueError(
                f"hyperparameters.{clashes[0]} differs from the method's: the deprecated "
                f"top-level hyperparameters and {self.method.hyperparameters_field} "
                f"set {', '.join(clashes)} differently; set them in the method only")
        # In place: the models are not frozen, and the method's field holds this object.
        for key, value in top.items():
            setattr(method_hyperparameters, key, value)


def file_uses(spec: JobSpec) -> list[FileUse]:
    """Every file the job reads, with the field naming it and the formats it may hold."""
    formats = spec.method.training_formats
    uses = [FileUse(field, file_id, formats)
            for field, file_id in (("training_file", spec.training_file),
                                   ("validation_file", spec.validation_file))
            if file_id is not None]
    return uses + spec.method.other_files()


def reward_model_reference(spec: JobSpec) -> str | None:
    """The id of the reward job a PPO job depends on, if it names one."""
    if isinstance(spec.method, PPOMethod):
        return spec.method.ppo.reward_model.job
    return None


def stored_spec(stored: dict[str, Any]) -> JobSpec:
    """The spec of a job row (`Job.spec`, stored as the API accepted it), parsed: the one way
    code outside this package reads a stored spec. Parsed as JSON, as it was accepted."""
    return JobSpec.model_validate_json(json.dumps(stored))
