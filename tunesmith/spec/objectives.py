"""`method.type`: what a job learns from. One class per objective; the union is the list.

As in OpenAI's API, a method's settings sit under a key named by its type:
`{"type": "supervised", "supervised": {"hyperparameters": {...}}}`.
"""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from tunesmith.spec.base import ID_LENGTH, MAX_COEFFICIENT, MAX_STEPS, NAME_LENGTH, SpecModel
from tunesmith.spec.data_formats import RowFormat
from tunesmith.spec.hyperparameters import Auto, Hyperparameters
from tunesmith.spec.tunings import PROMPT_LEARNING


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


class SupervisedMethod(_Config):
    """Instruction fine-tuning (SFT) with trl's SFTTrainer."""

    type: Literal["supervised"] = "supervised"
    supervised: SupervisedConfig = Field(default_factory=SupervisedConfig)


class PretrainingMethod(_Config):
    """Domain-adaptive pretraining: causal LM on raw in-domain text."""

    type: Literal["pretraining"] = "pretraining"
    pretraining: PretrainingConfig = Field(default_factory=PretrainingConfig)


class MultitaskMethod(_Config):
    """Multi-task fine-tuning: SFT on a weighted mixture of named tasks."""

    type: Literal["multitask"] = "multitask"
    multitask: MultitaskConfig


class RewardMethod(_Config):
    """RLHF stage 2: a reward model trained on preference pairs."""

    type: Literal["reward"] = "reward"
    reward: RewardConfig = Field(default_factory=RewardConfig)


class PPOMethod(_Config):
    """RLHF stage 3: PPO against a reward model."""

    type: Literal["ppo"] = "ppo"
    ppo: PPOConfig


class RLHFMethod(_Config):
    """RLHF whole: SFT, then a reward model, then PPO, each stage's artifact kept."""

    type: Literal["rlhf"] = "rlhf"
    rlhf: RLHFConfig


class DPOMethod(_Config):
    """Direct preference optimisation (beyond the seed): preferences without RL."""

    type: Literal["dpo"] = "dpo"
    dpo: DPOConfig = Field(default_factory=DPOConfig)


class GRPOMethod(_Config):
    """Group relative policy optimisation (beyond the seed): RL with a verifiable reward."""

    type: Literal["grpo"] = "grpo"
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)


Method = Annotated[
    SupervisedMethod
    | PretrainingMethod
    | MultitaskMethod
    | RewardMethod
    | PPOMethod
    | RLHFMethod
    | DPOMethod
    | GRPOMethod,
    Field(discriminator="type"),
]

METHOD_CLASSES: tuple[type[_Config], ...] = (
    SupervisedMethod,
    PretrainingMethod,
    MultitaskMethod,
    RewardMethod,
    PPOMethod,
    RLHFMethod,
    DPOMethod,
    GRPOMethod,
)

WEIGHT_TUNINGS = frozenset({"full", "lora", "qlora"})
ALL_TUNINGS = WEIGHT_TUNINGS | {"adapter"} | PROMPT_LEARNING

# What each objective reads from its training file, and which tunings it works with.
SUPERVISED_FORMATS = frozenset({RowFormat.messages, RowFormat.sharegpt,
                                RowFormat.prompt_completion, RowFormat.alpaca})
PREFERENCE_FORMATS = frozenset({RowFormat.preference, RowFormat.openai_preference})
TRAINING_FORMATS: dict[str, frozenset[RowFormat]] = {
    "supervised": SUPERVISED_FORMATS,
    "pretraining": frozenset({RowFormat.text}),
    "multitask": SUPERVISED_FORMATS,
    "reward": PREFERENCE_FORMATS,
    "ppo": frozenset({RowFormat.prompt, RowFormat.prompt_completion, RowFormat.preference}),
    "rlhf": SUPERVISED_FORMATS,
    "dpo": PREFERENCE_FORMATS,
    "grpo": frozenset({RowFormat.prompt}),
}
SUPPORTED_TUNINGS: dict[str, frozenset[str]] = {
    "supervised": ALL_TUNINGS,
    "pretraining": ALL_TUNINGS,
    "multitask": ALL_TUNINGS,
    # A reward model and PPO's policy/value heads need weights that change; prompt
    # learning and our bottleneck adapters are not wired through those trainers.
    "reward": WEIGHT_TUNINGS,
    "ppo": WEIGHT_TUNINGS,
    "rlhf": WEIGHT_TUNINGS,
    "dpo": WEIGHT_TUNINGS,
    "grpo": WEIGHT_TUNINGS,
}
