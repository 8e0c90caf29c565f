"""The server commands: serve, worker, inference, migrate, tiny-model.

The service's modules (database, settings, Celery) are imported inside each command, so
the client commands beside these start without them."""

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

log = logging.getLogger("tunesmith.serve")


@contextmanager
def schema_ready(command: str) -> Iterator[None]:
    """A database without our schema: one line a person can act on, not a traceback from
    the first query."""
    from tunesmith.db.schema import SchemaNotReady

    try:
        yield
    except SchemaNotReady as exc:
        sys.exit(f"tunesmith {command}: {exc}")


def migrate() -> None:
    """Run database migrations to the newest schema."""
    from tunesmith.db.schema import upgrade_to_head

    with schema_ready("migrate"):
        upgrade_to_head()


def _die_with_parent() -> None:
    # If serve is killed outright (kill -9, OOM), the kernel stops its worker too.
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # uvicorn re-raises the SIGTERM it caught once it has shut down; the default action
    # would end this process at once and skip the `finally` that stops the worker.
    raise SystemExit(128 + signum)


class LocalWorker:
    """`tunesmith serve`'s worker child, started again whenever it dies.

    Without it the embedded service would take jobs that never run. Restarts back off from
    1 s to 30 s while the worker keeps dying at start, and reset once one lived a minute."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="tunesmith-local-worker",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _spawn(self) -> tuple[subprocess.Popen[bytes], str]:
        hostname = f"local-{os.getpid()}-{self.restarts}@{socket.gethostname()}"
        process = subprocess.Popen(
            [sys.executable, "-m", "tunesmith.cli", "worker", "--concurrency", "1",
             "--hostname", hostname],
            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        return process, hostname

    def _run(self) -> None:
        from tunesmith.db.session import get_engine
        from tunesmith.workers import forget

        backoff = 1.0
        while True:
            with self._lock:
                if self.stopping.is_set():
                    return
                self.process, hostname = self._spawn()
            started = time.monotonic()
            code = self.process.wait()
            if self.stopping.is_set():
                return
            # Its heartbeat row would count it alive for a while yet: /readyz and the
            # reaper must see at once that no worker is there.
            try:
                forget(get_engine(), hostname)
            except Exception:
                log.warning("could not remove the dead worker's heartbeat row", exc_info=True)
            backoff = 1.0 if time.monotonic() - started > 60 else backoff
            log.error("local worker %s exited with code %s; starting it again in %.0f s",
                      hostname, code, backoff)
            if self.stopping.wait(backoff):
                return
            backoff = min(backoff * 2, 30.0)
            self.restarts += 1

    def stop(self) -> None:
        with self._lock:
            self.stopping.set()
            worker = self.process
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    no_worker: Annotated[bool, typer.Option("--no-worker",
                                            help="The API alone (compose).")] = False,
    migrate_first: Annotated[bool, typer.Option(
        "--migrate", help="Run migrations first (always done on the embedded SQLite).")] = False,
    no_inference: Annotated[bool, typer.Option(
        "--no-inference",
        help="Do not start the local inference process (compose runs its own).")] = False,
) -> None:
    """Run the API (and one local worker unless --no-worker, and the inference process)."""
    with schema_ready("serve"):
        _serve(host, port, no_worker=no_worker, migrate_first=migrate_first,
               no_inference=no_inference)


def _serve(host: str, port: int, *, no_worker: bool, migrate_first: bool,
           no_inference: bool) -> None:
    import uvicorn

    from tunesmith.db.schema import ensure_schema, upgrade_to_head
    from tunesmith.queue import prepare_broker
    from tunesmith.settings import settings

    if migrate_first:
        upgrade_to_head()
    ensure_schema()
    worker = None
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if not no_worker:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
        # The broker's queue exists before the worker and the API first touch it.
        prepare_broker([settings.queue])
        # One local worker as a child process: the embedded default needs no other command.
        worker = LocalWorker()
        worker.start()
    inference = None
    if not no_inference and settings.inference_url is None:
        # The local inference process the API forwards chat and completions to; an operator
        # who points TUNESMITH_INFERENCE_URL elsewhere runs their own.
        inference = subprocess.Popen(
            [sys.executable, "-m", "tunesmith.cli", "inference", "--port",
             str(settings.inference_port)],
            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    try:
        uvicorn.run("api.main:app", host=host, port=port, log_level="info")
    finally:
        if worker is not None:
            worker.stop()
        if inference is not None:
            inference.terminate()
            try:
                inference.wait(timeout=20)
            except subprocess.TimeoutExpired:
                inference.kill()


def inference(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(
        help="Port to listen on; default: TUNESMITH_INFERENCE_PORT (8100).")] = None,
) -> None:
    """Run the inference process that chat and completion requests are forwarded to."""
    # Imported here: the server pulls in torch, which no other command needs.
    from inference.server import main as serve_inference
    from tunesmith.settings import settings
    from worker.process.hub_access import apply_hub_settings

    apply_hub_settings()
    serve_inference(host, port or settings.inference_port)


def worker(
    queues: Annotated[str | None, typer.Option(help="Comma-separated; default: gpu.")] = None,
    concurrency: Annotated[int, typer.Option(help="Jobs at once (one per GPU).")] = 1,
    loglevel: Annotated[str, typer.Option(help="Celery's log level.")] = "INFO",
    hostname: Annotated[str | None, typer.Option(help="Celery node name.")] = None,
) -> None:
    """Run a Celery training worker."""
    with schema_ready("worker"):
        _worker(queues, concurrency, loglevel, hostname)


def _worker(queues: str | None, concurrency: int, loglevel: str, node: str | None) -> None:
    from celery.signals import worker_ready, worker_shutdown
    from celery.utils.nodenames import host_format

    from tunesmith.db.schema import ensure_schema
    from tunesmith.queue import prepare_broker
    from tunesmith.settings import settings
    from tunesmith.workers import start_heartbeat

    ensure_schema()
    queues = queues or settings.queue
    hostname = host_format(node or f"tunesmith-{os.getpid()}@%h")
    prepare_broker([q.strip() for q in queues.split(",") if q.strip()])
    from worker.process.celery_app import app

    stop_beating = threading.Event()
    heartbeat: list[threading.Thread] = []

    # The row appears once the worker consumes (not while it still starts), and goes as
    # it stops, so /readyz and the reaper see the worker as it is.
    @worker_ready.connect(weak=False)
    def _beat(**_: object) -> None:
        heartbeat.append(start_heartbeat(hostname, queues, stop_beating))

    @worker_shutdown.connect(weak=False)
    def _stop_beating(**_: object) -> None:
        stop_beating.set()
        for thread in heartbeat:
            thread.join(timeout=5)

    argv = ["worker", "--queues", queues, "--concurrency", str(concurrency),
            "--loglevel", loglevel, "--pool", "prefork", "--hostname", hostname]
    try:
        app.worker_main(argv=argv)
    finally:
        _stop_beating()


def tiny_model(
    name: Annotated[str, typer.Argument(help="Folder name under the models root.")] = "tiny-llama",
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Build the tiny test model into the models root."""
    from tunesmith.settings import settings
    from worker.training.tiny_model import build_tiny_model

    settings.ensure_dirs()
    print(build_tiny_model(settings.models_dir / name, seed=seed))


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(worker)
    app.command()(inference)
    app.command()(migrate)
    app.command("tiny-model")(tiny_model)
