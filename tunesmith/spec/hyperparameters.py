"""Training hyperparameters. Each is "auto" by default; the worker resolves it for the model,
the data and the tuning, and reports the resolved values on the job."""

from typing import Annotated, Literal

from pydantic import Field

from tunesmith.spec.base import MAX_STEPS, SpecModel

Auto = Literal["auto"]


class Hyperparameters(SpecModel):
    """Hyperparameters every objective shares, where OpenAI puts them."""

    # OpenAI's bounds: a job object showing more would not validate against its schema.
    # Longer runs: max_steps; bigger batches: gradient_accumulation_steps.
    n_epochs: Annotated[int, Field(ge=1, le=50)] | Auto = Field(
        "auto", description="Passes over the training data (at most 50, as OpenAI; "
        "max_steps for longer runs)."
    )
    batch_size: Annotated[int, Field(ge=1, le=256)] | Auto = Field(
        "auto", description="Rows per optimizer step (at most 256, as OpenAI; "
        "gradient_accumulation_steps for bigger batches)."
    )
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=1000)] | Auto = Field(
        "auto",
        description="Scales the tuning's default learning rate (OpenAI's knob).",
    )
    learning_rate: Annotated[float, Field(gt=0, le=10)] | Auto = Field(
        "auto",
        description="Absolute learning rate; overrides the multiplier. Auto: the tuning's default "
        "(higher for prompt and prefix tuning than for LoRA, lowest for full fine-tuning).",
    )
    max_steps: Annotated[int, Field(ge=1, le=MAX_STEPS)] | Auto = Field(
        "auto", description="Stop after this many optimizer steps; auto: n_epochs decides."
    )
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] | Auto = Field(
        "auto", description="Share of steps warming up."
    )
    max_seq_length: Annotated[int, Field(ge=8, le=1_048_576)] | Auto = Field(
        "auto",
        description="Tokens per row; longer rows are truncated. "
        "Auto: the model's limit, at most 1024.",
    )
    gradient_accumulation_steps: Annotated[int, Field(ge=1, le=1024)] | Auto = Field(
        "auto",
    )
    weight_decay: Annotated[float, Field(ge=0, le=1)] | Auto = Field(
        "auto",
    )
    lr_scheduler: Literal["auto", "linear", "cosine", "constant"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Auto: bf16 where the GPU has it, else fp32."
    )
    gradient_checkpointing: bool | Auto = Field(
        "auto",
        description="Trade compute for memory. Auto: on only where the memory estimate says the "
        "faster setups do not fit the device (QLoRA: on unless false); never for prefix/P-tuning "
        "v2, which it breaks.",
    )
    save_steps: Annotated[int, Field(ge=1, le=MAX_STEPS)] | Auto = Field(
        "auto", description="Checkpoint every N steps (what a resumed job restarts from)."
    )
    logging_steps: Annotated[int, Field(ge=1, le=MAX_STEPS)] | Auto = Field(
        "auto", description="Log metrics every N steps."
    )
