"""Downloads of a job's files (checkpoints, artifacts, exports): one file from local disk,
streamed from the store or redirected to it, or a listed folder as a streamed `.tar.gz`
(DESIGN §8 "Archives")."""

from pathlib import Path

from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from api.errors import NotFound
from api.schemas.media import Responses, binary
from tunesmith import storage
from tunesmith.archives import stream_tar_gz

ARCHIVE_SUFFIX = ".tar.gz"
# Where the operator lets clients fetch from the object store directly.
_REDIRECT: Responses = {307: {"description": "Redirect to a presigned URL of the store"}}
FILE_RESPONSE: Responses = {**binary("The file", "application/octet-stream"), **_REDIRECT}
ARCHIVE_RESPONSE = binary("The folder as one gzip-compressed tar, streamed", "application/gzip")
FILE_OR_FOLDER_RESPONSE: Responses = {
    **binary("The file, or with `.tar.gz` after a folder's name the folder as one "
             "gzip-compressed tar, streamed", "application/octet-stream", "application/gzip"),
    **_REDIRECT}


def archive(members: list[tuple[str, storage.Blob]], filename: str) -> StreamingResponse:
    """`members` (name in the archive, the job's file) as one streamed `.tar.gz`."""
    return StreamingResponse(stream_tar_gz(members), media_type="application/gzip",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def folder_archive(job_id: str, root: Path, folder: str, names: list[str]) -> StreamingResponse:
    """The listed files `names` (paths under `root`) of `folder`, unpacking to the folder's
    own name: `sft/adapter.tar.gz` gives `adapter/...`. Raises storage.UnsafePath."""
    top = folder.rsplit("/", 1)[-1]
    return archive([(f"{top}/{name.removeprefix(folder + '/')}",
                     storage.Blob(job_id, storage.safe_join(root, name))) for name in names],
                   f"{top}{ARCHIVE_SUFFIX}")


def download(job_id: str, path: Path, sha256: str) -> Response:
    """A file of the job's: from local disk, streamed from the store, or a redirect to a
    presigned URL of the store where the operator allows it."""
    headers = {"X-Checksum-Sha256": sha256}
    if storage.remote() is None:
        return FileResponse(path, filename=path.name, media_type="application/octet-stream",
                            headers=headers)
    blob = storage.Blob(job_id, path)
    if url := blob.url(path.name):
        return RedirectResponse(url, status_code=307, headers=headers)
    try:
        size = blob.size
    except FileNotFoundError as exc:
        raise NotFound(f"No file '{path.name}' in the store.", param="name") from exc
    return StreamingResponse(blob.chunks(), media_type="application/octet-stream", headers={
        **headers, "Content-Length": str(size),
        "Content-Disposition": f'attachment; filename="{path.name}"'})
