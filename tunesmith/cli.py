"""The `tunesmith` console script: serve, worker, inference, migrate, keys, tiny-model."""

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from tunesmith.db.schema import SchemaNotReady, ensure_schema, upgrade_to_head
from tunesmith.settings import settings

log = logging.getLogger("tunesmith.serve")


def migrate() -> None:
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


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from tunesmith.queue import prepare_broker

    if args.migrate:
        migrate()
    ensure_schema()
    worker = None
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if not args.no_worker:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
        # The broker's queue exists before the worker and the API first touch it.
        prepare_broker([settings.queue])
        # One local worker as a child process: the embedded default needs no other command.
        worker = LocalWorker()
        worker.start()
    inference = None
    if not args.no_inference and settings.inference_url is None:
        # The local inference process the API forwards chat and completions to; an operator
        # who points TUNESMITH_INFERENCE_URL elsewhere runs their own.
        inference = subprocess.Popen(
            [sys.executable, "-m", "tunesmith.cli", "inference", "--port",
             str(settings.inference_port)],
            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    try:
        uvicorn.run("api.main:app", host=args.host, port=args.port, log_level="info")
    finally:
        if worker is not None:
            worker.stop()
        if inference is not None:
            inference.terminate()
            try:
                inference.wait(timeout=20)
            except subprocess.TimeoutExpired:
                inference.kill()


def _inference(args: argparse.Namespace) -> None:
    # Imported here: the server pulls in torch, which no other command needs.
    from inference.server import main as serve_inference
    from worker.hub_access import apply_hub_settings

    apply_hub_settings()
    serve_inference(args.host, args.port or settings.inference_port)


def _worker(args: argparse.Namespace) -> None:
    from celery.signals import worker_ready, worker_shutdown
    from celery.utils.nodenames import host_format

    from tunesmith.queue import prepare_broker
    from tunesmith.workers import start_heartbeat

    ensure_schema()
    queues = args.queues or settings.queue
    hostname = host_format(args.hostname or f"tunesmith-{os.getpid()}@%h")
    prepare_broker([q.strip() for q in queues.split(",") if q.strip()])
    from worker.celery_app import app

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

    argv = ["worker", "--queues", queues, "--concurrency", str(args.concurrency),
            "--loglevel", args.loglevel, "--pool", "prefork", "--hostname", hostname]
    try:
        app.worker_main(argv=argv)
    finally:
        _stop_beating()


def _keys(args: argparse.Namespace) -> None:
    from tunesmith.db.session import session_scope
    from tunesmith.keys import create_key, revoke_key

    ensure_schema()
    if args.keys_command == "create":
        with session_scope() as session:
            key, secret = create_key(session, project_name=args.project)
            print(secret)
            print(f"key {key.id} (prefix {key.prefix}) for project '{args.project}'",
                  file=sys.stderr)
    elif args.keys_command == "revoke":
        with session_scope() as session:
            count = revoke_key(session, prefix_or_id=args.key)
        if not count:
            sys.exit(f"no active key with id or prefix '{args.key}'")
        print(f"revoked {count} key(s)")


def _tiny_model(args: argparse.Namespace) -> None:
    from worker.tiny_model import build_tiny_model

    settings.ensure_dirs()
    folder = build_tiny_model(settings.models_dir / args.name, seed=args.seed)
    print(folder)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunesmith", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API (and one local worker unless --no-worker)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--no-worker", action="store_true", help="the API alone (compose)")
    serve.add_argument("--migrate", action="store_true",
                       help="run migrations first (always done on the embedded SQLite)")
    serve.add_argument("--no-inference", action="store_true",
                       help="do not start the local inference process (compose runs its own)")
    serve.set_defaults(func=_serve)

    inference = sub.add_parser("inference", help="run the inference process that chat and "
                               "completion requests are forwarded to")
    inference.add_argument("--host", default="127.0.0.1")
    inference.add_argument("--port", type=int, default=None,
                           help="default: TUNESMITH_INFERENCE_PORT (8100)")
    inference.set_defaults(func=_inference)

    worker = sub.add_parser("worker", help="run a Celery training worker")
    worker.add_argument("--queues", default=None, help="comma-separated; default: gpu")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs at once (one per GPU)")
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument("--hostname", default=None)
    worker.set_defaults(func=_worker)

    sub.add_parser("migrate", help="run database migrations to the newest schema").set_defaults(
        func=lambda _: migrate())

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="print a new API key")
    create.add_argument("--project", default="default", help="the project the key belongs to")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id or prefix")
    revoke.add_argument("key")
    keys.set_defaults(func=_keys)

    tiny = sub.add_parser("tiny-model", help="build the tiny test model into the models root")
    tiny.add_argument("name", nargs="?", default="tiny-llama")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_tiny_model)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except SchemaNotReady as exc:
        # One line a person can act on, not a traceback from the first query.
        sys.exit(f"tunesmith {args.command}: {exc}")


if __name__ == "__main__":
    main()
