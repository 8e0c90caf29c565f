"""The training child: `python -m worker.training.child JOB_ID`.

Started by the worker's supervisor, and runnable by hand on a job id to debug it. Exit
codes: 0 done (artifacts stored), 3 stopped on request (checkpoint saved), 1 failed (the
error is in the job folder's error.json).
"""

import json
import logging
import os
import signal
import sys

from tunesmith import storage
from tunesmith.db.models import Job
from tunesmith.db.session import session_scope
from tunesmith.spec.job import stored_spec
from worker.process.db_retry import with_db_retry
from worker.training.context import JobContext
from worker.training.failures import CudaUnavailable, classify

EXIT_STOPPED = 3
ERROR_FILE = "error.json"


def pick_device(gpus: int | str) -> str:
    import torch

    if gpus == 0:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if gpus == "auto":
        return "cpu"
    raise CudaUnavailable(f"The job asks for {gpus} GPU(s) but this worker has no CUDA device; "
                          "send it to a GPU worker, or set resources.gpus to 0 or 'auto'.")


def load_context(job_id: str) -> JobContext:
    def read() -> tuple[dict, int] | None:
        with session_scope() as session:
            job = session.get(Job, job_id)
            return None if job is None else (job.spec, job.seed)

    # Retried: a child starting while PostgreSQL restarts must not fail its job for that.
    found = with_db_retry(read, what="load job")
    if found is None:
        raise SystemExit(f"no job '{job_id}'")
    return JobContext(job_id=job_id, spec=stored_spec(found[0]), device="cpu",
                      seed=found[1])


def _resolved_hyperparameters(job_id: str) -> dict | None:
    """What the failure message may quote; a database outage must not hide the real error."""
    def read() -> dict | None:
        with session_scope() as session:
            job = session.get(Job, job_id)
            return job.hyperparameters if job else None

    try:
        return with_db_retry(read, what="read hyperparameters", deadline_seconds=30)
    except Exception:
        logging.exception("could not read the job's hyperparameters")
        return None


def cuda_initialized() -> bool:
    """Whether this process had CUDA initialised before its job began: in a forked child,
    that is the fork server's state, which must be false (worker/process/warm_imports.py)."""
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def main(job_id: str, *, warm: bool = False) -> int:
    """Run the job; `warm` says the process was forked from the fork server."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        ctx = load_context(job_id)
    except Exception as exc:  # a spec this version cannot read: fail the job, say why
        logging.exception("could not load job %s", job_id)
        folder = storage.job_dir(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ERROR_FILE).write_text(json.dumps(classify(exc).as_dict()))
        return 1
    # SIGTERM asks for a clean stop: the trainer saves a checkpoint at the next step end.
    signal.signal(signal.SIGTERM, lambda *_: ctx.stop.set())
    ctx.job_dir.mkdir(parents=True, exist_ok=True)
    (ctx.job_dir / ERROR_FILE).unlink(missing_ok=True)
    ctx.event(f"Training process started (pid {os.getpid()}, {'warm' if warm else 'cold'})",
              data={"pid": os.getpid(), "warm_start": warm,
                    "cuda_initialized_at_start": cuda_initialized(),
                    "USE_HUB_KERNELS": os.environ.get("USE_HUB_KERNELS")})
    try:
        from transformers import set_seed

        from worker.registry import run_objective
        from worker.training.quantization import hide_gptqmodel_from_peft

        hide_gptqmodel_from_peft(ctx)
        ctx.device = pick_device(ctx.spec.resources.gpus)
        set_seed(ctx.seed)
        run_objective(ctx)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) or ctx.stop.is_set():
            return EXIT_STOPPED
        logging.exception("training failed")
        error = classify(exc, hyperparameters=_resolved_hyperparameters(job_id))
        (ctx.job_dir / ERROR_FILE).write_text(json.dumps(error.as_dict()))
        return 1
    return EXIT_STOPPED if ctx.stop.is_set() else 0


def exit_now(code: int) -> None:
    """End a one-process run without the interpreter's teardown of torch & co (~1.5 s, 22%
    of a cold process's life: bench/import_probe.py), which only delays the supervisor's
    notice. Everything is stored by now: artifacts and error.json are closed files, events
    committed. A process of a data-parallel run exits normally, leaving the process group's
    shutdown to torch."""
    if os.environ.get("WORLD_SIZE", "1") != "1":
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m worker.training.child JOB_ID")
    exit_now(main(sys.argv[1]))
