"""A fine-tuned model as one plain model: the adapter merged into its base, saved as a
safetensors `save_pretrained` folder that `AutoModelForCausalLM.from_pretrained` loads alone.

LoRA merges with peft's `merge_and_unload`. A QLoRA adapter is applied to the base loaded in
full precision (not re-quantised), so the merged weights are the dequantised base plus the
adapter's update. A full job's model is the merged model already. A base that is itself an
`ft:` model is merged first, recursively. A LoRA on a GPTQ checkpoint merges into the
checkpoint dequantised (worker/exports/gptq_merge.py).
"""

import json
from pathlib import Path
from typing import Any

from tunesmith import storage
from tunesmith.db.session import session_scope
from tunesmith.model_names import (
    FineTunedSource,
    parse_fine_tuned,
    resolve_fine_tuned,
    resolve_model,
)
from tunesmith.settings import settings
from worker.exports.gptq_merge import is_gptq_checkpoint, load_dequantized
from worker.process.db_retry import with_db_retry
from worker.training.public_names import name_the_model


def source_of(name: str) -> FineTunedSource:
    """Where the weights of the fine-tuned model `name` lie (any project: the API checked)."""
    def read() -> FineTunedSource:
        with session_scope() as session:
            return resolve_fine_tuned(session, name, project_id=None)

    return with_db_retry(read, what="fine-tuned model")


def weights_folder(source: FineTunedSource) -> Path:
    """The source's adapter or model folder on this node, fetched from the store (sha256
    checked) where another node trained it."""
    return storage.fetch_job_path(source.job_id, storage.job_dir(source.job_id) / source.folder)


def load_merged(source: FineTunedSource) -> Any:
    """The source's weights as one transformers model, adapters folded in."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder = weights_folder(source)
    if (folder / "config.json").is_file():  # a full model
        return AutoModelForCausalLM.from_pretrained(
            str(folder), dtype="auto", trust_remote_code=settings.trust_remote_code)
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"the weights of {source.job_id} ({source.folder}) are gone")
    base = load_base(source.base_model)
    return PeftModel.from_pretrained(base, str(folder)).merge_and_unload()


def load_base(name: str) -> Any:
    """A base model by the name a user gave it: a models-root folder, a hub id or `ft:...`."""
    from transformers import AutoModelForCausalLM

    if parse_fine_tuned(name) is not None:
        return load_merged(source_of(name))
    path_or_id = resolve_model(name).path_or_id
    if is_gptq_checkpoint(path_or_id):  # merged into its dequantised weights
        return load_dequantized(path_or_id)
    return AutoModelForCausalLM.from_pretrained(
        path_or_id, dtype="auto", trust_remote_code=settings.trust_remote_code)


def tokenizer_for(source: FineTunedSource) -> Any:
    """The tokenizer the job saved with its result, with the base's chat template if the
    saved one has none."""
    from transformers import AutoTokenizer

    folder = weights_folder(source)
    tokenizer = AutoTokenizer.from_pretrained(str(folder),
                                              trust_remote_code=settings.trust_remote_code)
    if not tokenizer.chat_template:
        name = source.base_model
        while parse_fine_tuned(name) is not None:
            name = source_of(name).base_model
        base = AutoTokenizer.from_pretrained(resolve_model(name).path_or_id,
                                             trust_remote_code=settings.trust_remote_code)
        tokenizer.chat_template = base.chat_template
    return tokenizer


def write_merged(source: FineTunedSource, target: Path, *, model_name: str) -> None:
    """Save the merged model and its tokenizer to `target`, named as the user named the base
    (`_name_or_path`), never by a server path."""
    model = load_merged(source)
    model.config._name_or_path = model_name
    model.name_or_path = model_name
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target), safe_serialization=True)
    tokenizer_for(source).save_pretrained(str(target))
    name_the_model(target, model_name)
    # transformers 5 no longer writes `_name_or_path`; record the base as the user named it,
    # as transformers 4 and peft's `base_model_name_or_path` do (loading ignores it).
    config_path = target / "config.json"
    config = json.loads(config_path.read_text())
    config["_name_or_path"] = model_name
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
