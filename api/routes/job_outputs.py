"""What a job produces: checkpoints and artifacts."""

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from api.deps import CurrentProject, SessionDep
from api.errors import InvalidRequest, NotFound, error_responses
from api.routes.jobs import get_job
from api.serializers import artifact_object, checkpoint_object, list_object
from tunesmith import storage
from tunesmith.db.models import Artifact, Checkpoint

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["jobs"])


@router.get("/{job_id}/checkpoints", responses=error_responses(400, 404))
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


@router.get("/{job_id}/artifacts", responses=error_responses(404))
def read_artifacts(session: SessionDep, project: CurrentProject, job_id: str) -> dict[str, Any]:
    """The job's results (adapter, model, reward model) with size and sha256."""
    get_job(session, project, job_id)
    rows = session.scalars(sa.select(Artifact).where(Artifact.job_id == job_id)
                           .order_by(Artifact.name)).all()
    return list_object([artifact_object(a) for a in rows], has_more=False)


@router.get("/{job_id}/artifacts/{name:path}", response_class=FileResponse, responses={
    200: {"description": "The file", "content": {"application/octet-stream": {
        "schema": {"type": "string", "format": "binary"}}}}, **error_responses(404)})
def read_artifact(session: SessionDep, project: CurrentProject, job_id: str,
                  name: str) -> FileResponse:
    """Download one artifact file by its name from the list."""
    get_job(session, project, job_id)
    artifact = session.scalar(sa.select(Artifact).where(Artifact.job_id == job_id,
                                                        Artifact.name == name))
    if artifact is None:
        raise NotFound(f"No artifact '{name}' in job '{job_id}'.", param="name")
    try:
        path = storage.safe_join(storage.artifacts_dir(job_id), artifact.name)
    except storage.UnsafePath as exc:
        raise NotFound(f"No artifact '{name}' in job '{job_id}'.", param="name") from exc
    return FileResponse(path, filename=path.name, media_type="application/octet-stream",
                        headers={"X-Checksum-Sha256": artifact.sha256})
