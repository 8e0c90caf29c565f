"""Run one export: claim it, write its files beside the job, record them with their sha256,
and finish it, each status change through tunesmith/jobs/exports.py."""

import logging
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

from tunesmith import storage
from tunesmith.db.models import Export, Job
from tunesmith.db.session import session_scope
from tunesmith.exports.storage import export_dir
from tunesmith.jobs.exports import ExportStatus, claim_export, finish_export, renew_export_lease
from tunesmith.model_names import FineTunedSource
from tunesmith.settings import settings
from worker.exports.gguf_export import NotExportable, write_gguf
from worker.exports.merge import source_of, write_merged
from worker.process.db_retry import with_db_retry
from worker.training.artifacts import FORBIDDEN_SUFFIXES

log = logging.getLogger(__name__)


def run_export(export_id: str, *, worker_id: str) -> str:
    """Returns the status the export ended in, or 'skipped' when it was not ours to run."""
    def claim() -> tuple[Export, Job] | None:
        with session_scope() as session:
            if not claim_export(session, export_id, worker_id=worker_id):
                return None
            export = session.get(Export, export_id)
            job = session.get(Job, export.job_id) if export else None
            assert export is not None and job is not None
            session.expunge_all()
            return export, job

    claimed = with_db_retry(claim, what="export claim")
    if claimed is None:
        return "skipped"
    export, job = claimed
    final = export_dir(job.id, export.id)
    # Its own scratch name: a worker that lost its lease may still be writing beside us.
    partial = final.with_name(f".{final.name}.{uuid.uuid4().hex}.partial")
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(export_id, worker_id, stop), daemon=True)
    renewer.start()
    try:
        _write(export, job, partial)
        artifacts = _manifest(partial)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        # In the store before it is listed: any node's API serves what is listed.
        storage.keep_job_path(job.id, final)
        if storage.remote() is not None:  # scratch only: the store holds it now
            shutil.rmtree(final, ignore_errors=True)
    except Exception as exc:  # a failed export says why; the job and its files are untouched
        log.exception("export %s failed", export_id)
        shutil.rmtree(partial, ignore_errors=True)
        code = "not_exportable" if isinstance(exc, NotExportable) else "export_failed"
        message = str(exc) if isinstance(exc, NotExportable) else \
            f"{type(exc).__name__}: {exc}"
        return _finish(export_id, worker_id, ExportStatus.failed, error={
            "code": code, "message": message, "param": "format" if code == "not_exportable"
            else None})
    finally:
        stop.set()
    status = _finish(export_id, worker_id, ExportStatus.succeeded, artifacts=artifacts)
    if status != ExportStatus.succeeded:  # cancelled while it ran: nothing to keep
        storage.drop_job_path(job.id, final)
    return status


def _renew(export_id: str, worker_id: str, stop: threading.Event) -> None:
    """Keep the lease while the export is written (merging a large model takes minutes)."""
    while not stop.wait(settings.heartbeat_seconds):
        try:
            with session_scope() as session:
                if not renew_export_lease(session, export_id, worker_id=worker_id):
                    return  # cancelled, or reaped and given to another worker
        except Exception:  # the database is away a moment: the next beat tries again
            log.warning("could not renew the lease of export %s", export_id, exc_info=True)


def _finish(export_id: str, worker_id: str, to: ExportStatus, **fields: Any) -> str:
    def write() -> str:
        with session_scope() as session:
            return finish_export(session, export_id, to, worker_id=worker_id, **fields)

    return with_db_retry(write, what="export status")


def _source(export: Export, job: Job) -> FineTunedSource:
    name = job.fine_tuned_model if export.checkpoint_step is None else \
        f"{job.id}:ckpt-step-{export.checkpoint_step}"
    if not name:
        raise NotExportable(f"job {job.id} has no fine-tuned model")
    return source_of(name)


def _write(export: Export, job: Job, out: Path) -> None:
    source = _source(export, job)
    if export.format == "merged":
        write_merged(source, out / "model", model_name=job.model)
        return
    # gguf: merged weights in a scratch folder, then the one file.
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".merge-") as scratch:
        merged = Path(scratch)
        write_merged(source, merged, model_name=job.model)
        name = job.fine_tuned_model or job.id
        if export.checkpoint_step is not None:
            name = f"{name}:ckpt-step-{export.checkpoint_step}"
        write_gguf(merged, out / f"model-{export.quantization}.gguf",
                   quantization=export.quantization or "f16", name=name)


def _manifest(folder: Path) -> list[dict[str, Any]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    bad = [p.name for p in files if p.suffix in FORBIDDEN_SUFFIXES]
    if bad:
        raise RuntimeError(f"refusing to publish pickled files {bad}; exports are safetensors")
    return [{"name": str(p.relative_to(folder)), "bytes": p.stat().st_size,
             "sha256": storage.sha256_of(p)} for p in files]
