"""Loading tokenizers and models by name, through the same path for the tiny model and the hub."""

from pathlib import Path
from typing import Any

from tunesmith.model_names import BadModelName, ModelNotFound, parse_fine_tuned, resolve_model
from tunesmith.settings import settings
from worker.process.hub_access import hub_kernels_on
from worker.registry import ModelTask, TuningPlan
from worker.training.context import JobContext


def model_source(ctx: JobContext, name: str | None = None) -> str:
    """What `from_pretrained` reads for the model `name` (default: the job's): a folder
    under the models root, a hub id, or the weights of a fine-tuned model ("ft:...")."""
    name = name or ctx.spec.model
    if parse_fine_tuned(name) is not None:
        from worker.training.fine_tuned import fine_tuned_folder

        return str(fine_tuned_folder(ctx, name))
    location = resolve_model(name)
    if location.source != "hub":
        return location.path_or_id
    if name not in _hub_folders:  # the tokenizer and the model: one download, one check
        from worker.training.hub_download import download

        _hub_folders[name] = download(
            name, lambda message, data: ctx.event(message, data=data))
    return _hub_folders[name]


# Hub models this training process has fetched: model name -> local snapshot folder.
_hub_folders: dict[str, str] = {}


def is_hub_model(name: str) -> bool:
    try:
        return parse_fine_tuned(name) is None and resolve_model(name).source == "hub"
    except (BadModelName, ModelNotFound):
        return False


def name_as_user_named(model: Any, name: str) -> Any:
    """Record `name`, not the folder it was read from: transformers and peft copy it into
    every saved config (`_name_or_path`, `base_model_name_or_path`, the model card), and a
    client loads the artifact by it."""
    model.config._name_or_path = name
    model.name_or_path = name
    return model


def load_tokenizer(ctx: JobContext, name: str | None = None) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_source(ctx, name),
                                              trust_remote_code=settings.trust_remote_code)
    if tokenizer.pad_token is None:
        # Many causal LMs ship without a pad token; padding with EOS is the usual choice,
        # and labels mask padding by attention, so EOS is still learned where it belongs.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def torch_dtype(precision: str) -> Any:
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def load_model(ctx: JobContext, plan: TuningPlan[Any], *, precision: str,
               task: ModelTask = "causal_lm", name: str | None = None,
               folder: Path | str | None = None, tokenizer: Any = None) -> Any:
    """Load a model for `task` with the job tuning's load options (QLoRA quantises it), on
    the job's device: the model `name` (default: the job's), resolved by name under the
    models root or on the hub so that no job can point at an arbitrary path; or a `folder`
    one of our jobs made (a reward model, an SFT stage's result)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    source = str(folder) if folder is not None else model_source(ctx, name)
    kwargs: dict[str, Any] = {
        "trust_remote_code": settings.trust_remote_code,
        "dtype": torch_dtype(precision),
        # SDPA is the fastest attention that needs no extra package on every device.
        "attn_implementation": "sdpa",
        # None lets USE_HUB_KERNELS decide (worker/process/hub_access.py sets it from the setting).
        "use_kernels": None if hub_kernels_on() else False,
        **plan.load_kwargs(ctx.spec.tuning, ctx),
    }
    if task == "seq_cls":
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=1, **kwargs)
        if tokenizer is not None:
            # The score is read at the last non-pad token, so the model must know pad.
            model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if folder is None:
        name_as_user_named(model, name or ctx.spec.model)
    if "device_map" not in kwargs:
        model.to(ctx.device)
    return model


def frozen(model: Any) -> Any:
    """Evaluation mode, no gradients: a model that scores or serves as a reference."""
    model.eval()
    model.requires_grad_(False)
    return model


def count_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
