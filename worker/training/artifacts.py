"""Register a job's result files (size and sha256) so the API can list and serve them."""

from pathlib import Path

import sqlalchemy as sa

from tunesmith import storage
from tunesmith.db.models import Artifact
from tunesmith.db.session import session_scope
from tunesmith.ids import new_id
from worker.process.db_retry import with_db_retry
from worker.training.context import JobContext

# Never served: pickled state a client could be tricked into unpickling.
FORBIDDEN_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}


def register_artifacts(ctx: JobContext, folder: Path, kind: str) -> list[str]:
    """Record every file under `folder` (inside the job's artifacts folder). Returns names."""
    root = storage.artifacts_dir(ctx.job_id)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    bad = [p.name for p in files if p.suffix in FORBIDDEN_SUFFIXES]
    if bad:
        raise RuntimeError(f"refusing to publish pickled files {bad}; artifacts are safetensors")
    rows = [(str(p.relative_to(root)), p.stat().st_size, storage.sha256_of(p)) for p in files]
    storage.keep_job_path(ctx.job_id, folder)  # before the rows that list them

    def write() -> None:
        with session_scope() as session:
            for name, size, digest in rows:
                session.execute(sa.delete(Artifact).where(Artifact.job_id == ctx.job_id,
                                                          Artifact.name == name))
                session.add(Artifact(id=new_id("art"), job_id=ctx.job_id, name=name, kind=kind,
                                     bytes=size, sha256=digest))

    with_db_retry(write, what="artifacts")
    return [name for name, _, _ in rows]
