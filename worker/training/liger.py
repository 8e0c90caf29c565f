"""Liger's Triton kernels (RMSNorm, RoPE, SwiGLU) for the trainer, where they apply.

On the H200 they made a LoRA step 15 % faster at 15 % less peak memory (FACTS.md, GPU). They
are Triton, so CUDA only; liger-kernel is installed in the GPU image only; and Liger lists
the architectures it patches (MODEL_TYPE_TO_APPLY_LIGER_FN), so anything else stays as it is.
Only trl's SFTConfig trainers use them here: trl's DPO, GRPO and KTO trainers swap in Liger
*losses* of their own under the same flag, which is a different computation. The fused
linear cross-entropy stays off (trl forces it off too): our metrics and task losses read
the logits it would never build.
"""

from dataclasses import dataclass
from typing import Any

from tunesmith.model_names import resolve_model

KERNELS = {"rms_norm": True, "rope": True, "swiglu": True, "cross_entropy": False,
           "fused_linear_cross_entropy": False}


@dataclass(frozen=True)
class LigerChoice:
    on: bool
    reason: str

    def trainer_kwargs(self) -> dict[str, Any]:
        return {"use_liger_kernel": True, "liger_kernel_config": dict(KERNELS)} if self.on else {}


def supported_model_types() -> frozenset[str] | None:
    """The architectures the installed liger-kernel patches; None without liger-kernel."""
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except ImportError:
        return None
    return frozenset(MODEL_TYPE_TO_APPLY_LIGER_FN)


def choose(device: str, trainer: str, model_type: str | None,
           supported: frozenset[str] | None) -> LigerChoice:
    if device != "cuda":
        return LigerChoice(False, f"Liger kernels off: they need CUDA, this job runs on {device}")
    if trainer != "SFTConfig":
        return LigerChoice(False, f"Liger kernels off: not used with {trainer}")
    if supported is None:
        return LigerChoice(False, "Liger kernels off: liger-kernel is not installed")
    if model_type not in supported:
        return LigerChoice(False, f"Liger kernels off: none for architecture '{model_type}'")
    return LigerChoice(True, f"Liger kernels on (RMSNorm, RoPE, SwiGLU) for '{model_type}'")


def model_type(name: str) -> str | None:
    from transformers import AutoConfig

    from tunesmith.settings import settings

    location = resolve_model(name)
    try:
        return AutoConfig.from_pretrained(location.path_or_id,
                                          trust_remote_code=settings.trust_remote_code).model_type
    except Exception:  # the model load itself reports a bad model clearly; this only decides
        return None


def liger_for(device: str, trainer: str, model: str) -> LigerChoice:
    """Decide for a job; reads the model's config only where the answer could be yes."""
    if device != "cuda" or trainer != "SFTConfig":
        return choose(device, trainer, None, None)
    supported = supported_model_types()
    return choose(device, trainer, model_type(model) if supported else None, supported)
