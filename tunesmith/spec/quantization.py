"""`quantization`: how the base model's weights are stored while a tuning trains on top of them.

Quantization is a property of the base, not a tuning: LoRA, bottleneck adapters and the
prompt-learning tunings train their own full-precision parameters on a frozen base that
bitsandbytes quantises as it loads (NF4, FP4 or LLM.int8), or on a GPTQ checkpoint as
published. `tuning.type: qlora` stays the well-known name for LoRA on `bnb_nf4`.
"""

from typing import Annotated, Any, Literal

from pydantic import Field

from tunesmith.spec.base import SpecModel
from tunesmith.spec.objectives import QUANTIZABLE_OBJECTIVES
from tunesmith.spec.tunings import TUNING_CLASSES


class _Quantization(SpecModel):
    pass


class Bnb4bitQuantization(_Quantization):
    """bitsandbytes 4-bit (Dettmers et al. 2023): NF4 or FP4 weights, quantised as they load."""

    method: Literal["bnb_nf4", "bnb_fp4"]
    double_quant: bool = Field(True, description="Quantise the quantisation constants too "
                               "(about 0.4 bits a weight saved).")


class Bnb8bitQuantization(_Quantization):
    """bitsandbytes LLM.int8 (Dettmers et al. 2022): 8-bit weights, quantised as they load."""

    method: Literal["bnb_int8"]


class GptqQuantization(_Quantization):
    """GPTQ (Frantar et al. 2023): a checkpoint published already quantised (its config.json
    holds `quantization_config.quant_method: "gptq"`), trained as it is."""

    method: Literal["gptq"]


Quantization = Annotated[
    Bnb4bitQuantization | Bnb8bitQuantization | GptqQuantization,
    Field(discriminator="method"),
]

QUANTIZATION_CLASSES: tuple[type[_Quantization], ...] = (
    Bnb4bitQuantization, Bnb8bitQuantization, GptqQuantization)
METHODS = ("bnb_nf4", "bnb_fp4", "bnb_int8", "gptq")

# Each tuning and objective declares whether it takes a quantised base (its spec class).
QUANTIZABLE_TUNINGS = frozenset(t.type_name() for t in TUNING_CLASSES if t.quantizable)


def refusal(method: str, tuning: str, objective: str) -> str | None:
    """Why `tuning` cannot train on a base quantised by `method` under `objective`, or None."""
    if tuning == "full":
        return ("quantization cannot be used with tuning 'full': quantised weights are "
                "integers with no gradient, so they cannot be fine-tuned; train an adapter "
                "(lora, adapter, or a prompt-learning tuning) on the quantised base")
    if tuning == "qlora":
        return ("quantization cannot be used with tuning 'qlora', which names its own "
                "(bits, quant_type); use tuning 'lora' with this quantization instead")
    if tuning not in QUANTIZABLE_TUNINGS:
        return (f"quantization cannot be used with tuning '{tuning}', which has not been "
                "wired to a quantised base; use one of "
                + ", ".join(sorted(QUANTIZABLE_TUNINGS)))
    if objective not in QUANTIZABLE_OBJECTIVES:
        return (f"quantization cannot be used with method '{objective}', which loads "
                "several models; use one of " + ", ".join(sorted(QUANTIZABLE_OBJECTIVES)))
    if method == "gptq" and tuning != "lora":
        return (f"quantization 'gptq' works with tuning 'lora' only (peft's GPTQ LoRA "
                f"layers), not '{tuning}'")
    return None


def gptq_library_installed() -> bool:
    """Whether the GPTQ library peft and transformers use (gptqmodel, with optimum) is here."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("gptqmodel", "optimum"))


def base_refusal(method: str | None, config: dict[str, Any] | None, model: str) -> str | None:
    """Why the base model `model` (its config.json, None when unknown here) cannot take the
    job's quantization `method` (None: no block), or None."""
    published = ((config or {}).get("quantization_config") or {}).get("quant_method")
    if published == "gptq":
        if method is None:
            return (f"quantization is required: model '{model}' is a GPTQ checkpoint (its "
                    'config.json says quant_method "gptq"); set quantization '
                    '{"method": "gptq"} to train LoRA on it as published')
        if method != "gptq":
            return (f"quantization '{method}' cannot be used: model '{model}' is already "
                    'quantised by GPTQ; use quantization {"method": "gptq"}')
    elif method == "gptq" and config is not None:
        return (f"quantization 'gptq' needs a GPTQ checkpoint, and model '{model}' is not one "
                "(its config.json has no quantization_config with quant_method \"gptq\"); "
                "use bnb_nf4, bnb_fp4 or bnb_int8 to quantise it as it loads")
    elif published is not None and method is None:
        return None  # another pre-quantised format: transformers loads it as it is
    if method == "gptq" and not gptq_library_installed():
        return ("quantization 'gptq' is not available on this server: the GPTQ library "
                "(gptqmodel with optimum) is not installed, so GPTQ layers cannot be loaded")
    return None
