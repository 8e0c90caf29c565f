"""Fine-tuned weights on the inference process's own disk.

The API names a fine-tuned model's folders relative to their job (tunesmith/served_models).
Where the local folder is the store, that is a path this process reads as it is. With an S3
store every node's home is scratch: the folder is fetched from the store (sha256 checked)
into this process's cache, and removed once no model loaded from it is in memory any more,
so the cache holds at most what the memory budget holds.
"""

import atexit
import os
import shutil
from collections.abc import Hashable, Set
from pathlib import Path

from tunesmith import storage
from tunesmith.settings import settings


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FetchedFolders:
    """Folders fetched from the store, each with the loaded units (cache keys) using it."""

    def __init__(self) -> None:
        parent = settings.storage_root / "inference"
        # One folder per process: several inference processes may share a node's scratch.
        self.root = parent / str(os.getpid())
        self._users: dict[Path, set[Hashable]] = {}
        if storage.remote() is not None:
            for stale in parent.glob("*"):  # left by an inference process that died
                if stale.name.isdigit() and not _alive(int(stale.name)):
                    shutil.rmtree(stale, ignore_errors=True)
            atexit.register(shutil.rmtree, self.root, True)

    def local(self, job_id: str | None, path: str, users: Set[Hashable]) -> str:
        """A folder of job `job_id` (None: `path` is this node's own) on local disk."""
        if job_id is None:
            return path
        folder = storage.job_dir(job_id) / path
        if storage.remote() is None:
            return str(folder)
        target = self.root / job_id / path
        if not target.exists():
            # Fetched beside it and renamed: a folder that is there is complete.
            partial = target.with_name(f".{target.name}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            storage.fetch_job_path(job_id, folder, into=partial)
            if not partial.is_dir():
                raise FileNotFoundError(f"The weights of job {job_id} ({path}) are not in "
                                        "the store.")
            partial.rename(target)
        self._users.setdefault(target, set()).update(users)
        return str(target)

    def forget_unused(self, in_use: set[Hashable]) -> None:
        """Remove the folders none of whose units is still loaded (or being loaded)."""
        for folder, users in list(self._users.items()):
            users &= in_use
            if not users:
                del self._users[folder]
                shutil.rmtree(folder, ignore_errors=True)

    def describe(self) -> dict[str, int]:
        return {"fetched_folders": len(self._users),
                "fetched_bytes": sum(p.stat().st_size for folder in self._users
                                     for p in folder.rglob("*") if p.is_file())}
