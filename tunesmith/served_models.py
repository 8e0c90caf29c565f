"""The models a project can use for inference (`/v1/models`): base models and the project's
fine-tuned models (each job's result and each listed checkpoint), whatever their tuning.

`tunesmith.model_names` resolves `ft:` names for starting jobs, where only mergeable tunings
count; here every causal tuning counts, and a name resolves to the folders the inference
process loads (`ModelRef` there, a plain dict here: the API imports no torch).

A job's folders are named relative to the job (`weights_job`, `base_job`), not as this
node's paths: with an S3 store the API's home is scratch, and the inference process fetches
them from the store into a cache of its own (inference/fetched.py).
"""

from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tunesmith import storage
from tunesmith.db.models import Artifact, Checkpoint, Job
from tunesmith.model_names import (
    FINE_TUNED_PREFIX,
    BadModelName,
    ModelNotFound,
    parse_fine_tuned,
    resolve_model,
)
from tunesmith.settings import settings
from tunesmith.spec.job import stored_spec
from tunesmith.spec.tunings import AdapterTuning

NO_SUCH_MODEL = ("This model does not exist or you do not have access to it; GET /v1/models "
                 "lists the models you can use.")


@dataclass(frozen=True)
class ServedModel:
    model_id: str
    base_path: str  # a base model's folder or hub id; relative to base_job's folder if set
    tuning: str | None  # None: a base model
    weights_path: str | None  # relative to weights_job's folder
    # A bottleneck job's checkpoint is the trainer's whole-model save, without the
    # artifact's bottleneck_config.json: the adapters' settings, from the job's spec.
    bottleneck: dict[str, Any] | None = None
    weights_job: str | None = None
    base_job: str | None = None  # a fine-tuned model's job whose weights are the base

    def as_ref(self) -> dict[str, Any]:
        return asdict(self)


def base_model_names() -> list[str]:
    root = settings.models_dir
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())


def _weights_folder(job: Job, step: int | None, session: Session) -> tuple[str, Checkpoint | None]:
    """The job's folder-relative weights for its result (step None) or a listed checkpoint."""
    if step is None:
        kind = "model" if job.tuning_type == "full" else "adapter"
        stage = "ppo/" if job.method_type == "rlhf" else ""
        return f"artifacts/{stage}{kind}", None
    rows = session.scalars(sa.select(Checkpoint).where(
        Checkpoint.job_id == job.id, Checkpoint.step == step)).all()
    usable = [c for c in rows if (c.metrics or {}).get("stage") != "reward"]
    if not usable:
        raise ModelNotFound(f"No checkpoint at step {step} in job '{job.id}'; "
                            f"GET /v1/fine_tuning/jobs/{job.id}/checkpoints lists them.")
    newest = max(usable, key=lambda c: c.created_at)
    return newest.path, newest


def _fine_tuned_job(session: Session, name: str, project_id: str | None) -> tuple[Job, int | None]:
    parsed = parse_fine_tuned(name)
    assert parsed is not None, name
    job = session.get(Job, parsed.job_id)
    if job is None or (project_id is not None and job.project_id != project_id):
        # The name is not echoed: a 404 for another project's model reads exactly as one
        # for a model that exists nowhere (tests/api/test_auth.py).
        raise ModelNotFound(NO_SUCH_MODEL)
    if parsed.step is None and (job.status != "succeeded" or (
            name.startswith(FINE_TUNED_PREFIX) and job.fine_tuned_model != name)):
        raise ModelNotFound(f"This model does not exist (its job '{job.id}' is {job.status}).")
    if job.method_type == "reward":
        raise BadModelName(f"'{name}' is a reward model (a sequence classifier): it scores "
                           "text and does not generate it.")
    return job, parsed.step


def _base_path(session: Session, name: str) -> tuple[str, str | None]:
    """The folder (or hub id) of the model a job trained on, and the job whose folder it is
    relative to (None: a base model)."""
    if parse_fine_tuned(name) is None:
        return resolve_model(name).path_or_id, None
    job, step = _fine_tuned_job(session, name, None)
    relative, _ = _weights_folder(job, step, session)
    if storage.job_path_exists(job.id, storage.job_dir(job.id) / relative / "config.json"):
        return relative, job.id
    # The worker merged the adapter once, for the job that started from it (worker/fine_tuned).
    merged = f"merged/{'final' if step is None else f'ckpt-step-{step}'}"
    if not storage.job_path_exists(job.id, storage.job_dir(job.id) / merged / "config.json"):
        raise ModelNotFound(f"The merged weights of '{name}' are gone.")
    return merged, job.id


