"""The body of `POST /v1/fine_tuning/jobs`: OpenAI's fields plus `tuning` and `resources`."""

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from tunesmith.spec.base import ID_LENGTH, NAME_LENGTH, SpecModel
from tunesmith.spec.data_formats import RowFormat
from tunesmith.spec.hyperparameters import Hyperparameters
from tunesmith.spec.integrations import INTEGRATION_TYPES, Integration
from tunesmith.spec.objectives import (
    SUPPORTED_TUNINGS,
    TRAINING_FORMATS,
    Method,
    MultitaskMethod,
    PPOMethod,
    RLHFMethod,
    SupervisedMethod,
)
from tunesmith.spec.quantization import Quantization, refusal
from tunesmith.spec.tunings import NO_ACTIVATION_CHECKPOINTING, PROMPT_LEARNING, LoraTuning, Tuning


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
        if (self.tuning.type in NO_ACTIVATION_CHECKPOINTING
                and method_hyperparameters(self).gradient_checkpointing is True):
            stage = ".sft" if isinstance(self.method, RLHFMethod) else ""
            raise ValueError(
                f"method.{self.method.type}{stage}.hyperparameters.gradient_checkpointing cannot "
                f"be true with tuning '{self.tuning.type}': its prefixes reach the model as a "
                "KV cache, which checkpointing's recomputation drops; leave it auto or false"
            )
        return self

    def _merge_top_level_hyperparameters(self) -> None:
        """The deprecated top-level hyperparameters join the method's: neither is dropped;
        a value both set, differently, is a contradiction the user must settle."""
        assert self.hyperparameters is not None
        config = getattr(self.method, self.method.type)
        if isinstance(self.method, RLHFMethod):
            config = self.method.rlhf.sft  # the stage OpenAI's fields describe
        if not hasattr(config, "hyperparameters"):
            raise ValueError(f"hyperparameters cannot be used with method "
                             f"'{self.method.type}'; set them in the method")
        own = config.hyperparameters.model_dump(exclude_unset=True)
        top = self.hyperparameters.model_dump(exclude_unset=True)
        clashes = sorted(k for k in own.keys() & top.keys() if own[k] != top[k])
        if clashes:
            raise ValueError(
                f"hyperparameters.{clashes[0]} differs from the method's: the deprecated "
                f"top-level hyperparameters and method.{self.method.type}.hyperparameters "
                f"set {', '.join(clashes)} differently; set them in the method only")
        config.hyperparameters = config.hyperparameters.model_copy(update=top)


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
