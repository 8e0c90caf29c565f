"""`tuning.type`: which parameters a job changes. One class per tuning; the union is the list."""

from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import Field, model_validator

from tunesmith.spec.base import TypedSpec

# A module name as peft matches it: "q_proj" or a dotted path "model.layers.0.mlp.up_proj".
ModuleName = Annotated[str, Field(min_length=1, max_length=200)]


class TuningSpec(TypedSpec):
    """What every tuning declares once, on its own class: its public type, and the facts the
    spec's rules and the worker read (nothing else lists tunings by name)."""

    # Changes the model's own weights (full, lora, qlora): what the RL and preference
    # trainers (reward, ppo, rlhf, dpo, grpo) need.
    changes_weights: ClassVar[bool]
    # Learns virtual tokens (peft "prompt learning") put in front of every row.
    prompt_learning: ClassVar[bool]
    # False where the prefixes reach the model as a KV cache, which activation
    # checkpointing's recomputation drops: training crashes ("The size of tensor a (16)
    # must match ...").
    activation_checkpointing: ClassVar[bool]
    # Trains parameters of its own in full precision, so it can sit on a quantised base
    # (full cannot: quantised weights have no gradient; qlora names its own quantisation).
    quantizable: ClassVar[bool]
    # The learning rate "auto" resolves to: what the tuning's own parameters need to move.
    default_learning_rate: ClassVar[float]

    def __init_subclass__(cls, *, rate: float, weights: bool = False,
                          virtual_tokens: bool = False, kv_prefix: bool = False,
                          quantizable: bool = True, **kwargs: Any) -> None:
        """The facts, given in the class statement: `class X(TuningSpec, rate=2e-4)`."""
        super().__init_subclass__(**kwargs)
        cls.changes_weights, cls.prompt_learning = weights, virtual_tokens or kv_prefix
        cls.activation_checkpointing, cls.quantizable = not kv_prefix, quantizable
        cls.default_learning_rate = rate


# Pretrained weights move: the lowest rate.
class FullTuning(TuningSpec, rate=2e-5, weights=True, quantizable=False):
    """Full fine-tuning: every weight trains; the artifact is the whole model in safetensors."""

    type: Literal["full"] = "full"


class LoraTuning(TuningSpec, rate=2e-4, weights=True):
    """LoRA (Hu et al. 2021): low-rank updates on frozen weights."""

    type: Literal["lora"] = "lora"
    r: int = Field(8, ge=1, le=1024, description="Rank of the update matrices.")
    alpha: float = Field(
        16, gt=0, le=65536, description="Scaling numerator: the update is scaled by alpha/r."
    )
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: Annotated[list[ModuleName], Field(min_length=1, max_length=256)] | Literal[
        "all-linear"
    ] = Field(
        "all-linear",
        description='Module names to adapt, or "all-linear" (every linear layer '
        "but the output head). Each name must match a linear module of the model.",
    )
    use_rslora: bool = Field(False, description="Rank-stabilised scaling alpha/sqrt(r).")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")


# The adapter is LoRA's, trained through dequantised weights: Dettmers et al. use 2e-4 for
# 7B-13B bases (1e-4 for larger ones), the same as our LoRA default.
class QLoraTuning(LoraTuning, rate=2e-4, weights=True, quantizable=False):
    """QLoRA (Dettmers et al. 2023): LoRA on a base quantised by bitsandbytes."""

    type: Literal["qlora"] = "qlora"  # type: ignore[assignment]
    bits: Literal[4, 8] = Field(4, description="4-bit (NF4/FP4) or 8-bit (LLM.int8) base weights.")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    double_quant: bool = Field(True, description="Quantise the quantisation constants too.")


# The up-projections start near zero (an identity adapter), so they need a rate above LoRA's
# to leave it; LLM-Adapters (Hu et al. 2023) train bottleneck adapters at 3e-4.
class AdapterTuning(TuningSpec, rate=3e-4):
    """Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020) between layers."""

    type: Literal["adapter"] = "adapter"
    size: int = Field(64, ge=1, le=8192, description="Bottleneck dimension.")
    placement: Literal["pfeiffer", "houlsby"] = Field(
        "pfeiffer",
        description="pfeiffer: after the feed-forward; houlsby: after attention and "
        "after the feed-forward.",
    )
    nonlinearity: Literal["relu", "gelu", "silu"] = "relu"
    dropout: float = Field(0.0, ge=0, lt=1)


