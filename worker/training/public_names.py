"""Files a client downloads name the model as its user named it, never by a server path.

transformers and peft record where a model was loaded from (`_name_or_path` in config.json,
`base_model_name_or_path` and `tokenizer_name_or_path` in adapter_config.json, `base_model:`
in the model card). `worker.training.modeling` names every model it loads by the job's model
name, so they hold that name; this pass over what we publish catches any server path that
got in some other way (a folder a stage or a merged base was loaded from), so none can leak.
"""

import re
from pathlib import Path

from tunesmith.settings import settings

# Small text files that may quote a path; weights are never rewritten.
TEXT_SUFFIXES = {".json", ".md", ".jinja", ".txt"}


def _server_paths() -> re.Pattern[str]:
    roots = sorted({str(settings.home_dir), str(settings.storage_root),
                    str(settings.models_dir)}, key=len, reverse=True)
    return re.compile("(?:" + "|".join(re.escape(r) for r in roots) + r")[^\s\"'\\,]*")


def public_text(text: str, model_name: str) -> str:
    return _server_paths().sub(model_name, text)


def name_the_model(folder: Path, model_name: str) -> None:
    """Rewrite server paths in the text files under `folder` to `model_name`, in place."""
    pattern = _server_paths()
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in TEXT_SUFFIXES:
            text = path.read_text(errors="surrogateescape")
            if pattern.search(text):
                path.write_text(pattern.sub(model_name, text), errors="surrogateescape")
