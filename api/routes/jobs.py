"""`/v1/fine_tuning/jobs`: create, list, retrieve and cancel fine-tuning jobs."""

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from api import idempotency
from api.deps import CurrentProject, SessionDep
from api.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    RateLimited,
    TooLarge,
    error_responses,
)
from api.json_body import json_object
from api.project_lock import hold_project
from api.schemas.jobs import DryRun, JobList, JobObject
from api.serializers import job_object, list_object
from tunesmith.db.models import File, Job, Project
from tunesmith.dry_run import read_config
from tunesmith.jobs.dispatch import dispatch
from tunesmith.jobs.lifecycle import Refused
from tunesmith.jobs.operations import cancel, create, pause, resume
from tunesmith.jobs.states import JobStatus
from tunesmith.model_modules import matches, short_names, weight_modules
from tunesmith.model_names import (
    BadModelName,
    ModelLocation,
    ModelNotFound,
    parse_fine_tuned,
    resolve_fine_tuned,
    resolve_model,
)
from tunesmith.settings import settings
from tunesmith.spec.job import JobSpec, file_uses, reward_model_reference
from tunesmith.spec.objectives import PPOMethod
from tunesmith.spec.quantization import base_refusal
from tunesmith.spec.tunings import LoraTuning

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["jobs"])
log = logging.getLogger(__name__)


@contextmanager
def refused_as_conflict(param: str) -> Iterator[None]:
    """An operation the row's status does not allow is answered 409, naming the row."""
    try:
        yield
    except Refused as exc:
        raise Conflict(str(exc), param=param, code=exc.code) from exc


def get_job(session: Session, project: Project, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.project_id != project.id:
        raise NotFound(f"No fine-tuning job '{job_id}' in this project.", param="job_id")
    return job


def _check_references(session: Session, project: Project, spec: JobSpec) -> None:
    """Every file the spec names is this project's and holds rows the method can read."""
    for use in file_uses(spec):
        file = session.get(File, use.file_id)
        if file is None or file.project_id != project.id or file.status == "deleted":
            raise InvalidRequest(f"{use.field}: no file '{use.file_id}' in this project.",
                                 param=use.field, code="file_not_found")
        if file.format not in use.formats:
            wanted = " or ".join(sorted(f.value for f in use.formats))
            raise InvalidRequest(
                f"{use.field}: file '{file.id}' ({file.filename}) holds {file.format} rows, but "
                f"method '{spec.method.type}' needs {wanted} rows here.",
                param=use.field, code="invalid_training_file")
    try:
        fine_tuned = parse_fine_tuned(spec.model)
        if fine_tuned is not None:  # "ft:...": this project's fine-tuned model or checkpoint
            resolve_fine_tuned(session, spec.model, project_id=project.id)
    except (BadModelName, ModelNotFound) as exc:
        raise InvalidRequest(f"model: {exc}", param="model", code="model_not_found") from exc
    if fine_tuned is None:
        location = _resolve(spec.model, "model")
        _check_quantization(spec, location)
        if isinstance(spec.tuning, LoraTuning) and isinstance(spec.tuning.target_modules, list):
            _check_target_modules(spec.tuning.target_modules, location)
    if isinstance(spec.method, PPOMethod) and spec.method.ppo.reward_model.model is not None:
        _resolve(spec.method.ppo.reward_model.model, "method.ppo.reward_model.model")
    reward_job_id = reward_model_reference(spec)
    if reward_job_id is not None:
        reward_job = session.get(Job, reward_job_id)
        if (reward_job is None or reward_job.project_id != project.id
                or reward_job.method_type != "reward"
                or reward_job.status != JobStatus.succeeded):
            raise InvalidRequest(
                f"method.ppo.reward_model.job: '{reward_job_id}' is not a succeeded reward job "
                "of this project.", param="method.ppo.reward_model.job", code="invalid_reference")


def _check_quantization(spec: JobSpec, location: ModelLocation) -> None:
    """A GPTQ checkpoint is trained as published, with the GPTQ library, or refused."""
    config = read_config(location)
    why = base_refusal(spec.quantization.method if spec.quantization else None, config,
                       location.name)
    if why is not None:
        raise InvalidRequest(why, param="quantization", code="invalid_quantization")


def _resolve(name: str, field: str) -> ModelLocation:
    """A model name through the one safe resolution (no paths, no `..`); the error names the
    field and never the server's folders."""
    try:
        return resolve_model(name)
    except (BadModelName, ModelNotFound) as exc:
        raise InvalidRequest(f"{field}: {exc}", param=field, code="model_not_found") from exc


def _check_target_modules(targets: list[str], location: ModelLocation) -> None:
    """Each name must match a module LoRA can adapt: peft drops one that matches nothing
    (what the user asked for, silently not done) and fails the job when none match."""
    modules = weight_modules(Path(location.path_or_id)) if location.source == "local" else None
    if modules is None:
        return  # a hub model: the worker checks when it has downloaded it
    missing = [target for target in targets if not matches(target, modules)]
    if missing:
        raise InvalidRequest(
            f"tuning.target_modules: {', '.join(repr(m) for m in missing[:5])} "
            f"match{'es' if len(missing) == 1 else ''} no linear module of model "
            f"'{location.name}'; its linear modules are: {', '.join(short_names(modules))}.",
            param="tuning.target_modules", code="invalid_target_modules")


def _parse_spec(raw: bytes) -> tuple[JobSpec, bool]:
    """The spec, and whether the body asks for a dry run (`"dry_run": true`)."""
    # The one JSON reader of user input (tunesmith/json_input.py): no NaN/Infinity, no
    # oversized integers, no deep nesting, no lone surrogates, none of which could be
    # stored and read back.
    # raw_body has already refused a body over the size limit with 413.
    body = json_object(raw, needs="model and training_file",
                       max_bytes=settings.max_job_body_bytes)
    dry = body.pop("dry_run", False)
    if not isinstance(dry, bool):
        raise InvalidRequest("dry_run: must be true or false.", param="dry_run")
    try:
        return JobSpec.model_validate(body), dry
    except ValidationError as exc:
        from fastapi.exceptions import RequestValidationError

        raise RequestValidationError(
            [_locate(e) for e in exc.errors(include_url=False)]
        ) from exc


def _locate(error: Any) -> Any:
    """The error under the body, and a spec-wide check's error under the field it names first
    ("training_file is required" -> training_file, "method.supervised.padding_free cannot"
    -> method.supervised.padding_free), so `param` says what to fix."""
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    loc = tuple(error["loc"])
    named = message.split(" ", 1)[0].split(".")
    if not loc and named[0] in JobSpec.model_fields:
        if named[0] == "method" and len(named) > 2:
            # pydantic's own locations carry the union's tag, the method type, twice:
            # method.supervised.supervised.x; errors.py drops the tag again.
            named.insert(1, named[1])
        loc = tuple(named)
    return {**error, "msg": message, "loc": ("body", *loc)}


# The body is read raw (its bytes key Idempotency-Key); its schema is the job spec.
JOB_SPEC_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}}}}}


