"""`method.type`: what a job learns from. One class per objective; the union is the list.

As in OpenAI's API, a method's settings sit under a key named by its type:
`{"type": "supervised", "supervised": {"hyperparameters": {...}}}`.
"""

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import Field, model_validator

from tunesmith.spec.base import (
    ID_LENGTH,
    MAX_COEFFICIENT,
    MAX_STEPS,
    NAME_LENGTH,
    SpecModel,
    TypedSpec,
)
from tunesmith.spec.data_formats import RowFormat
from tunesmith.spec.hyperparameters import Auto, Hyperparameters
from tunesmith.spec.tunings import TUNING_CLASSES, TuningSpec


class _Config(SpecModel):
    pass


class SupervisedConfig(_Config):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    completion_only_loss: bool = Field(
        True, description="Train on completions (assistant turns) only, not on prompts."
    )
    padding_free: bool | Auto = Field(
        "auto",
        description="Join each batch's rows into one sequence instead of padding them to the "
        "longest: the same loss, no compute spent on pad tokens. Auto: on where the job's "
        "own row lengths make it cheaper (short or mixed rows) and the tuning keeps the "
        "token sequence (full, lora, qlora, adapter); never for prompt-learning tunings.",
    )


class PretrainingConfig(_Config):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    packing: bool = Field(
        True, description="Pack rows into full-length sequences, keeping every token."
    )


class Task(_Config):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    file: str = Field(min_length=1, max_length=ID_LENGTH,
                      description="Id of an uploaded training file for this task.")
    weight: float = Field(1.0, gt=0, le=1e6, description="Relative share of the mixture.")


