"""Start a job's training process, in one of three ways.

- One process, warm (the default): forked from a server process that has already imported
  torch, transformers, peft, trl and our pipelines (multiprocessing's forkserver). Those
  imports cost ~8 s per job on a 2-core machine, 6.5 s on a GPU node; forking costs well
  under one. GPU nodes too: the server never initialises CUDA (worker/process/warm_imports.py),
  so each forked child starts CUDA for itself.
- One process, cold: `python -m worker.training.child JOB_ID`, a fresh interpreter: where the warm
  start is turned off (TUNESMITH_WARM_START=false), or its server could not start.
- Several processes: `torchrun --nproc_per_node N -m worker.training.child JOB_ID`; the trainer
  then runs data parallel (NCCL on GPUs, gloo on CPU).

Every way, the training process dies with its supervisor (PR_SET_PDEATHSIG), so a killed
worker never leaves a training run behind it.
"""

import ctypes
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Protocol

import setproctitle

from tunesmith import storage
from tunesmith.settings import settings

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class TrainingProcess(Protocol):
    pid: int

    def poll(self) -> int | None: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...


class ForkedTraining:
    """A forkserver child with Popen's interface."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self.process = process
        self.pid = process.pid or 0

    def poll(self) -> int | None:
        return None if self.process.is_alive() else self.process.exitcode

    def send_signal(self, sig: int) -> None:
        if self.process.is_alive():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(f"training {self.pid}", timeout or 0)
        return self.process.exitcode


def _run_forked(job_id: str, log_path: str) -> None:
    die_with_parent()
    # In `ps`, a forked training process reads as the command it stands in for.
    setproctitle.setproctitle(" ".join(training_command(job_id, 1)))
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from worker.training.child import main

    code = main(job_id, warm=True)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


@contextmanager
def _children_allowed() -> Iterator[None]:
    """Celery's prefork pool marks its processes daemonic in multiprocessing's books, and
    multiprocessing then refuses to start children, to keep daemons from leaving orphans.
    Ours cannot outlive us: they die with the fork server (PR_SET_PDEATHSIG), which exits
    when this process does, and as daemons they are terminated at our exit. The pool's
    authkey is billiard's too, which refuses to be pickled to the fork server: lend
    multiprocessing one of its own while we start the child."""
    config = multiprocessing.current_process()._config  # type: ignore[attr-defined]
    saved = {key: config[key] for key in ("daemon", "authkey") if key in config}
    config.pop("daemon", None)
    # A private class of multiprocessing's (what its own authkey is), absent from typeshed.
    config["authkey"] = multiprocessing.process.AuthenticationString(  # type: ignore[attr-defined]
        os.urandom(32))
    try:
        yield
    finally:
        config.update(saved)


# Set when the fork server failed to start (e.g. an import initialised CUDA): every later
# job of this worker then starts cold rather than retrying an 8 s server start each time.
_server_failed: list[str] = []


def warm_start_enabled() -> bool:
    return settings.warm_start and not _server_failed


@cache
def forkserver() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["worker.process.warm_imports"])
    return context


def prewarm() -> None:
    """Start the fork server now, so the first job does not wait for its imports."""
    if warm_start_enabled():
        from multiprocessing import forkserver as server

        forkserver()
        server.ensure_running()


def training_command(job_id: str, processes: int) -> list[str]:
    if processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", str(processes), "-m", "worker.training.child", job_id]
    return [sys.executable, "-m", "worker.training.child", job_id]


def start_training(job_id: str, *, processes: int = 1) -> TrainingProcess:
    folder = storage.job_dir(job_id)
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "train.log"
    if processes == 1 and warm_start_enabled():
        try:
            with _children_allowed():  # the Process copies our config when it is made
                process = forkserver().Process(target=_run_forked,
                                               args=(job_id, str(log_path)),
                                               name=f"train-{job_id}", daemon=True)
                process.start()
            return ForkedTraining(process)
        except (EOFError, OSError) as exc:  # the server died while importing: see its log
            logging.error("fork server unavailable (%r); training processes start cold", exc)
            _server_failed.append(repr(exc))
    with log_path.open("ab") as log_file:
        return subprocess.Popen(training_command(job_id, processes), stdout=log_file,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=die_with_parent)
