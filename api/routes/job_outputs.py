"""What a job produces: checkpoints and artifacts, downloaded file by file or a folder at a
time as a streamed `.tar.gz` (DESIGN §8 "Archives" and "Checkpoints")."""

import json
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from api.deps import CurrentProject, SessionDep
from api.downloads import (
    ARCHIVE_RESPONSE,
    ARCHIVE_SUFFIX,
    FILE_OR_FOLDER_RESPONSE,
    FILE_RESPONSE,
    archive,
    download,
    folder_archive,
)
from api.errors import InvalidRequest, NotFound, error_responses
from api.routes.jobs import get_job
from api.schemas.outputs import ArtifactList, CheckpointFileList, CheckpointList
from api.serializers import artifact_object, checkpoint_object, list_object
from tunesmith import storage
from tunesmith.db.models import Artifact, Checkpoint

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["jobs"])


@router.get("/{job_id}/checkpoints", response_model=CheckpointList,
            responses=error_responses(400, 404))
def read_checkpoints(
    session: SessionDep, project: CurrentProject, job_id: str,
    after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    """Checkpoints with their step and metrics, newest first."""
    job = get_job(session, project, job_id)
    query = sa.select(Checkpoint).where(Checkpoint.job_id == job_id)
    if after:
        anchor = session.get(Checkpoint, after)
        if anchor is None or anchor.job_id != job_id:
            raise InvalidRequest(f"after: no checkpoint '{after}' in this job.", param="after")
        query = query.where(Checkpoint.step < anchor.step)
    rows = session.scalars(query.order_by(Checkpoint.step.desc()).limit(limit + 1)).all()
    return list_object([checkpoint_object(c, job) for c in rows[:limit]],
                       has_more=len(rows) > limit)


def _listed_checkpoint(session: SessionDep, project: CurrentProject, job_id: str,
                       checkpoint_id: str) -> tuple[Checkpoint, Path, list[dict[str, Any]]]:
    """A listed checkpoint of this job, its folder and its files (name, bytes, sha256)."""
    get_job(session, project, job_id)
    checkpoint = session.get(Checkpoint, checkpoint_id)
    missing = NotFound(f"No checkpoint '{checkpoint_id}' in job '{job_id}'.",
                       param="checkpoint_id")
    if checkpoint is None or checkpoint.job_id != job_id:
        raise missing
    folder = storage.job_dir(job_id) / checkpoint.path
    try:
        manifest = json.loads(storage.read_job_file(job_id, storage.checkpoint_manifest(folder)))
    except (OSError, ValueError) as exc:  # unlisted a moment ago by its job's worker
        raise missing from exc
    return checkpoint, folder, manifest


@router.get("/{job_id}/checkpoints/{checkpoint_id}/files", response_model=CheckpointFileList,
            responses=error_responses(404))
def read_checkpoint_files(session: SessionDep, project: CurrentProject, job_id: str,
                          checkpoint_id: str) -> dict[str, Any]:
    """A checkpoint's files (the adapter or model folder it saved) with size and sha256."""
    _, _, manifest = _listed_checkpoint(session, project, job_id, checkpoint_id)
    base = f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}/files"
    return list_object([{"object": "fine_tuning.job.checkpoint.file", **entry,
                         "url": f"{base}/{entry['name']}"} for entry in manifest],
                       has_more=False)


@router.get("/{job_id}/checkpoints/{checkpoint_id}/files/{name:path}",
            response_class=Response, responses={**FILE_RESPONSE, **error_responses(404)})
def read_checkpoint_file(session: SessionDep, project: CurrentProject, job_id: str,
                         checkpoint_id: str, name: str) -> Response:
    """Download one file of a checkpoint by its name from the list."""
    _, folder, manifest = _listed_checkpoint(session, project, job_id, checkpoint_id)
    entry = next((e for e in manifest if e["name"] == name), None)
    if entry is None:
        raise NotFound(f"No file '{name}' in checkpoint '{checkpoint_id}'.", param="name")
    return download(job_id, storage.safe_join(folder, entry["name"]), entry["sha256"])


@router.get("/{job_id}/checkpoints/{checkpoint_id}.tar.gz", response_class=StreamingResponse,
            responses={**ARCHIVE_RESPONSE, **error_responses(404)})
def read_checkpoint_archive(session: SessionDep, project: CurrentProject, job_id: str,
                            checkpoint_id: str) -> StreamingResponse:
    """The checkpoint's folder as one `.tar.gz` (unpacks to `<job id>-step-<N>/`)."""
    checkpoint, folder, manifest = _listed_checkpoint(session, project, job_id, checkpoint_id)
    stage = (checkpoint.metrics or {}).get("stage")
    top = f"{job_id}{'-' + stage if stage else ''}-step-{checkpoint.step}"
    return archive([(f"{top}/{e['name']}", storage.Blob(job_id, storage.safe_join(folder,
                                                                                e["name"])))
                    for e in manifest], f"{top}{ARCHIVE_SUFFIX}")


@router.get("/{job_id}/artifacts", response_model=ArtifactList, responses=error_responses(404))
def read_artifacts(session: SessionDep, project: CurrentProject, job_id: str) -> dict[str, Any]:
    """The job's results (adapter, model, reward model) with size and sha256."""
    get_job(session, project, job_id)
    rows = session.scalars(sa.select(Artifact).where(Artifact.job_id == job_id)
                           .order_by(Artifact.name)).all()
    return list_object([artifact_object(a) for a in rows], has_more=False)


@router.get("/{job_id}/artifacts/{name:path}", response_class=Response,
            responses={**FILE_OR_FOLDER_RESPONSE, **error_responses(404)})
def read_artifact(session: SessionDep, project: CurrentProject, job_id: str,
                  name: str) -> Response:
    """Download one artifact file by its name from the list, or a folder as `<folder>.tar.gz`."""
    get_job(session, project, job_id)
    missing = NotFound(f"No artifact '{name}' in job '{job_id}'.", param="name")
    artifact = session.scalar(sa.select(Artifact).where(Artifact.job_id == job_id,
                                                        Artifact.name == name))
    root = storage.artifacts_dir(job_id)
    if artifact is None and name.endswith(ARCHIVE_SUFFIX):
        folder = name.removesuffix(ARCHIVE_SUFFIX).strip("/")
        names = session.scalars(sa.select(Artifact.name).where(
            Artifact.job_id == job_id, Artifact.name.startswith(f"{folder}/"))
            .order_by(Artifact.name)).all()
        if not folder or not names:
            raise missing
        try:
            return folder_archive(job_id, root, folder, list(names))
        except storage.UnsafePath as exc:
            raise missing from exc
    if artifact is None:
        raise missing
    try:
        path = storage.safe_join(root, artifact.name)
    except storage.UnsafePath as exc:
        raise missing from exc
    return download(job_id, path, artifact.sha256)

