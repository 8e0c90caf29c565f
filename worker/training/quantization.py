"""A tuning on a quantised base: the `quantization` block of a job spec, on the worker.

bitsandbytes quantises the base as it loads (NF4/FP4/int8; it runs on CPU too). A GPTQ
checkpoint is loaded as published: transformers reads its `quantization_config` and builds
the GPTQ library's quantised linear layers, and peft puts its GPTQ LoRA layers on them. In
both cases the base is frozen and made ready for k-bit training before the tuning applies.
"""

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from tunesmith.spec.quantization import Bnb4bitQuantization, Bnb8bitQuantization
from tunesmith.spec.tunings import QLoraTuning
from worker.registry import ModelTask, TuningPlan
from worker.training.context import JobContext


def _keep_the_hf_cache() -> None:
    """Once gptqmodel is installed, peft imports it for every LoRA it builds, and gptqmodel's
    tokenicer sets HF_HOME to /tmp/tokenicer_hf_home where it is unset: the processes a worker
    starts afterwards would download to /tmp. Name the hub's own default first."""
    from huggingface_hub import constants

    os.environ.setdefault("HF_HOME", constants.HF_HOME)


_keep_the_hf_cache()

# peft's modules that ask whether gptqmodel is installed before they look for GPTQ layers.
_PEFT_GPTQ_PROBES = ("peft.tuners.lora.gptq", "peft.tuners.lora.awq",
                     "peft.utils.quantization_utils", "peft.utils.other")


def hide_gptqmodel_from_peft(ctx: JobContext) -> None:
    """Where gptqmodel is installed, peft imports it for every adapter it builds, to see if a
    layer is GPTQ's (about 0.8 s a job and a banner in its log). A job whose base is not
    GPTQ has no such layer: tell peft it is absent. Removal test: drop this and see
    tests/e2e/test_quantized_gptq.py and a plain LoRA job's log (`gptqmodel` banner)."""
    quantization = ctx.spec.quantization
    if quantization is not None and quantization.method == "gptq":
        return
    import importlib

    for name in _PEFT_GPTQ_PROBES:
        module = importlib.import_module(name)
        if hasattr(module, "is_gptqmodel_available"):
            module.is_gptqmodel_available = lambda: False  # type: ignore[attr-defined]


def compute_dtype(ctx: JobContext) -> Any:
    """The dtype the dequantised matmuls run in: bf16 where the GPU has it."""
    import torch

    if ctx.device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # CPU bf16 matmuls are slow or emulated on most hosts; float32 is the safe choice.
    return torch.float32


def device_map(ctx: JobContext) -> dict[str, str]:
    # Quantisation happens while loading, so the weights load straight onto the device they
    # train on (load_model then skips its `.to(device)`, which bnb models refuse). Under
    # accelerate each process takes its own GPU.
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if ctx.device == "cuda" else "cpu"
    return {"": device}


def bnb_config(quantization: Any, ctx: JobContext) -> Any:
    from transformers import BitsAndBytesConfig

    if isinstance(quantization, Bnb4bitQuantization):
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=quantization.method.removeprefix("bnb_"),
            bnb_4bit_use_double_quant=quantization.double_quant,
            bnb_4bit_compute_dtype=compute_dtype(ctx))
    assert isinstance(quantization, Bnb8bitQuantization)
    return BitsAndBytesConfig(load_in_8bit=True)


def gptq_config(source: str) -> dict[str, Any] | None:
    """The `quantization_config` of a GPTQ checkpoint's config.json, or None."""
    path = Path(source) / "config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text()).get("quantization_config") or {}
    return config if config.get("quant_method") == "gptq" else None


def size_gptq_cpu_pool() -> None:
    """Before gptqmodel loads a checkpoint: it sizes a CPU loader pool of 2 under a parent pool
    of cpu_count/2 workers, and fails on a 2-core host ("requests 2 workers but parent 'cpu'
    only has 1")."""
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, (os.cpu_count() or 2) // 2)))


