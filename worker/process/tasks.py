"""Celery tasks: thin wrappers that call the supervisor, which tests call directly."""

import os
import socket
from typing import Any

from celery import shared_task
from celery.signals import worker_process_init

from tunesmith.queue import RUN_EXPORT_TASK, RUN_JOB_TASK
from worker.process.launch import prewarm
from worker.process.supervise import supervise


@worker_process_init.connect
def _start_fork_server(**_: Any) -> None:
    # Import the training libraries once per pool process, before the first job arrives.
    prewarm()


@shared_task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(job_id: str) -> str:
    return supervise(job_id, worker_id=f"{socket.gethostname()}:{os.getpid()}")


@shared_task(name=RUN_EXPORT_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_export(export_id: str) -> str:
    # Imported here: the export code loads torch, which only the pool process needs.
    from worker.exports.run import run_export as run

    return run(export_id, worker_id=f"{socket.gethostname()}:{os.getpid()}")