# peft's guides train prefix vectors at 1e-2; through the MLP every update moves all prefixes
# together, so half that. Far above LoRA's 2e-4: a few thousand prefix values must steer a
# frozen model on their own.
class PrefixTuning(TuningSpec, rate=5e-3, kv_prefix=True):
    """Prefix tuning (Li & Liang 2021): key/value prefixes at every layer through an MLP."""

    type: Literal["prefix"] = "prefix"
    num_virtual_tokens: int = Field(20, ge=1, le=1024)
    encoder_hidden_size: int = Field(
        512, ge=1, le=65536, description="Hidden size of the reparameterisation MLP."
    )


# Liu et al. report 5e-3 to 1e-2 for deep prompts; peft's prefix-tuning guide uses 1e-2.
# Directly parameterised prompts need such rates to move a frozen model at all.
class PTuningV2Tuning(TuningSpec, rate=1e-2, kv_prefix=True):
    """P-Tuning v2 (Liu et al. 2022): deep prompts at every layer, no reparameterisation."""

    type: Literal["p_tuning_v2"] = "p_tuning_v2"
    num_virtual_tokens: int = Field(20, ge=1, le=1024)


# peft's P-tuning guide trains the prompt encoder at 1e-3: the encoder is an ordinary small
# network (LoRA-like rates would barely move the prompts; prompt tuning's 3e-2 makes an LSTM
# encoder diverge).
class PTuningTuning(TuningSpec, rate=1e-3, virtual_tokens=True):
    """P-tuning (Liu et al. 2021): input-layer prompts from a small MLP or LSTM encoder."""

    type: Literal["p_tuning"] = "p_tuning"
    num_virtual_tokens: int = Field(20, ge=1, le=1024)
    encoder_type: Literal["MLP", "LSTM"] = "MLP"
    encoder_hidden_size: int = Field(128, ge=1, le=65536)


# The soft prompt is the only trainable tensor (num_virtual_tokens x hidden) and sits at the
# bottom of a frozen model: peft's prompt-tuning guide uses 3e-2 (Lester et al. went to 0.3
# with Adafactor). LoRA rates leave it where it started.
class PromptTuning(TuningSpec, rate=3e-2, virtual_tokens=True):
    """Prompt tuning (Lester et al. 2021): a soft prompt at the input, the model frozen."""

    type: Literal["prompt"] = "prompt"
    num_virtual_tokens: int = Field(20, ge=1, le=1024)
    init: Literal["random", "text"] = Field(
        "random", description="Start from random vectors or from the embeddings of init_text."
    )
    init_text: str | None = Field(None, min_length=1, max_length=4096,
                                  description="Required when init is text.")

    @model_validator(mode="after")
    def _text_init_needs_text(self) -> "PromptTuning":
        if self.init == "text" and not self.init_text:
            raise ValueError("init_text is required when init is 'text'")
        return self


# (IA)^3's vectors start at one (the model unchanged) and are few: Liu et al. (T-Few) train
# them at 3e-3, ten times LoRA's rate.
class IA3Tuning(TuningSpec, rate=3e-3, quantizable=False):
    """(IA)^3 (Liu et al. 2022): learned vectors that rescale the attention keys and values
    and the feed-forward activations (peft's IA3Config, its modules for the architecture)."""

    type: Literal["ia3"] = "ia3"


Tuning = Annotated[FullTuning | LoraTuning | QLoraTuning | AdapterTuning | PrefixTuning
                   | PTuningV2Tuning | PTuningTuning | PromptTuning | IA3Tuning,
                   Field(discriminator="type")]

# The classes of the union, in its order: the list every registry and test walks.
TUNING_CLASSES: tuple[type[TuningSpec], ...] = get_args(get_args(Tuning)[0])
PROMPT_LEARNING = frozenset(t.type_name() for t in TUNING_CLASSES if t.prompt_learning)
NO_ACTIVATION_CHECKPOINTING = frozenset(
    t.type_name() for t in TUNING_CLASSES if not t.activation_checkpointing)
