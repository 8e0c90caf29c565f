"""A GPTQ checkpoint as a plain model, for merging a LoRA trained on it (`merged` exports).

A LoRA trained on a GPTQ base (peft's GPTQ LoRA layers) cannot be folded into 4-bit packed
weights: peft's GPTQ layers have no merge, and re-quantising the sum would throw away most of
the update. So the base is dequantised to its own dtype first: each of gptqmodel's quantised
linear layers becomes a `torch.nn.Linear` holding `dequantize_weight()` (the same
scale * (q - zero) the GPTQ kernels multiply by), and the model's `quantization_config` goes.
The adapter then applies and merges as on any plain base, and the export loads with plain
`AutoModelForCausalLM.from_pretrained`, without gptqmodel. Its logits are base + adapter's up
to the rounding of the merged weights to the base dtype.
"""

from pathlib import Path
from typing import Any

from tunesmith.settings import settings
from worker.training.quantization import gptq_config, size_gptq_cpu_pool


def is_gptq_checkpoint(path_or_id: str) -> bool:
    """Whether a local model folder is a GPTQ checkpoint (its config.json says so)."""
    return Path(path_or_id).is_dir() and gptq_config(path_or_id) is not None


def load_dequantized(path: str) -> Any:
    """The GPTQ checkpoint at `path` with its quantised linear layers as plain ones."""
    import torch
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear
    from transformers import AutoModelForCausalLM

    size_gptq_cpu_pool()
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype="auto", device_map={"": "cpu"},
        trust_remote_code=settings.trust_remote_code)
    dtype = model.dtype  # the checkpoint's dtype (its unquantised layers keep it)
    quantised = [(name, module) for name, module in model.named_modules()
                 if isinstance(module, BaseQuantLinear)]
    if not quantised:
        raise RuntimeError(f"{path}: a GPTQ config.json, but no GPTQ layer loaded")
    with torch.no_grad():
        for name, module in quantised:
            # [in, out], possibly padded to the kernel's tile: cut to the layer's shape.
            weight = module.dequantize_weight()[:module.in_features, :module.out_features]
            linear = torch.nn.Linear(module.in_features, module.out_features,
                                     bias=module.bias is not None, dtype=dtype)
            linear.weight.copy_(weight.T.to(dtype))
            if module.bias is not None:
                linear.bias.copy_(module.bias.to(dtype))
            model.set_submodule(name, linear)
    # transformers' own undoing of a quantised load (what its `dequantize` ends with): no
    # quantizer, no quantization_config (peft refuses to merge into a "gptq" model, and the
    # folder saves as a plain model of the base's dtype).
    model.hf_quantizer.remove_quantization_config(model)
    return model