def resolve_served(session: Session, name: str, *, project_id: str) -> ServedModel:
    """What the inference process loads for `name`; ModelNotFound for another project's."""
    if parse_fine_tuned(name) is None:
        if name not in base_model_names():
            raise ModelNotFound(NO_SUCH_MODEL)
        return ServedModel(name, resolve_model(name).path_or_id, None, None)
    job, step = _fine_tuned_job(session, name, project_id)
    relative, _ = _weights_folder(job, step, session)
    folder = storage.job_dir(job.id) / relative
    if not storage.job_path_exists(job.id, folder):
        raise ModelNotFound(f"The model '{name}' does not exist (its weights were deleted).")
    bottleneck = None
    if job.tuning_type == "adapter" and not storage.job_path_exists(
            job.id, folder / "bottleneck_config.json"):
        tuning = stored_spec(job.spec).tuning
        assert isinstance(tuning, AdapterTuning)
        bottleneck = tuning.model_dump(include={"size", "placement", "nonlinearity", "dropout"})
    base_path, base_job = _base_path(session, job.model)
    return ServedModel(name, base_path, job.tuning_type, relative, bottleneck,
                       weights_job=job.id, base_job=base_job)


def checkpoint_model_id(job: Job, step: int) -> str:
    return f"{job.fine_tuned_model or job.id}:ckpt-step-{step}"


def project_models(session: Session, project_id: str) -> list[dict[str, Any]]:
    """OpenAI model objects: base models first, then fine-tuned ones (newest job first)."""
    bases = [{"id": name, "object": "model", "created": 0, "owned_by": "tunesmith"}
             for name in base_model_names()]
    jobs = session.scalars(sa.select(Job).where(
        Job.project_id == project_id, Job.method_type != "reward",
    ).order_by(Job.created_at.desc())).all()
    tuned: list[dict[str, Any]] = []
    for job in jobs:
        owner = f"project-{job.project_id}"
        final = storage.job_dir(job.id) / _weights_folder(job, None, session)[0]
        if job.status == "succeeded" and job.fine_tuned_model and storage.job_path_exists(
                job.id, final):
            tuned.append(_model_object(job.fine_tuned_model, job, owner))
        for checkpoint in session.scalars(sa.select(Checkpoint).where(
                Checkpoint.job_id == job.id).order_by(Checkpoint.step.desc())):
            if (checkpoint.metrics or {}).get("stage") != "reward":
                tuned.append(_model_object(checkpoint_model_id(job, checkpoint.step), job,
                                           owner, created=checkpoint.created_at))
    return bases + tuned


def _model_object(model_id: str, job: Job, owner: str,
                  created: int | None = None) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created or job.finished_at
            or job.created_at, "owned_by": owner,
            # Ours: where it came from.
            "fine_tuning_job_id": job.id, "tuning": job.tuning_type, "parent": job.model}


def delete_model(session: Session, name: str, *, project_id: str) -> None:
    """Remove a fine-tuned model's weights (its job stays). Rows go before files, so no
    listing names a folder that is gone (worker/listed_checkpoints keeps that order too)."""
    if parse_fine_tuned(name) is None:
        raise BadModelName(f"'{name}' is a base model: only fine-tuned models can be deleted.")
    job, step = _fine_tuned_job(session, name, project_id)
    relative, checkpoint = _weights_folder(job, step, session)
    folder = storage.job_dir(job.id) / relative
    if checkpoint is not None:
        session.execute(sa.delete(Checkpoint).where(Checkpoint.job_id == job.id,
                                                    Checkpoint.step == step))
    else:
        if not storage.job_path_exists(job.id, folder):
            raise ModelNotFound(f"The model '{name}' does not exist (already deleted).")
        prefix = relative.removeprefix("artifacts/") + "/"
        session.execute(sa.delete(Artifact).where(Artifact.job_id == job.id,
                                                  Artifact.name.startswith(prefix)))
    session.commit()
    storage.drop_job_path(job.id, folder)
