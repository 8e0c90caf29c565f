"""Exports (DESIGN §8): a fine-tuned model written out as a merged safetensors folder or one
GGUF file, by a worker, and downloaded like a job's artifacts."""

import json
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session

from api.deps import CurrentProject, SessionDep
from api.downloads import ARCHIVE_SUFFIX, FILE_OR_FOLDER_RESPONSE, download, folder_archive
from api.errors import Conflict, InvalidRequest, NotFound, error_responses
from api.json_body import json_object
from api.routes.jobs import get_job, raw_body, refused_as_conflict
from api.schemas.exports import ExportArtifactList, ExportList, ExportObject
from api.serializers import list_object
from tunesmith import storage
from tunesmith.db.models import Checkpoint, Export, Job, Project
from tunesmith.exports.storage import export_dir
from tunesmith.jobs import exports as export_ops
from tunesmith.jobs.exports import ExportStatus
from tunesmith.model_names import BadModelName, ModelNotFound, parse_fine_tuned, resolve_model

router = APIRouter(tags=["exports"])

FORMATS = ("merged", "gguf")
QUANTIZATIONS = ("f16", "q8_0")
FIELDS = {"format", "quantization", "checkpoint"}
# Tunings that train virtual tokens or key/value prefixes: nothing to fold into the weights.
PROMPT_LEARNING = {"prefix", "p_tuning", "p_tuning_v2", "prompt"}
LLAMA_ARCHITECTURES = {"LlamaForCausalLM", "MistralForCausalLM"}
EXPORT_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "additionalProperties": False, "required": ["format"], "properties": {
        "format": {"type": "string", "enum": list(FORMATS)},
        "quantization": {"type": "string", "enum": list(QUANTIZATIONS),
                         "description": "gguf only; default f16."},
        "checkpoint": {"type": "integer", "minimum": 0,
                       "description": "The step of a listed checkpoint; default: the job's "
                                      "final result."}}}}}}}


def export_object(export: Export) -> dict[str, Any]:
    base = f"/v1/exports/{export.id}/artifacts"
    return {
        "object": "fine_tuning.export", "id": export.id, "fine_tuning_job_id": export.job_id,
        "status": export.status, "format": export.format,
        "quantization": export.quantization, "checkpoint": export.checkpoint_step,
        "artifacts": [{**a, "url": f"{base}/{a['name']}"} for a in export.artifacts or []],
        "error": export.error, "created_at": export.created_at,
        "started_at": export.started_at, "finished_at": export.finished_at,
    }


def _body(raw: bytes) -> dict[str, Any]:
    body = json_object(raw, needs="`format`")
    if unknown := sorted(set(body) - FIELDS):
        raise InvalidRequest(f"{unknown[0]}: unknown field; an export takes "
                             f"{', '.join(sorted(FIELDS))}.", param=unknown[0])
    fmt = body.get("format")
    if fmt not in FORMATS:
        raise InvalidRequest(f"format: must be one of {', '.join(FORMATS)}; got {fmt!r}.",
                             param="format")
    quantization = body.get("quantization")
    if fmt == "merged" and quantization is not None:
        raise InvalidRequest("quantization: applies to gguf exports only; a merged export "
                             "keeps the base model's dtype.", param="quantization")
    if fmt == "gguf":
        quantization = quantization or "f16"
        if quantization not in QUANTIZATIONS:
            raise InvalidRequest(f"quantization: must be one of {', '.join(QUANTIZATIONS)}; "
                                 f"got {quantization!r}.", param="quantization")
    step = body.get("checkpoint")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise InvalidRequest("checkpoint: must be a checkpoint's step number (an integer "
                             ">= 0).", param="checkpoint")
    return {"format": fmt, "quantization": quantization, "checkpoint": step}


def _root_base(session: Session, name: str) -> str:
    """The base model under a chain of `ft:` models: its config says the architecture."""
    seen = 0
    while (parsed := parse_fine_tuned(name)) is not None and seen < 32:
        job = session.get(Job, parsed.job_id)
        if job is None:
            break
        name, seen = job.model, seen + 1
    return name


def _check_exportable(session: Session, job: Job, fmt: str, step: int | None) -> None:
    """Refuse, naming the field, what no worker could write."""
    if job.tuning_type in PROMPT_LEARNING:
        raise InvalidRequest(f"format: a '{job.tuning_type}' tuning trains virtual tokens that "
                             "exist only at run time; they cannot be merged into the weights, "
                             "so it has no merged or gguf export. Serve it with its adapter.",
                             param="format")
    if job.tuning_type == "adapter":
        raise InvalidRequest("format: bottleneck adapters apply a nonlinearity (relu, gelu or "
                             "silu) between their projections, which no change of the base "
                             "weights reproduces; they cannot be merged.", param="format")
    if job.method_type == "reward":
        raise InvalidRequest("format: a reward job yields a sequence classifier, not a causal "
                             "language model to merge or run in llama.cpp.", param="format")
    # What the model can never have comes before what its job has not (yet) got.
    if fmt == "gguf":
        base = _root_base(session, job.model)
        try:
            config = json.loads((Path(resolve_model(base).path_or_id) / "config.json")
                                .read_text())
        except (BadModelName, ModelNotFound, OSError, ValueError):
            config = {}  # a hub model: the worker reads its config and fails if need be
        architectures = set(config.get("architectures") or [])
        if config and not architectures & LLAMA_ARCHITECTURES:
            raise InvalidRequest(
                f"format: gguf exports are written for Llama-family models; '{base}' is "
                f"{', '.join(sorted(architectures)) or config.get('model_type', 'unknown')}. "
                "Use format 'merged'.", param="format")
    if step is None and job.status != "succeeded":
        raise Conflict(f"Job '{job.id}' is {job.status}; only a succeeded job's result can be "
                       "exported (or name one of its listed checkpoints in `checkpoint`).",
                       param="job_id", code="job_not_succeeded")
    if step is not None:
        rows = session.scalars(sa.select(Checkpoint).where(
            Checkpoint.job_id == job.id, Checkpoint.step == step)).all()
        if not [c for c in rows if (c.metrics or {}).get("stage") != "reward"]:
            raise InvalidRequest(f"checkpoint: job '{job.id}' lists no checkpoint at step "
                                 f"{step}; GET /v1/fine_tuning/jobs/{job.id}/checkpoints "
                                 "lists them.", param="checkpoint")


