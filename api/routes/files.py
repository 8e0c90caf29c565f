"""`/v1/files`: upload, list, read and delete JSONL data sets."""

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Form, Header, Query, Request, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse

from api import idempotency
from api.deps import CurrentProject, SessionDep
from api.errors import Conflict, InvalidRequest, NotFound, TooLarge, error_responses
from api.project_lock import hold_project
from api.schemas.files import FileDeleted, FileList, FileObject
from api.schemas.media import binary
from api.serializers import file_object, list_object
from tunesmith import storage
from tunesmith.db.models import File, Job
from tunesmith.ids import new_id
from tunesmith.jobs.states import TERMINAL
from tunesmith.json_input import Line, iter_lines
from tunesmith.settings import settings
from tunesmith.spec.data_formats import FileCheck, check_jsonl
from tunesmith.spec.job import file_uses, stored_spec

router = APIRouter(prefix="/v1/files", tags=["files"])

PURPOSES = {"fine-tune", "fine-tune-results", "batch", "user_data", "assistants"}


def _lines(path: Path) -> Iterator[Line]:
    # The worker reads the stored file through the same reader (worker/training/context.py).
    with path.open("rb") as handle:
        yield from iter_lines(handle, max_line_bytes=settings.max_line_bytes)


def _refusal(filename: str, check: FileCheck) -> InvalidRequest:
    """The bad lines, first ones in the message and all kept ones in `details`."""
    problems = check.problems
    said = [f"line {p.line}: {p.message}" if p.line else p.message for p in problems]
    bad = len(problems) + check.more_problems
    message = f"{filename}: {said[0]}"
    if bad > 1:
        message += f" (and {bad - 1} more bad lines: " + "; ".join(said[1:])
        message += (f"; {check.more_problems} more not listed)" if check.more_problems else ")")
    details = [{"line": p.line, "message": p.message} for p in problems]
    return InvalidRequest(message, param="file", code="invalid_file", details=details)


async def _spool(upload: UploadFile, target: Path) -> tuple[int, str]:
    """Copy the upload to `target`, refusing it past the size limit. Returns (bytes, sha256)."""
    digest, size = hashlib.sha256(), 0
    with target.open("wb") as out:
        while chunk := await upload.read(storage.CHUNK):
            size += len(chunk)
            if size > settings.max_upload_bytes:
                raise TooLarge(f"File is over the upload limit of {settings.max_upload_bytes} "
                               "bytes.", param="file")
            digest.update(chunk)
            out.write(chunk)
    return size, digest.hexdigest()


@router.post("", status_code=200, response_model=FileObject,
             responses=error_responses(400, 409, 413))
