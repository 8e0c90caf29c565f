"""Where uploaded files and job outputs live: a local folder, or an S3-compatible store.

Code reads and writes the local paths below and calls this module's functions to say what
should be kept (`keep_*`), fetched (`fetch_*`, `local_file`), read (`open_*`, `blob`) or
removed (`drop_*`); they decide where the bytes go. With the local folder (the default, under
TUNESMITH_HOME) the paths are the store and those calls do nothing more. With
`TUNESMITH_STORAGE_URL=s3://bucket/prefix` the paths are a scratch folder (`home/scratch`):
the API spools uploads there and a worker trains there, and every kept file goes to the
store under the same relative name (`files/<id>.jsonl`, `jobs/<id>/...`), so any node
can serve or resume what another wrote.
"""

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from tunesmith.settings import settings

if TYPE_CHECKING:
    from tunesmith.storage.s3 import S3Store

CHUNK = 1024 * 1024


class UnsafePath(ValueError):
    """A name that would resolve outside its root (`..`, an absolute path, a link out)."""


def safe_join(root: Path, name: str) -> Path:
    """`root/name`, refused unless it stays inside root after resolving links and `..`."""
    if not name or "\x00" in name or os.path.isabs(name):
        raise UnsafePath(f"'{name}' is not a relative name")
    root = root.resolve()
    path = (root / name).resolve()
    if path != root and root not in path.parents:
        raise UnsafePath(f"'{name}' points outside its folder")
    return path


def file_path(file_id: str) -> Path:
    return safe_join(settings.files_dir, f"{file_id}.jsonl")


def job_dir(job_id: str) -> Path:
    return safe_join(settings.jobs_dir, job_id)


def artifacts_dir(job_id: str) -> Path:
    return job_dir(job_id) / "artifacts"


def checkpoints_dir(job_id: str) -> Path:
    return job_dir(job_id) / "checkpoints"


def listed_checkpoints_dir(job_id: str) -> Path:
    """The checkpoints the API lists, each a folder that loads like the job's result.

    Apart from the trainer's own folder (`checkpoints_dir`), whose rotation deletes old
    checkpoints and which holds pickled optimizer state: a listed checkpoint stays on disk
    until it is unlisted, in the same step (worker/training/listed_checkpoints.py).
    """
    return job_dir(job_id) / "listed_checkpoints"


def checkpoint_manifest(folder: Path) -> Path:
    """The files of a listed checkpoint folder: JSON [{"name", "bytes", "sha256"}]."""
    return folder.with_name(folder.name + ".files.json")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def iter_file(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from iter(lambda: handle.read(CHUNK), b"")


# -- the store ------------------------------------------------------------------------------

@cache
def remote() -> "S3Store | None":
    """The S3-compatible store, or None where the local folder is the store."""
    if not settings.storage_is_s3:
        return None
    from tunesmith.storage.s3 import S3Store  # boto3 only where a store is configured

    assert settings.storage_url is not None
    return S3Store(settings.storage_url, endpoint_url=settings.s3_endpoint_url,
                   multipart_bytes=settings.s3_multipart_bytes)


def _file_name(file_id: str) -> str:
    return file_path(file_id).relative_to(settings.files_dir.resolve().parent).as_posix()


def _job_name(job_id: str, path: Path) -> str:
    """A path inside the job's folder as its object name (`jobs/<id>/<relative>`)."""
    return path.resolve().relative_to(settings.jobs_dir.resolve().parent).as_posix()


# -- uploaded files (and results CSVs) --------------------------------------------------------

def keep_file(file_id: str) -> None:
    """The file at `file_path(file_id)` is complete: put it in the store (then off scratch)."""
    store = remote()
    if store is not None:
        path = file_path(file_id)
        store.put(_file_name(file_id), path, sha256_of(path))
        path.unlink(missing_ok=True)


def local_file(file_id: str) -> Path:
    """A local copy of a stored file, fetched to scratch (sha256 checked) when needed."""
    path = file_path(file_id)
    store = remote()
    if store is not None and not path.is_file():
        store.get(_file_name(file_id), path)
    return path


def open_file(file_id: str) -> Iterator[bytes]:
    store = remote()
    return iter_file(file_path(file_id)) if store is None else store.chunks(_file_name(file_id))


def drop_file(file_id: str) -> None:
    file_path(file_id).unlink(missing_ok=True)
    store = remote()
    if store is not None:
        store.delete([_file_name(file_id)])


# -- job outputs: checkpoints and artifacts -------------------------------------------------

def keep_job_path(job_id: str, path: Path, *, last: str | None = None) -> None:
    """Put a file, or every file under a folder, of the job's folder in the store. A file
    named `last` goes last: a reader takes the folder as complete once it is there."""
    store = remote()
    if store is None:
        return
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == last)
    for file in files:
        store.put(_job_name(job_id, file), file, sha256_of(file))


