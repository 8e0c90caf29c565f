"""Celery tasks: thin wrappers that call the supervisor, which tests call directly."""

import os
import socket

from celery import shared_task

from tunesmith.queue import RUN_JOB_TASK
from worker.supervise import supervise


@shared_task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(job_id: str) -> str:
    return supervise(job_id, worker_id=f"{socket.gethostname()}:{os.getpid()}")
