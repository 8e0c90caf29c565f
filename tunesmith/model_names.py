"""Model names: a folder under the models root, or a hub id where downloads are allowed.

Names are resolved here only, so no job can read a model from an arbitrary path.
"""

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunesmith.settings import settings
from tunesmith.storage import UnsafePath, safe_join

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

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


# -- fine-tuned models: a job's `fine_tuned_model`, or one of its checkpoints ---------------

FINE_TUNED_PREFIX = "ft:"
_CHECKPOINT_PART = re.compile(r"^ckpt-step-(\d+)$")
_JOB_ID = re.compile(r"^ftjob-[0-9a-f]+$")
# Tunings whose result merges into the base weights (or is them): only these can be
# started from. Prompt-learning adapters and bottleneck adapters add modules instead.
MERGEABLE_TUNINGS = {"full", "lora", "qlora"}


@dataclass(frozen=True)
class FineTunedName:
    job_id: str
    step: int | None  # None: the job's final result


@dataclass(frozen=True)
class FineTunedSource:
    """Where the weights of a fine-tuned model lie, relative to its job's folder."""

    job_id: str
    step: int | None
    folder: str  # e.g. "artifacts/adapter" or "listed_checkpoints/step-20"
    base_model: str  # the model the source job trained on, as its user named it
    label: str  # "final" or "ckpt-step-N": names the merged copy the worker caches


def parse_fine_tuned(name: str) -> FineTunedName | None:
    """The job and step a fine-tuned model name points at, or None for a base model name.

    Accepted: a job's `fine_tuned_model` (`ft:<model>:<project>[:<suffix>]:<job id>`), that
    plus `:ckpt-step-N` (a checkpoint), and the older checkpoint form `<job id>:ckpt-step-N`.
    The job id is always the last part before the step, however the model part is spelled
    (it may itself be an `ft:` name).
    """
    parts = name.split(":")
    step = None
    if len(parts) > 1 and (match := _CHECKPOINT_PART.match(parts[-1])):
        step, parts = int(match[1]), parts[:-1]
    if name.startswith(FINE_TUNED_PREFIX):
        if len(parts) < 4:
            raise BadModelName(f"'{name}' is not a fine-tuned model name: expected "
                               "'ft:<model>:<project>[:<suffix>]:<job id>[:ckpt-step-N]'.")
    elif not (step is not None and len(parts) == 1):
        return None
    if not _JOB_ID.match(parts[-1]):
        raise BadModelName(f"'{name}' is not a fine-tuned model name: '{parts[-1]}' is not a "
                           "fine-tuning job id.")
    return FineTunedName(parts[-1], step)


def resolve_fine_tuned(session: "Session", name: str, *,
                       project_id: str | None) -> FineTunedSource:
    """The weights `name` points at. `project_id` None skips the owner check (the worker,
    which runs a job already checked at creation)."""
    import sqlalchemy as sa

    from tunesmith.db.models import Checkpoint, Job

    parsed = parse_fine_tuned(name)
    assert parsed is not None, name
    job = session.get(Job, parsed.job_id)
    if job is None or (project_id is not None and job.project_id != project_id):
        raise ModelNotFound(f"No fine-tuned model '{name}' in this project.")
    if job.method_type == "reward":
        raise BadModelName(f"'{name}' is a reward model (a sequence classifier); a job "
                           "starts from a causal language model.")
    if job.tuning_type not in MERGEABLE_TUNINGS:
        raise BadModelName(
            f"'{name}' was trained with tuning '{job.tuning_type}', which adds modules of its "
            f"own: a job can start from full, lora or qlora results only.")
    if parsed.step is None:
        if job.status != "succeeded" or (name.startswith(FINE_TUNED_PREFIX)
                                         and job.fine_tuned_model != name):
            raise ModelNotFound(f"No fine-tuned model '{name}' in this project (its job "
                                f"'{job.id}' is {job.status}).")
        kind = "model" if job.tuning_type == "full" else "adapter"
        stage = "ppo/" if job.method_type == "rlhf" else ""
        return FineTunedSource(job.id, None, f"artifacts/{stage}{kind}", job.model, "final")
    rows = session.scalars(sa.select(Checkpoint).where(
        Checkpoint.job_id == job.id, Checkpoint.step == parsed.step)).all()
    # An rlhf job counts steps per stage; its reward stage is no causal model.
    usable = [c for c in rows if (c.metrics or {}).get("stage") != "reward"]
    if not usable:
        raise ModelNotFound(f"No checkpoint at step {parsed.step} in job '{job.id}' "
                            f"('{name}'); GET /v1/fine_tuning/jobs/{job.id}/checkpoints "
                            "lists them.")
    newest = max(usable, key=lambda c: c.created_at)
    return FineTunedSource(job.id, parsed.step, newest.path, job.model,
                           f"ckpt-step-{parsed.step}")