def get_export(session: Session, project: Project, export_id: str) -> Export:
    export = session.get(Export, export_id)
    if export is None or export.project_id != project.id:
        raise NotFound(f"No export '{export_id}' in this project.", param="export_id")
    return export


@router.post("/v1/fine_tuning/jobs/{job_id}/exports", response_model=ExportObject,
             responses=error_responses(400, 404, 409), openapi_extra=EXPORT_BODY)
def create_export(raw: Annotated[bytes, Depends(raw_body)], session: SessionDep,
                  project: CurrentProject, job_id: str) -> dict[str, Any]:
    """Export the job's result (or a listed checkpoint) as `merged` or `gguf`; a worker runs
    it, and its files download from `/v1/exports/{id}/artifacts`."""
    job = get_job(session, project, job_id)
    body = _body(raw)
    _check_exportable(session, job, body["format"], body["checkpoint"])
    export = export_ops.create_export(
        session, project_id=project.id, job_id=job.id, fmt=body["format"],
        quantization=body["quantization"], checkpoint_step=body["checkpoint"])
    session.commit()
    # After the commit, so a worker never receives an id it cannot read.
    export_ops.dispatch_export(session, export)
    return export_object(export)


@router.get("/v1/fine_tuning/jobs/{job_id}/exports", response_model=ExportList,
            responses=error_responses(404))
def list_exports(session: SessionDep, project: CurrentProject, job_id: str,
                 after: str | None = None,
                 limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    """The job's exports, newest first."""
    get_job(session, project, job_id)
    query = sa.select(Export).where(Export.job_id == job_id)
    if after:
        query = query.where(Export.id < after)
    rows = session.scalars(query.order_by(Export.id.desc()).limit(limit + 1)).all()
    return list_object([export_object(e) for e in rows[:limit]], has_more=len(rows) > limit)


@router.get("/v1/exports/{export_id}", response_model=ExportObject,
            responses=error_responses(404))
def read_export(session: SessionDep, project: CurrentProject, export_id: str) -> dict[str, Any]:
    return export_object(get_export(session, project, export_id))


@router.post("/v1/exports/{export_id}/cancel", response_model=ExportObject,
             responses=error_responses(404, 409))
def cancel_export(session: SessionDep, project: CurrentProject,
                  export_id: str) -> dict[str, Any]:
    """Cancel a queued or running export; a running one's files are discarded when its worker
    finishes writing them."""
    export = get_export(session, project, export_id)
    with refused_as_conflict("export_id"):
        export_ops.cancel_export(session, export)
    if export.status == ExportStatus.cancelled:  # here or in the store, whichever holds it
        storage.drop_job_path(export.job_id, export_dir(export.job_id, export.id))
    return export_object(export)


@router.get("/v1/exports/{export_id}/artifacts", response_model=ExportArtifactList,
            responses=error_responses(404))
def read_export_artifacts(session: SessionDep, project: CurrentProject,
                          export_id: str) -> dict[str, Any]:
    """The export's files with size and sha256 (empty until it succeeds)."""
    export = get_export(session, project, export_id)
    return list_object([{"object": "fine_tuning.export.artifact", **a,
                         "url": f"/v1/exports/{export.id}/artifacts/{a['name']}"}
                        for a in export.artifacts or []], has_more=False)


@router.get("/v1/exports/{export_id}/artifacts/{name:path}", response_class=Response,
            responses={**FILE_OR_FOLDER_RESPONSE, **error_responses(404)})
def read_export_artifact(session: SessionDep, project: CurrentProject, export_id: str,
                         name: str) -> Response:
    """Download one file by its name from the list, or a folder as `<folder>.tar.gz`."""
    export = get_export(session, project, export_id)
    missing = NotFound(f"No artifact '{name}' in export '{export_id}'.", param="name")
    listed = {a["name"]: a for a in export.artifacts or []}
    root = export_dir(export.job_id, export.id)
    try:
        if name in listed:
            return download(export.job_id, storage.safe_join(root, name),
                             listed[name]["sha256"])
        folder = name.removesuffix(ARCHIVE_SUFFIX).strip("/")
        names = sorted(n for n in listed if n.startswith(f"{folder}/"))
        if not name.endswith(ARCHIVE_SUFFIX) or not folder or not names:
            raise missing
        return folder_archive(export.job_id, root, folder, names)
    except storage.UnsafePath as exc:
        raise missing from exc
