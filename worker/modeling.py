"""Loading tokenizers and models by name, through the same path for the tiny model and the hub."""

from typing import Any

from tunesmith.models import resolve_model
from tunesmith.settings import settings
from worker.context import JobContext
from worker.hub_access import hub_kernels_on
from worker.registry import TuningPlan


def load_tokenizer(ctx: JobContext, name: str | None = None) -> Any:
    from transformers import AutoTokenizer

    location = resolve_model(name or ctx.spec.model)
    tokenizer = AutoTokenizer.from_pretrained(location.path_or_id,
                                              trust_remote_code=settings.trust_remote_code)
    if tokenizer.pad_token is None:
        # Many causal LMs ship without a pad token; padding with EOS is the usual choice,
        # and labels mask padding by attention, so EOS is still learned where it belongs.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def torch_dtype(precision: str) -> Any:
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def load_model(ctx: JobContext, plan: TuningPlan, tuning: Any, *, precision: str,
               task: str = "causal_lm", name: str | None = None,
               tokenizer: Any = None) -> Any:
    """Load the base model for `task` ("causal_lm" or "seq_cls") with the tuning's options."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    location = resolve_model(name or ctx.spec.model)
    kwargs: dict[str, Any] = {
        "trust_remote_code": settings.trust_remote_code,
        "dtype": torch_dtype(precision),
        # SDPA is the fastest attention that needs no extra package on every device.
        "attn_implementation": "sdpa",
        # None lets USE_HUB_KERNELS decide (worker/hub_access.py sets it from the setting).
        "use_kernels": None if hub_kernels_on() else False,
        **plan.load_kwargs(tuning, ctx),
    }
    if task == "seq_cls":
        model = AutoModelForSequenceClassification.from_pretrained(
            location.path_or_id, num_labels=1, **kwargs)
        if tokenizer is not None:
            # The score is read at the last non-pad token, so the model must know pad.
            model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = AutoModelForCausalLM.from_pretrained(location.path_or_id, **kwargs)
    if "device_map" not in kwargs:
        model.to(ctx.device)
    return model


def count_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