def drop_job_path(job_id: str, path: Path) -> None:
    """Remove a file or folder of the job's folder, locally and from the store."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    store = remote()
    if store is not None:
        name = _job_name(job_id, path)
        store.delete([name, *store.names(name)])


def clear_job_scratch(job_id: str) -> None:
    """With a store: remove the job's folder from this node's scratch, its log kept in the
    store first. For a job that has ended: all it keeps is in the store, and a later reader
    (an export, a job started from it, vLLM) fetches what it needs again. Without this a GPU
    node's disk fills with the checkpoints of every job it ever ran. Nothing where the local
    folder is the store."""
    store = remote()
    if store is None:
        return
    folder = job_dir(job_id)
    log = folder / "train.log"
    if log.is_file():
        keep_job_path(job_id, log)
    shutil.rmtree(folder, ignore_errors=True)


def fetch_job_path(job_id: str, path: Path, *, into: Path | None = None) -> Path:
    """A folder of the job's (checkpoint, artifact) on local disk, fetched from the store
    file by file (sha256 checked) where it is not on this node's scratch. `into`: fetch to
    that folder instead (a cache of the caller's own; the job's path itself where the local
    folder is the store)."""
    store = remote()
    if store is None:
        return path
    target = into or path
    if not target.exists():
        name = _job_name(job_id, path)
        for child in store.names(name):
            store.get(child, target / child.removeprefix(name + "/"))
    return target


def job_path_exists(job_id: str, path: Path) -> bool:
    """Whether a file or folder of the job's folder is kept (on local disk or in the store)."""
    if path.exists():
        return True
    store = remote()
    if store is None:
        return False
    name = _job_name(job_id, path)
    if store.names(name):  # a folder (the common case: one request)
        return True
    try:
        store.size(name)
        return True
    except FileNotFoundError:
        return False


def stored_folders(job_id: str, folder: Path) -> list[str]:
    """Names of the sub-folders of a job's folder in the store ([] on the local backend)."""
    store = remote()
    if store is None:
        return []
    name = _job_name(job_id, folder)
    return sorted({n.removeprefix(name + "/").split("/", 1)[0] for n in store.names(name)
                   if "/" in n.removeprefix(name + "/")})


def copy_job_file(job_id: str, source: Path, target: Path) -> None:
    """Copy a file of the job's folder to another name in it (a hard link on local disk)."""
    store = remote()
    if store is not None:
        store.copy(_job_name(job_id, source), _job_name(job_id, target))
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def read_job_file(job_id: str, path: Path) -> bytes:
    """A (small) file of the job's folder; FileNotFoundError where there is none."""
    store = remote()
    return path.read_bytes() if store is None else store.read(_job_name(job_id, path))


@dataclass(frozen=True)
class Blob:
    """A stored file to stream: its size and its bytes in chunks, wherever it lives."""
    job_id: str
    path: Path

    @property
    def size(self) -> int:
        store = remote()
        return (self.path.stat().st_size if store is None
                else store.size(_job_name(self.job_id, self.path)))

    def chunks(self) -> Iterator[bytes]:
        store = remote()
        return (iter_file(self.path) if store is None
                else store.chunks(_job_name(self.job_id, self.path)))

    def url(self, filename: str) -> str | None:
        """A presigned URL of the store, where the operator allows redirects to one."""
        store = remote()
        if store is None or not settings.storage_presigned_downloads:
            return None
        return store.url(_job_name(self.job_id, self.path), filename,
                         settings.storage_presigned_seconds)
