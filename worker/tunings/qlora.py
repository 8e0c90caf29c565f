"""QLoRA (Dettmers et al. 2023): LoRA on a base quantised by bitsandbytes as it loads.

4-bit (NF4 or FP4, optionally double-quantised) or 8-bit (LLM.int8) base weights; bitsandbytes
runs both on CPU too. The LoRA weights stay in full precision, so the artifact is an ordinary
PEFT LoRA folder that loads onto the full-precision base (or a quantised one) as it is.
The same as `tuning.type: lora` with `quantization: {"method": "bnb_nf4"}`
(worker/training/quantization.py).
"""

from typing import Any

from peft import get_peft_model, prepare_model_for_kbit_training

from tunesmith.spec.tunings import QLoraTuning
from worker.registry import ModelTask, TuningPlan, register_tuning
from worker.training.context import JobContext
from worker.training.quantization import compute_dtype, device_map
from worker.tunings.lora import lora_config, save_peft


def load_kwargs(tuning: QLoraTuning, ctx: JobContext) -> dict[str, Any]:
    from transformers import BitsAndBytesConfig

    if tuning.bits == 4:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=tuning.quant_type,
            bnb_4bit_use_double_quant=tuning.double_quant,
            bnb_4bit_compute_dtype=compute_dtype(ctx),
        )
    else:
        quantization = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": quantization, "device_map": device_map(ctx)}


def quantized_layers(model: Any) -> dict[str, int]:
    """Count the bitsandbytes layers by class name (Linear4bit, Linear8bitLt)."""
    counts: dict[str, int] = {}
    for module in model.modules():
        cls = type(module)
        if cls.__module__.startswith("bitsandbytes"):
            counts[cls.__name__] = counts.get(cls.__name__, 0) + 1
    return counts


def apply(model: Any, tuning: QLoraTuning, task: ModelTask, ctx: JobContext) -> Any:
    layers = quantized_layers(model)
    if not layers:
        # A silent fall-back to a full-precision base would pass for QLoRA but use 4x memory.
        raise RuntimeError("qlora: the base model loaded without any bitsandbytes layer")
    detail = (f"{tuning.bits}-bit" if tuning.bits == 8 else
              f"4-bit {tuning.quant_type}{' double-quantised' if tuning.double_quant else ''}, "
              f"compute {str(compute_dtype(ctx)).removeprefix('torch.')}")
    ctx.event(f"Quantised base ({detail}): "
              + ", ".join(f"{n} {name}" for name, n in sorted(layers.items())),
              data={"quantization": {"bits": tuning.bits, "quant_type": tuning.quant_type,
                                     "double_quant": tuning.double_quant,
                                     "layers": layers}})
    # Freezes the base and upcasts its non-quantised half-precision parameters (norms,
    # embeddings) to fp32 for stable training. Gradient checkpointing is left to the trainer,
    # which turns it on exactly when the resolved hyperparameters say so; peft's default here
    # would turn it on always.
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, lora_config(tuning, task))


register_tuning(TuningPlan(spec=QLoraTuning, load_kwargs=load_kwargs, apply=apply,
                           save=save_peft))
