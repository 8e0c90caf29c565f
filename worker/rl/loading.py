"""Loading models for RL from folders a job made (a reward model, an SFT stage's result).

`worker.modeling.load_model` loads by model *name* (resolved under the models root, so no job
can point at an arbitrary path); the folders here come from our own job folders or from a
resolved name, and load with the same options.
"""

from pathlib import Path
from typing import Any

from tunesmith.settings import settings
from worker.context import JobContext
from worker.modeling import torch_dtype
from worker.registry import TuningPlan


def load_pretrained(ctx: JobContext, plan: TuningPlan, folder: Path | str, *, precision: str,
                    task: str = "causal_lm", tokenizer: Any = None) -> Any:
    """A causal LM or a one-output sequence classifier ("seq_cls") from `folder`, with the
    tuning's load options (QLoRA quantises it), on the job's device."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {
        "trust_remote_code": settings.trust_remote_code,
        "dtype": torch_dtype(precision),
        "attn_implementation": "sdpa",
        **plan.load_kwargs(ctx.spec.tuning, ctx),
    }
    if task == "seq_cls":
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=1,
                                                                   **kwargs)
        if tokenizer is not None:
            # The score is read at the last non-pad token, so the model must know pad.
            model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    if "device_map" not in kwargs:
        model.to(ctx.device)
    return model


def frozen(model: Any) -> Any:
    """Evaluation mode, no gradients: a model that scores or serves as a reference."""
    model.eval()
    model.requires_grad_(False)
    return model
