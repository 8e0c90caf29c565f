"""The `tunesmith` console script: serve, worker, migrate, keys, tiny-model."""

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from tunesmith.settings import settings


def migrate() -> None:
    from alembic import command
    from alembic.config import Config

    settings.ensure_dirs()
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent.parent / "migrations"))
    command.upgrade(config, "head")


def _die_with_parent() -> None:
    # If serve is killed outright (kill -9, OOM), the kernel stops its worker too.
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # uvicorn re-raises the SIGTERM it caught once it has shut down; the default action
    # would end this process at once and skip the `finally` that stops the worker.
    raise SystemExit(128 + signum)


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    embedded = settings.database_url is None
    if embedded or args.migrate:
        migrate()
    worker = None
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if not args.no_worker:
        # One local worker as a child process: the embedded default needs no other command.
        worker = subprocess.Popen([sys.executable, "-m", "tunesmith.cli", "worker",
                                   "--concurrency", "1"],
                                  preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    try:
        uvicorn.run("api.main:app", host=args.host, port=args.port, log_level="info")
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def _worker(args: argparse.Namespace) -> None:
    from worker.celery_app import app

    queues = args.queues or settings.queue
    argv = ["worker", "--queues", queues, "--concurrency", str(args.concurrency),
            "--loglevel", args.loglevel, "--pool", "prefork",
            "--hostname", args.hostname or f"tunesmith-{os.getpid()}@%h"]
    app.worker_main(argv=argv)


def _keys(args: argparse.Namespace) -> None:
    from tunesmith.db.session import session_scope
    from tunesmith.keys import create_key, revoke_key

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
    serve.set_defaults(func=_serve)

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
    args.func(args)


if __name__ == "__main__":
    main()