class MultitaskConfig(_Config):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    tasks: list[Task] = Field(min_length=1, max_length=64)
    completion_only_loss: bool = True

    @model_validator(mode="after")
    def _unique_names(self) -> "MultitaskConfig":
        names = [task.name for task in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError("task names must be unique")
        return self


class RewardConfig(_Config):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class ModelReference(_Config):
    """A reward model: a finished `reward` job of this project, or a model folder by name."""

    job: str | None = Field(None, min_length=1, max_length=ID_LENGTH)
    model: str | None = Field(None, min_length=1, max_length=NAME_LENGTH)

    @model_validator(mode="after")
    def _exactly_one(self) -> "ModelReference":
        if (self.job is None) == (self.model is None):
            raise ValueError("give exactly one of 'job' or 'model'")
        return self


class PPOHyperparameters(Hyperparameters):
    total_episodes: Annotated[int, Field(ge=1, le=MAX_STEPS)] | Auto = Field(
        "auto", description="Prompts sampled in all."
    )
    response_length: int = Field(32, ge=1, le=4096, description="New tokens per rollout.")
    ppo_epochs: int = Field(4, ge=1, le=64, description="Optimisation passes per rollout batch.")
    kl_coef: float = Field(0.05, ge=0, le=MAX_COEFFICIENT,
                           description="Per-token KL penalty to the reference policy.")
    cliprange: float = Field(0.2, gt=0, lt=1)
    cliprange_value: float = Field(0.2, gt=0, le=MAX_COEFFICIENT)
    vf_coef: float = Field(0.1, ge=0, le=MAX_COEFFICIENT)
    temperature: float = Field(0.7, gt=0, le=MAX_COEFFICIENT)


class PPOConfig(_Config):
    hyperparameters: PPOHyperparameters = Field(default_factory=PPOHyperparameters)
    reward_model: ModelReference


class RLHFConfig(_Config):
    """All three stages in one job: SFT on training_file, a reward model on preference_file,
    PPO on prompt_file."""

    preference_file: str = Field(min_length=1, max_length=ID_LENGTH)
    prompt_file: str = Field(min_length=1, max_length=ID_LENGTH)
    sft: SupervisedConfig = Field(default_factory=SupervisedConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    ppo: PPOHyperparameters = Field(default_factory=PPOHyperparameters)


class DPOHyperparameters(Hyperparameters):
    beta: Annotated[float, Field(gt=0, le=MAX_COEFFICIENT)] | Auto = Field(
        "auto", description="Strength of the pull to the reference."
    )


class DPOConfig(_Config):
    hyperparameters: DPOHyperparameters = Field(default_factory=DPOHyperparameters)


class GRPOReward(_Config):
    type: Literal["answer_similarity", "contains_answer"] = Field(
        "answer_similarity",
        description="answer_similarity: similarity ratio of completion and "
        "the row's `answer` (0..1); contains_answer: 1 if the answer appears in the completion.",
    )


class GRPOHyperparameters(Hyperparameters):
    num_generations: int = Field(4, ge=2, le=64, description="Completions per prompt.")
    max_completion_length: int = Field(32, ge=1, le=8192)
    beta: float = Field(0.0, ge=0, le=MAX_COEFFICIENT,
                        description="KL coefficient to the reference model.")
    temperature: float = Field(1.0, gt=0, le=MAX_COEFFICIENT)


class GRPOConfig(_Config):
    hyperparameters: GRPOHyperparameters = Field(default_factory=GRPOHyperparameters)
    reward: GRPOReward = Field(default_factory=GRPOReward)


# What the objectives read from their training files.
SUPERVISED_FORMATS = frozenset({RowFormat.messages, RowFormat.sharegpt,
                                RowFormat.prompt_completion, RowFormat.alpaca})
PREFERENCE_FORMATS = frozenset({RowFormat.preference, RowFormat.openai_preference})
PROMPT_FORMATS = frozenset({RowFormat.prompt, RowFormat.prompt_completion, RowFormat.preference})


@dataclass(frozen=True)
class FileUse:
    """A file a job reads, the spec field that names it, and the formats that field accepts."""

    field: str
    file_id: str
    formats: frozenset[RowFormat]


class MethodSpec(TypedSpec):
    """What every objective declares once, on its own class (peft's config pattern): its
    public type, the formats of its training file, the tunings and quantisation it works
    with, its stages, and where its hyperparameters sit. Adding an objective is one class
    here (plus its worker module); nothing else lists objectives by name."""

    # The row formats its training_file (and validation_file) may hold.
    training_formats: ClassVar[frozenset[RowFormat]]
    # Reward models and PPO/DPO/GRPO policies need weights that change: prompt learning and
    # our bottleneck adapters are not wired through those trainers.
    needs_weight_tuning: ClassVar[bool]
    # Its models load through the one quantised path (PPO/RLHF/GRPO load several bases,
    # which that path does not quantise).
    quantizable: ClassVar[bool]
    # The stages one job runs, each as the job of another objective would (() for one).
    stages: ClassVar[tuple[str, ...]]
    # OpenAI's job object knows this type (the others appear under `objective` only).
    openai: ClassVar[bool]
    # Sequences per training row whose memory the worker plans (micro-batches, checkpointing):
    # 1, or 2 for preference pairs; None where the objective sizes its own batches around
    # generation (GRPO, PPO) or runs stages that plan their own.
    planned_sequences: ClassVar[int | None]

    def __init_subclass__(cls, *, formats: frozenset[RowFormat] = SUPERVISED_FORMATS,
                          weights_only: bool = False, quantizable: bool = False,
                          stages: tuple[str, ...] = (), openai: bool = False,
                          planned: int | None = None, **kwargs: Any) -> None:
        """The facts, given in the class statement: `class X(MethodSpec, openai=True)`."""
        super().__init_subclass__(**kwargs)
        cls.training_formats, cls.needs_weight_tuning = formats, weights_only
        cls.quantizable, cls.stages, cls.openai = quantizable, stages, openai
        cls.planned_sequences = planned

    @classmethod
    def tunings(cls) -> frozenset[str]:
        """The tuning types this objective trains with."""
        return frozenset(t.type_name() for t in TUNING_CLASSES
                         if t.changes_weights or not cls.needs_weight_tuning)

    @classmethod
    def supports(cls, tuning: type[TuningSpec]) -> bool:
        return tuning.type_name() in cls.tunings()

    @property
    def config(self) -> SpecModel:
        """The settings under the key named by the type (`method.<type>`)."""
        config = getattr(self, self.type_name())
        assert isinstance(config, SpecModel)
        return config

    @property
    def hyperparameters(self) -> Hyperparameters:
        """The hyperparameters OpenAI's fields describe (the deprecated top-level ones merge
        into these; for a staged method, its first stage's)."""
        hyperparameters = getattr(self.config, "hyperparameters", None)
        assert isinstance(hyperparameters, Hyperparameters)
        return hyperparameters

    @property
    def hyperparameters_field(self) -> str:
        """Where `hyperparameters` sit in the job body, for error messages."""
        return f"method.{self.type_name()}.hyperparameters"

    def other_files(self) -> list[FileUse]:
        """Files the method names besides training_file and validation_file."""
        return []


class SupervisedMethod(MethodSpec, quantizable=True, openai=True, planned=1):
    """Instruction fine-tuning (SFT) with trl's SFTTrainer."""

    type: Literal["supervised"] = "supervised"
    supervised: SupervisedConfig = Field(default_factory=SupervisedConfig)


class PretrainingMethod(MethodSpec, formats=frozenset({RowFormat.text}), quantizable=True,
                        planned=1):
    """Domain-adaptive pretraining: causal LM on raw in-domain text."""

    type: Literal["pretraining"] = "pretraining"
    pretraining: PretrainingConfig = Field(default_factory=PretrainingConfig)


class MultitaskMethod(MethodSpec, quantizable=True, planned=1):
    """Multi-task fine-tuning: SFT on a weighted mixture of named tasks."""

    type: Literal["multitask"] = "multitask"
    multitask: MultitaskConfig

    def other_files(self) -> list[FileUse]:
        return [FileUse(f"method.multitask.tasks[{i}].file", task.file, self.training_formats)
                for i, task in enumerate(self.multitask.tasks)]


class RewardMethod(MethodSpec, formats=PREFERENCE_FORMATS, weights_only=True, planned=2):
    """RLHF stage 2: a reward model trained on preference pairs."""

    type: Literal["reward"] = "reward"
    reward: RewardConfig = Field(default_factory=RewardConfig)


class PPOMethod(MethodSpec, formats=PROMPT_FORMATS, weights_only=True):
    """RLHF stage 3: PPO against a reward model."""

    type: Literal["ppo"] = "ppo"
    ppo: PPOConfig


class RLHFMethod(MethodSpec, weights_only=True,
                 stages=("sft", "reward", "ppo")):
    """RLHF whole: SFT, then a reward model, then PPO, each stage's artifact kept."""

    type: Literal["rlhf"] = "rlhf"
    rlhf: RLHFConfig

    @property
    def hyperparameters(self) -> Hyperparameters:
        return self.rlhf.sft.hyperparameters  # the stage OpenAI's fields describe

    @property
    def hyperparameters_field(self) -> str:
        return "method.rlhf.sft.hyperparameters"

    def other_files(self) -> list[FileUse]:
        return [FileUse("method.rlhf.preference_file", self.rlhf.preference_file,
                        RewardMethod.training_formats),
                FileUse("method.rlhf.prompt_file", self.rlhf.prompt_file,
                        PPOMethod.training_formats)]


class DPOMethod(MethodSpec, formats=PREFERENCE_FORMATS, weights_only=True,
                quantizable=True, openai=True, planned=2):
    """Direct preference optimisation (beyond the seed): preferences without RL."""

    type: Literal["dpo"] = "dpo"
    dpo: DPOConfig = Field(default_factory=DPOConfig)


class GRPOMethod(MethodSpec, formats=frozenset({RowFormat.prompt}), weights_only=True):
    """Group relative policy optimisation (beyond the seed): RL with a verifiable reward."""

    type: Literal["grpo"] = "grpo"
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)


Method = Annotated[SupervisedMethod | PretrainingMethod | MultitaskMethod | RewardMethod
                   | PPOMethod | RLHFMethod | DPOMethod | GRPOMethod,
                   Field(discriminator="type")]
# The classes of the union, in its order: the list every registry and test walks.
METHOD_CLASSES: tuple[type[MethodSpec], ...] = get_args(get_args(Method)[0])
QUANTIZABLE_OBJECTIVES = frozenset(m.type_name() for m in METHOD_CLASSES if m.quantizable)
