"""Starting a job from a fine-tuned model or checkpoint (`"model": "ft:..."`).

A full model's folder is a base like any other. A LoRA or QLoRA adapter is merged into the
weights it was trained on, once, and the merged folder is kept beside its job
(`merged/final` or `merged/ckpt-step-N`): the new job then loads it as its base and applies
its own tuning on top, whatever that tuning is (a new LoRA, QLoRA on the merged weights, full
fine-tuning, a reward model initialised from them). Its artifacts name the `ft:` model as
their base.
"""

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from tunesmith import storage
from tunesmith.db.session import session_scope
from tunesmith.model_names import FineTunedSource, ModelNotFound, resolve_fine_tuned
from tunesmith.settings import settings
from worker.process.db_retry import with_db_retry

if TYPE_CHECKING:
    from worker.training.context import JobContext


# One training process loads its model (and tokenizer) several times: resolve each name once.
_FOLDERS: dict[str, Path] = {}


def fine_tuned_folder(ctx: "JobContext", name: str) -> Path:
    """A model folder holding the weights `name` names, ready for `from_pretrained`."""
    if name not in _FOLDERS:
        _FOLDERS[name] = _materialize(ctx, name)
    return _FOLDERS[name]


def _materialize(ctx: "JobContext", name: str) -> Path:
    def read() -> FineTunedSource:
        with session_scope() as session:
            return resolve_fine_tuned(session, name, project_id=None)

    source = with_db_retry(read, what="fine-tuned model")
    folder = storage.fetch_job_path(source.job_id, storage.job_dir(source.job_id)
                                    / source.folder)
    if (folder / "config.json").is_file():
        ctx.event(f"Starting from {name}: its full weights",
                  data={"fine_tuned_model": name, "job": source.job_id, "step": source.step})
        return folder
    if not (folder / "adapter_config.json").is_file():
        raise ModelNotFound(f"The weights of '{name}' are gone from the job's folder.")
    target = storage.job_dir(source.job_id) / "merged" / source.label
    if not (target / "config.json").is_file():
        _merge(ctx, folder, base=source.base_model, target=target)
    ctx.event(f"Starting from {name}: its adapter merged into {source.base_model}",
              data={"fine_tuned_model": name, "job": source.job_id, "step": source.step})
    return target


def _merge(ctx: "JobContext", adapter: Path, *, base: str, target: Path) -> None:
    """Merge `adapter` into `base` (itself possibly an ft: model) and save it at `target`."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from worker.training.modeling import model_source

    model = AutoModelForCausalLM.from_pretrained(
        model_source(ctx, base), dtype="auto", trust_remote_code=settings.trust_remote_code)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    merged.save_pretrained(partial, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(adapter)).save_pretrained(partial)
    try:
        partial.rename(target)
    except OSError:  # another job merged the same weights meanwhile: theirs will do
        shutil.rmtree(partial, ignore_errors=True)