async def raw_body(request: Request) -> bytes:
    """The body, refused with 413 past the limit before it is all read: a declared length
    over it is refused at once, and the bytes are counted as they arrive (a chunked body
    declares none)."""
    limit = settings.max_job_body_bytes
    too_large = TooLarge(f"Request body is over the limit of {limit} bytes for a job spec.",
                         code="body_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


# A plain `def`: its database calls then run in the thread pool. As `async def` they ran on
# the event loop, and at 64 concurrent creates one waiting for a pooled connection froze
# every request (bench: 1.3 requests/s and 500s).
# Unset fields stay out: `method` is sent only for the method types OpenAI knows.
@router.post("", response_model=JobObject | DryRun, response_model_exclude_unset=True,
             responses=error_responses(400, 409, 413), openapi_extra=JOB_SPEC_BODY)
def create_job(
    raw: Annotated[bytes, Depends(raw_body)], session: SessionDep, project: CurrentProject,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Any:
    """Create a job from a spec (OpenAI's fields plus `tuning`); it is queued at once.
    With `"dry_run": true` nothing is stored or queued: the answer is the resolved
    hyperparameters, the memory estimate and the GPU classes the job fits."""
    idempotency.check_key(idempotency_key)
    spec, dry = _parse_spec(raw)
    if dry:
        return _dry_run(session, project, spec)
    key: dict[str, Any] = {"project_id": project.id, "route": "jobs", "key": idempotency_key}
    record = idempotency.claim(session, **key, body_hash=idempotency.request_hash(raw))
    if record is not None:
        return JSONResponse(record.body, status_code=record.status_code)
    try:
        job = _insert_job(session, project, spec)
        body = job_object(job)
        idempotency.complete(session, **key, status_code=200, body=body)
        session.commit()
    except BaseException:
        session.rollback()
        try:
            idempotency.release(session, **key)
        except Exception:  # the database is away: the claim is taken over once abandoned
            log.exception("could not release Idempotency-Key %r", idempotency_key)
        raise
    dispatch(session, job)
    return body


def _dry_run(session: Session, project: Project, spec: JobSpec) -> dict[str, Any]:
    """The answer of a dry run: the references checked as at creation, nothing written."""
    from tunesmith.dry_run import GpuClassesError, dry_run, parse_gpu_classes

    _check_references(session, project, spec)
    files = [session.get(File, use.file_id) for use in file_uses(spec)
             if use.field != "validation_file"]
    rows = sum(file.row_count or 0 for file in files if file is not None)
    location = None if parse_fine_tuned(spec.model) is not None else resolve_model(spec.model)
    try:
        classes = parse_gpu_classes(settings.gpu_classes)
    except GpuClassesError as exc:  # the server's setting, not the request, is at fault
        log.error("%s", exc)
        classes = {}
    answer = dry_run(spec, location, rows=rows, gpu_classes=classes)
    if location is None:
        answer["notes"].append("a fine-tuned model's shape is its base's: name the base "
                               "model for a memory estimate")
    return answer


def _insert_job(session: Session, project: Project, spec: JobSpec) -> Job:
    """The job row and its first event, in the caller's transaction, if the references
    hold and the project has room in its queue."""
    # Held first: a file is not deleted between its check and the job's commit, and the
    # count and the insert it allows are one step (a count then an insert let 113 jobs in
    # against a cap of 100).
    hold_project(session, project.id)
    _check_references(session, project, spec)
    queued = session.scalar(sa.select(sa.func.count()).select_from(Job).where(
        Job.project_id == project.id, Job.status == JobStatus.queued.value)) or 0
    if queued >= settings.max_queued_jobs_per_project:
        raise RateLimited(f"This project has {queued} queued jobs, the most allowed; wait for "
                          "some to start.", code="too_many_queued_jobs",
                          headers={"Retry-After": "30"})
    return create(session, project.id, spec)


@router.get("", response_model=JobList, response_model_exclude_unset=True)
def read_jobs(
    request: Request, session: SessionDep, project: CurrentProject,
    after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 20,
    status: JobStatus | None = None,
) -> dict[str, Any]:
    """List jobs, newest first (cursor `after`, filters `status` and `metadata[key]=value`)."""
    query = sa.select(Job).where(Job.project_id == project.id)
    if status is not None:
        query = query.where(Job.status == status.value)
    if after:
        query = query.where(Job.id < after)
    metadata = {k[len("metadata["):-1]: v for k, v in request.query_params.items()
                if k.startswith("metadata[") and k.endswith("]")}
    if metadata and session.get_bind().dialect.name == "postgresql":
        # jsonb containment (@>), which the GIN index ix_jobs_metadata serves: a rare label
        # is found without walking the project's jobs.
        query = query.where(sa.type_coerce(Job.metadata_, JSONB).contains(metadata))
    else:
        for key, value in metadata.items():  # SQLite: json_extract per key
            query = query.where(Job.metadata_[key].as_string() == value)
    found = session.scalars(query.order_by(Job.id.desc()).limit(limit + 1)).all()
    rows, has_more = list(found[:limit]), len(found) > limit
    return list_object([job_object(j) for j in rows], has_more=has_more)


@router.get("/{job_id}", response_model=JobObject, response_model_exclude_unset=True,
            responses=error_responses(404))
def read_job(session: SessionDep, project: CurrentProject, job_id: str) -> dict[str, Any]:
    """The job: status, progress, last metrics, error, result files."""
    return job_object(get_job(session, project, job_id))


def _requested(session: Session, project: Project, job_id: str,
               operation: Callable[[Session, Job], object]) -> dict[str, Any]:
    """A cancel, pause or resume of the project's job; refused (409) from its status."""
    job = get_job(session, project, job_id)
    with refused_as_conflict("job_id"):
        operation(session, job)
    return job_object(job)


@router.post("/{job_id}/cancel", response_model=JobObject, response_model_exclude_unset=True,
             responses=error_responses(404, 409))
def cancel_job(session: SessionDep, project: CurrentProject, job_id: str) -> dict[str, Any]:
    """Cancel: a queued job at once; a running one stops within seconds and frees its GPU."""
    return _requested(session, project, job_id, cancel)


@router.post("/{job_id}/pause", response_model=JobObject, response_model_exclude_unset=True,
             responses=error_responses(404, 409))
def pause_job(session: SessionDep, project: CurrentProject, job_id: str) -> dict[str, Any]:
    """Pause: a queued job at once; a running one saves a checkpoint and frees its worker
    within seconds. `resume` continues from that checkpoint."""
    return _requested(session, project, job_id, pause)


@router.post("/{job_id}/resume", response_model=JobObject, response_model_exclude_unset=True,
             responses=error_responses(404, 409))
def resume_job(session: SessionDep, project: CurrentProject, job_id: str) -> dict[str, Any]:
    """Resume a paused job: it is queued again and continues from its last checkpoint."""
    return _requested(session, project, job_id, resume)
