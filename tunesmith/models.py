"""Model names: a folder under the models root, or a hub id where downloads are allowed.

Names are resolved here only, so no job can read a model from an arbitrary path.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from tunesmith.settings import settings
from tunesmith.storage import UnsafePath, safe_join

# A local name ("tiny-llama") or a hub id ("org/name"): no "..", no absolute paths.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


class ModelNotFound(LookupError):
    pass


class BadModelName(ValueError):
    pass


@dataclass(frozen=True)
class ModelLocation:
    name: str
    source: str  # "local" or "hub"
    path_or_id: str


def resolve_model(name: str) -> ModelLocation:
    if not _NAME.match(name) or ".." in name:
        raise BadModelName(
            f"'{name}' is not a model name: use a folder name under the models root or a hub "
            "id like 'org/name' (letters, digits, '.', '_', '-'; no paths)."
        )
    try:
        folder = safe_join(settings.models_dir, name)
    except UnsafePath as exc:
        raise BadModelName(str(exc)) from exc
    if (folder / "config.json").is_file():
        return ModelLocation(name, "local", str(folder))
    if settings.allow_hub_downloads and "/" in name:
        return ModelLocation(name, "hub", name)
    known = sorted(p.name for p in settings.models_dir.glob("*") if (p / "config.json").is_file()) \
        if settings.models_dir.is_dir() else []
    hint = f" Known models: {', '.join(known)}." if known else \
        " Build the tiny test model with `tunesmith tiny-model`."
    if not settings.allow_hub_downloads:
        hint += " Hub downloads are off (TUNESMITH_ALLOW_HUB_DOWNLOADS)."
    # The server's own paths are none of a client's business: say "models root".
    raise ModelNotFound(f"Model '{name}' not found in the models root.{hint}")


def model_folder(root: Path, name: str) -> Path:
    return safe_join(root, name)
