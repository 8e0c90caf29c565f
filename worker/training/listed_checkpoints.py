"""The checkpoints the API lists: each one a folder that loads like the job's result.

The trainer's own checkpoints (`checkpoints/`) resume a job: they hold pickled optimizer and
RNG state, and the trainer's rotation deletes old ones. What a user may download and start a
job from is published beside them, in `listed_checkpoints/[<stage>/]step-N/`: the weights
(hard links, no copy), configs and tokenizer, without pickles, plus a manifest of sizes and
sha256. A row is listed only once its folder is complete, and a folder is removed only after
its row is gone, so the list never names a checkpoint that is not on disk.
"""

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from tunesmith import storage
from tunesmith.db.models import Artifact, Checkpoint
from tunesmith.db.session import session_scope
from tunesmith.ids import new_id
from tunesmith.jobs.events import add_event
from worker.process.db_retry import with_db_retry
from worker.training.artifacts import FORBIDDEN_SUFFIXES
from worker.training.public_names import TEXT_SUFFIXES, public_text

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from worker.training.context import JobContext

# Listed checkpoints kept per job (per stage of a multi-stage job), newest first: every one
# of a job with the default save_steps (a fifth of its steps). Older ones are unlisted, then
# deleted: a full model's checkpoint is a full copy of its weights once the trainer's
# rotation has removed its own.
KEEP = 5
def read_manifest(folder: Path) -> list[dict[str, Any]]:
    """[{"name", "bytes", "sha256"}] of a listed checkpoint folder, names relative to it."""
    return json.loads(storage.checkpoint_manifest(folder).read_text())


def publish(ctx: "JobContext", step: int, source: Path) -> Path:
    """Copy a trainer checkpoint's loadable files into its listed folder; returns it."""
    root = storage.listed_checkpoints_dir(ctx.job_id)
    target = (root / ctx.stage if ctx.stage else root) / f"step-{step}"
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # a leftover of a crash mid-publish
    files = sorted(p for p in source.rglob("*")
                   if p.is_file() and p.suffix not in FORBIDDEN_SUFFIXES)
    manifest = []
    for file in files:
        name = str(file.relative_to(source))
        dest = partial / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if file.suffix in TEXT_SUFFIXES:
            dest.write_text(public_text(file.read_text(errors="surrogateescape"),
                                        ctx.spec.model), errors="surrogateescape")
        else:
            try:  # the same bytes stay on disk once the trainer's rotation deletes its copy
                os.link(file, dest)
            except OSError:
                shutil.copy2(file, dest)
        manifest.append({"name": name, "bytes": dest.stat().st_size,
                         "sha256": storage.sha256_of(dest)})
    _remove(ctx.job_id, target)
    storage.checkpoint_manifest(target).write_text(json.dumps(manifest))
    partial.rename(target)
    # Into the store, the manifest last: the API reads a checkpoint's files from it.
    storage.keep_job_path(ctx.job_id, target)
    storage.keep_job_path(ctx.job_id, storage.checkpoint_manifest(target))
    return target


def record(ctx: "JobContext", step: int, source: Path, metrics: dict[str, Any]) -> None:
    """Publish the trainer's checkpoint at `step`, list it, and unlist (then delete) the
    oldest beyond KEEP."""
    if not ctx.is_main:  # the other ranks of a data-parallel job stay quiet
        return
    keep_trainer_checkpoint(ctx, source)
    folder = publish(ctx, step, source)
    relative = str(folder.relative_to(ctx.job_dir))
    stage = ctx.stage or None

    def write() -> list[str]:
        with session_scope() as session:
            exists = session.scalar(sa.select(Checkpoint.id).where(
                Checkpoint.job_id == ctx.job_id, Checkpoint.path == relative))
            if not exists:
                session.add(Checkpoint(id=new_id("ftckpt"), job_id=ctx.job_id, step=step,
                                       metrics={**metrics, **({"stage": stage} if stage
                                                              else {})},
                                       path=relative))
                add_event(session, ctx.job_id, f"Checkpoint saved at step {step}",
                          data={"step": step, "stage": stage,
                                "path": str(source.relative_to(ctx.job_dir))})
            session.flush()
            rows = [c for c in session.scalars(sa.select(Checkpoint).where(
                Checkpoint.job_id == ctx.job_id).order_by(Checkpoint.step.desc())).all()
                if (c.metrics or {}).get("stage") == stage]
            unlisted = [c.path for c in rows[KEEP:]]
            if unlisted:
                session.execute(sa.delete(Checkpoint).where(
                    Checkpoint.job_id == ctx.job_id, Checkpoint.path.in_(unlisted)))
            return unlisted

    for path in with_db_retry(write, what="checkpoint"):
        _remove(ctx.job_id, ctx.job_dir / path)


def keep_trainer_checkpoint(ctx: "JobContext", source: Path) -> None:
    """Put the trainer's checkpoint (optimizer state included: what a resume needs) in the
    store, `trainer_state.json` last, and drop from the store those its rotation deleted, so
    a worker on another node resumes from it."""
    storage.keep_job_path(ctx.job_id, source, last="trainer_state.json")
    for name in storage.stored_folders(ctx.job_id, source.parent):
        if not (source.parent / name).exists():
            storage.drop_job_path(ctx.job_id, source.parent / name)


def _remove(job_id: str, folder: Path) -> None:
    storage.drop_job_path(job_id, folder)
    storage.drop_job_path(job_id, storage.checkpoint_manifest(folder))


# -- a job that stops before its end keeps its newest checkpoint as an artifact ------------

KEPT_FOLDER = "checkpoint"


def keep_as_artifact(session: "Session", job_id: str) -> str | None:
    """Publish the newest listed checkpoint as the artifact folder `checkpoint/` (it loads
    like the job's result would: an adapter or model folder). For a cancelled, failed or
    paused job; the caller commits. Returns the checkpoint's id, None if there is none."""
    row = session.scalars(sa.select(Checkpoint).where(Checkpoint.job_id == job_id)
                          .order_by(Checkpoint.created_at.desc(), Checkpoint.step.desc())
                          .limit(1)).first()
    if row is None:
        return None
    source = storage.job_dir(job_id) / row.path
    target = storage.artifacts_dir(job_id) / KEPT_FOLDER
    drop_kept_artifact(session, job_id)
    # Read and copied in the store: the API's reaper may end a job whose worker is gone.
    manifest = json.loads(storage.read_job_file(job_id, storage.checkpoint_manifest(source)))
    for entry in manifest:
        storage.copy_job_file(job_id, source / entry["name"], target / entry["name"])
        session.add(Artifact(id=new_id("art"), job_id=job_id,
                             name=f"{KEPT_FOLDER}/{entry['name']}", kind="checkpoint",
                             bytes=entry["bytes"], sha256=entry["sha256"]))
    add_event(session, job_id, f"Kept the checkpoint of step {row.step} as "
              f"artifacts/{KEPT_FOLDER}", data={"checkpoint": row.id, "step": row.step,
                                                "artifact": KEPT_FOLDER})
    return row.id


def drop_kept_artifact(session: "Session", job_id: str) -> None:
    """Remove a kept checkpoint (a resumed job that succeeds has its real result)."""
    session.execute(sa.delete(Artifact).where(Artifact.job_id == job_id,
                                              Artifact.name.startswith(f"{KEPT_FOLDER}/")))
    storage.drop_job_path(job_id, storage.artifacts_dir(job_id) / KEPT_FOLDER)