async def create_file(
    request: Request, session: SessionDep, project: CurrentProject, file: UploadFile,
    purpose: Annotated[str, Form()] = "fine-tune",
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Any:
    """Upload a JSONL data set; every bad line is reported with its number."""
    idempotency.check_key(idempotency_key)
    # FastAPI hands over the last of several parts of one name; which file did the user
    # mean? Refused rather than guessed (the form is parsed already: no second read).
    for name in ("file", "purpose"):
        if len((await request.form()).getlist(name)) > 1:
            raise InvalidRequest(f"{name}: send one '{name}' part per upload, not several.",
                                 param=name, code="duplicate_part")
    if purpose not in PURPOSES:
        raise InvalidRequest(f"Unknown purpose '{purpose}'; use 'fine-tune'.", param="purpose")
    filename = os.path.basename(file.filename or "upload.jsonl")[:255] or "upload.jsonl"
    settings.ensure_dirs()
    file_id = new_id("file")
    target = storage.file_path(file_id)
    partial = target.with_suffix(".partial")
    key: dict[str, Any] = {"project_id": project.id, "route": "files", "key": idempotency_key}
    claimed = stored = False
    try:
        size, sha256 = await _spool(file, partial)
        record = idempotency.claim(session, **key,
                                   body_hash=idempotency.request_hash(sha256, purpose, filename))
        if record is not None:
            # A retry: the first upload's copy is the file; this one's bytes are not kept.
            partial.unlink(missing_ok=True)
            return JSONResponse(record.body, status_code=record.status_code)
        claimed = True
        check = check_jsonl(_lines(partial), max_line_bytes=settings.max_line_bytes,
                            max_rows=settings.max_rows_per_file)
        if not check.ok or check.format is None:  # ok: a format was found
            raise _refusal(filename, check)
        row = File(id=file_id, project_id=project.id, filename=filename, purpose=purpose,
                   bytes=size, sha256=sha256, format=check.format.value, row_count=check.rows)
        session.add(row)
        session.flush()
        body = file_object(row)
        idempotency.complete(session, **key, status_code=200, body=body)
        partial.rename(target)
        storage.keep_file(file_id)  # into the store before the row that names it commits
        stored = True
        session.commit()
    except BaseException:
        session.rollback()
        partial.unlink(missing_ok=True)
        if (target.exists() or stored) and session.get(File, file_id) is None:
            storage.drop_file(file_id)
        if claimed:
            idempotency.release(session, **key)
        raise
    return body


def _get_file(session: SessionDep, project: CurrentProject, file_id: str) -> File:
    file = session.get(File, file_id)
    if file is None or file.project_id != project.id or file.status == "deleted":
        raise NotFound(f"No file '{file_id}' in this project.", param="file_id")
    return file


@router.get("", response_model=FileList)
def read_files(
    session: SessionDep, project: CurrentProject,
    after: str | None = None, limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    purpose: str | None = None,
) -> dict[str, Any]:
    """List the project's files, newest first."""
    query = sa.select(File).where(File.project_id == project.id, File.status != "deleted")
    if purpose:
        query = query.where(File.purpose == purpose)
    if after:
        query = query.where(File.id < after)
    rows = session.scalars(query.order_by(File.id.desc()).limit(limit + 1)).all()
    return list_object([file_object(f) for f in rows[:limit]], has_more=len(rows) > limit,
                       empty_id="")


@router.get("/{file_id}", response_model=FileObject, responses=error_responses(404))
def read_file(session: SessionDep, project: CurrentProject, file_id: str) -> dict[str, Any]:
    """One file's metadata."""
    return file_object(_get_file(session, project, file_id))


@router.get("/{file_id}/content", response_class=StreamingResponse, responses={
    **binary("The file's bytes", "application/jsonl", "text/csv"), **error_responses(404)})
def read_file_content(session: SessionDep, project: CurrentProject,
                      file_id: str) -> StreamingResponse:
    """The file's bytes as uploaded, or a job's results CSV (purpose fine-tune-results)."""
    file = _get_file(session, project, file_id)
    return StreamingResponse(storage.open_file(file.id),
                             media_type="text/csv" if file.format == "csv"
                             else "application/jsonl")


def _unfinished_job_using(session: SessionDep, project_id: str, file_id: str) -> str | None:
    # Unfinished jobs of one project are few (the queued cap plus what runs): read them all.
    unfinished = session.scalars(
        sa.select(Job).where(Job.project_id == project_id,
                             Job.status.not_in([s.value for s in TERMINAL]))
        .order_by(Job.id))
    # Every file a job reads, whichever field of whichever method names it.
    return next((job.id for job in unfinished
                 if any(use.file_id == file_id for use in file_uses(stored_spec(job.spec)))),
                None)


@router.delete("/{file_id}", response_model=FileDeleted, responses=error_responses(404, 409))
def delete_file(session: SessionDep, project: CurrentProject, file_id: str) -> dict[str, Any]:
    """Delete a file that no unfinished job still reads."""
    file = _get_file(session, project, file_id)
    hold_project(session, project.id)  # no job is created on this file while we look
    busy = _unfinished_job_using(session, project.id, file.id)
    if busy:
        raise Conflict(f"File '{file_id}' is in use by job '{busy}'; cancel it or wait.",
                       param="file_id", code="file_in_use")
    # Finished jobs keep naming the file, so the row stays (marked deleted); the bytes go.
    file.status = "deleted"
    session.commit()
    storage.drop_file(file.id)
    return {"id": file.id, "object": "file", "deleted": True}
