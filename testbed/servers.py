"""Real servers for the tests: a throwaway PostgreSQL cluster, a Redis, and our processes.

Every server started here is stopped when the test process ends, however it ends: a
fixture's `finally`, an exception half-way through starting a stack, Ctrl-C, SIGTERM (from
`timeout` or CI), or plain interpreter exit. A failed run leaves no server behind.
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

# Fast fault detection for tests; the defaults suit hour-long jobs.
FAST_RECOVERY = {
    "TUNESMITH_HEARTBEAT_SECONDS": "1",
    "TUNESMITH_LEASE_SECONDS": "10",
    "TUNESMITH_REAPER_INTERVAL_SECONDS": "1",
    "TUNESMITH_REDISPATCH_AFTER_SECONDS": "15",
    "TUNESMITH_CANCEL_GRACE_SECONDS": "5",
    "TUNESMITH_NO_WORKER_WARNING_SECONDS": "3",
    "TUNESMITH_ALLOW_HUB_DOWNLOADS": "false",
    # Webhook receivers in tests listen on 127.0.0.1 and recover within seconds.
    "TUNESMITH_WEBHOOK_ALLOW_PRIVATE_URLS": "true",
    "TUNESMITH_WEBHOOK_RETRY_BASE_SECONDS": "0.5",
    "TUNESMITH_WEBHOOK_RETRY_MAX_SECONDS": "2",
    "TUNESMITH_WEBHOOK_POLL_SECONDS": "0.3",
}

PG_BIN = Path("/usr/lib/postgresql/15/bin")
REDIS_SERVER = "redis-server"
REPO = Path(__file__).resolve().parents[1]

# What this process started and has not stopped yet (each has a `stop()`).
_running: list["Postgres | Redis | Service"] = []


def stop_everything() -> None:
    """Stop every server this process started and still runs, newest first."""
    while _running:
        server = _running.pop()
        try:
            server.stop()
        except Exception as exc:  # keep stopping the others
            print(f"could not stop {server!r}: {exc}", file=sys.stderr)


def _interrupt(signum: int, _frame: object) -> None:
    # As Ctrl-C: pytest then runs the fixtures' teardowns; atexit stops what is left.
    raise KeyboardInterrupt(f"signal {signum}")


def _stop_on_exit() -> None:
    if getattr(_stop_on_exit, "done", False):
        return
    _stop_on_exit.done = True  # type: ignore[attr-defined]
    atexit.register(stop_everything)
    # SIGTERM and SIGHUP would end the process without atexit; turn them into an interrupt.
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _interrupt)


def _started(server: "Postgres | Redis | Service") -> None:
    _stop_on_exit()
    if server not in _running:
        _running.append(server)


def _stopped(server: "Postgres | Redis | Service") -> None:
    if server in _running:
        _running.remove(server)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, *, timeout: float, what: str, interval: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # keep polling until the deadline
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


def _as_postgres(command: list[str]) -> list[str]:
    # initdb and pg_ctl refuse to run as root; CI runs as root.
    if os.geteuid() == 0:
        return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(command)]
    return command


class Postgres:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "pgdata"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/tunesmith"

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            os.chmod(self.root, 0o700)
        subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust",
                                     "-U", "postgres", "-E", "UTF8"]),
                       check=True, capture_output=True)
        self.start()
        subprocess.run([str(PG_BIN / "psql") if (PG_BIN / "psql").exists() else "psql",
                        "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c",
                        "CREATE DATABASE tunesmith"], check=True, capture_output=True)

    def start(self) -> None:
        options = f"'-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off'"
        _started(self)  # before the start: a start that times out may still leave a server
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o",
                                     options, "-l", str(self.root / "pg.log"), "-w", "start"]),
                       check=True, capture_output=True)

    def stop(self, mode: str = "fast") -> None:
        if self.data.exists():
            subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m",
                                         mode, "-w", "stop"]), check=False, capture_output=True)
        _stopped(self)


class Redis:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # No persistence: a restart loses every message, the worst case for the reconciler.
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.root)],
            stdout=(self.root / "redis.log").open("ab"), stderr=subprocess.STDOUT)
        _started(self)

        def answers() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: "
                                   f"{(self.root / 'redis.log').read_text()[-1000:]}")
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            return True

        try:
            wait_until(answers, timeout=10, what="redis")
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        _stopped(self)


class Service:
    """A `tunesmith` subcommand as a process of its own, with its log in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "Service":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tunesmith.cli", *self.args], env=self.env, cwd=REPO,
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        _started(self)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group: the service and every child it started."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)
        if sig == signal.SIGKILL:
            _stopped(self)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        _stopped(self)


def start_api(env: dict[str, str], log: Path, *, worker: bool = False) -> tuple[Service, str]:
    port = free_port()
    args = ["serve", "--port", str(port)] + ([] if worker else ["--no-worker"])
    service = Service(args, env, log).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200,
                   timeout=60, what=f"API on {url} (log: {log})")
    except BaseException:
        service.stop()
        raise
    return service, url


def start_worker(env: dict[str, str], log: Path, *, name: str = "w1") -> Service:
    service = Service(["worker", "--hostname", f"{name}@%h", "--loglevel", "INFO"], env,
                      log).start()
    try:
        wait_until(lambda: b" ready." in log.read_bytes(), timeout=60,
                   what=f"worker {name} (log: {log})")
    except BaseException:
        service.stop()
        raise
    return service


def start_inference(env: dict[str, str], log: Path) -> Service:
    """`tunesmith inference` on the port TUNESMITH_INFERENCE_URL names; call
    `wait_inference` before the first request (it imports torch: seconds)."""
    port = env["TUNESMITH_INFERENCE_URL"].rsplit(":", 1)[1]
    return Service(["inference", "--port", port], env, log).start()


def wait_inference(service: Service, env: dict[str, str]) -> None:
    url = env["TUNESMITH_INFERENCE_URL"]
    try:
        wait_until(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200,
                   timeout=120, what=f"inference on {url} (log: {service.log})")
    except BaseException:
        service.stop()
        raise


def run_cli(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-m", "tunesmith.cli", *args], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"tunesmith {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip()


def start_backing_servers(root: Path, settings: dict[str, str]) -> tuple[Postgres, Redis,
                                                                          dict[str, str]]:
    """A fresh PostgreSQL and Redis under `root`, migrated, and the environment that points
    `tunesmith` processes at them (`settings` are further TUNESMITH_* values)."""
    postgres = Postgres(root / "pg")
    redis = Redis(root / "redis")
    try:
        postgres.init()
        redis.start()
        env = {
            **os.environ, **settings,
            "TUNESMITH_HOME": str(root / "home"),
            "TUNESMITH_DATABASE_URL": postgres.url,
            "TUNESMITH_BROKER_URL": redis.url,
            # The stack's own inference process (start_inference), never the default port
            # another run may hold: `serve` then starts no inference child of its own.
            "TUNESMITH_INFERENCE_URL": f"http://127.0.0.1:{free_port()}",
            "PYTHONUNBUFFERED": "1",
        }
        run_cli(["migrate"], env)
    except BaseException:
        # A stack that cannot start whole stops what it started: no PostgreSQL is left
        # running because Redis (or the migration) failed after it.
        redis.stop()
        postgres.stop("immediate")
        raise
    return postgres, redis, env
