"""Where files and job outputs live on disk, with names that can never leave their root."""

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from tunesmith.settings import settings

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
    until it is unlisted, in the same step (worker/listed_checkpoints.py).
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
