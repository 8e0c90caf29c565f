"""Where an export's files live: beside its job, so deleting the job's folder removes them."""

from pathlib import Path

from tunesmith import storage


def export_dir(job_id: str, export_id: str) -> Path:
    return storage.safe_join(storage.job_dir(job_id) / "exports", export_id)