def load_kwargs(quantization: Any, ctx: JobContext) -> dict[str, Any]:
    if quantization.method == "gptq":
        size_gptq_cpu_pool()
        # The checkpoint's own quantization_config decides; nothing to add but the device.
        return {"device_map": device_map(ctx)}
    return {"quantization_config": bnb_config(quantization, ctx), "device_map": device_map(ctx)}


def quantized_layers(model: Any) -> dict[str, int]:
    """Count the quantised linear layers by class (Linear4bit, Linear8bitLt, TorchQuantLinear)."""
    counts: dict[str, int] = {}
    for module in model.modules():
        cls = type(module)
        if cls.__module__.startswith(("bitsandbytes", "gptqmodel")):
            counts[cls.__name__] = counts.get(cls.__name__, 0) + 1
    return counts


def prepare_base(model: Any, quantization: Any, ctx: JobContext) -> Any:
    """Check the base really is quantised, say how, and freeze it for k-bit training."""
    from peft import prepare_model_for_kbit_training

    layers = quantized_layers(model)
    if not layers:
        # A silent fall-back to a full-precision base would pass for quantised but use 4x
        # the memory.
        raise RuntimeError(f"quantization {quantization.method}: the base model loaded "
                           "without any quantised layer")
    detail = quantization.method
    if isinstance(quantization, Bnb4bitQuantization) and quantization.double_quant:
        detail += " double-quantised"
    ctx.event(f"Quantised base ({detail}, compute "
              f"{str(compute_dtype(ctx)).removeprefix('torch.')}): "
              + ", ".join(f"{n} {name}" for name, n in sorted(layers.items())),
              data={"quantization": {**quantization.model_dump(), "layers": layers}})
    # Freezes the base and upcasts its non-quantised half-precision parameters (norms,
    # embeddings) to fp32. Gradient checkpointing is left to the trainer.
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def on_quantized_base(plan: TuningPlan, ctx: JobContext) -> TuningPlan:
    """`plan` with the job's quantisation: loaded quantised, prepared before it applies."""
    quantization = ctx.spec.quantization
    if quantization is None:
        return plan

    def load(tuning: Any, job: JobContext) -> dict[str, Any]:
        return {**plan.load_kwargs(tuning, job), **load_kwargs(quantization, job)}

    def apply(model: Any, tuning: Any, task: ModelTask, job: JobContext) -> Any:
        model = prepare_base(model, quantization, job)
        if quantization.method == "gptq" and getattr(tuning, "target_modules", "") == "all-linear":
            # peft's "all-linear" finds torch Linear layers only, and GPTQ's are not: name them.
            tuning = tuning.model_copy(update={"target_modules": sorted({
                name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                if type(module).__module__.startswith("gptqmodel")})})
        return plan.apply(model, tuning, task, job)

    return replace(plan, load_kwargs=load, apply=apply)


def is_quantized(ctx: JobContext) -> bool:
    return ctx.spec.quantization is not None or isinstance(ctx.spec.tuning, QLoraTuning)


def choose_optimizer(ctx: JobContext, memory: Any) -> tuple[str | None, str]:
    """The optimizer of a quantised job and why (None: the trainer's default, AdamW).

    QLoRA's paged AdamW keeps its state in CUDA unified memory that pages out to the CPU
    when the GPU runs short, so a memory spike (a long batch under checkpointing) slows a
    step instead of killing the job. 32-bit state where the memory estimate fits the free
    memory (the paper's choice); 8-bit state, a quarter of the bytes, where it does not.
    """
    if not is_quantized(ctx):
        return None, ""
    if ctx.device != "cuda":
        return None, ("paged optimizers need CUDA unified memory, which the CPU does not "
                      "have: AdamW (torch)")
    if memory is None:
        return "paged_adamw_32bit", "paged AdamW, 32-bit state (no memory estimate)"
    state = memory.estimate.as_gib()["optimizer_gib"]
    if memory.estimate.fits_resident(memory.free_bytes):
        return "paged_adamw_32bit", (f"paged AdamW, 32-bit state ({state} GiB): the estimate "
                                     "fits the free memory with the state resident")
    return "paged_adamw_8bit", (f"paged AdamW, 8-bit state (a quarter of {state} GiB): with "
                                "32-bit state resident the estimate does not fit the free "
                                "memory, so it would page to the host")
