"""A stack of real parts that a fault test may break: kill, stop and restart at will."""

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from testbed.servers import (
    FAST_RECOVERY,
    Service,
    start_api,
    start_backing_servers,
    start_worker,
)
from testbed.stack import Servers


@dataclass
class FaultStack(Servers):
    workers: dict[str, Service] = field(default_factory=dict)

    def start_worker(self, name: str) -> Service:
        """Start (or start again) the worker `name`, with its own log file."""
        self.workers[name] = start_worker(self.env, self.root / f"worker-{name}.log", name=name)
        return self.workers[name]

    def worker_log(self, name: str) -> str:
        return (self.root / f"worker-{name}.log").read_text(errors="replace")

    def api_log(self) -> str:
        return (self.root / "api.log").read_text(errors="replace")

    def readyz(self) -> int:
        return httpx.get(f"{self.url}/readyz", timeout=10).status_code

    def close(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        self.api.stop()
        self.redis.stop()
        self.postgres.stop("immediate")


def build_stack(root: Path, extra_env: dict[str, str], *, tiny_model: Path) -> FaultStack:
    """PostgreSQL, Redis (no persistence), migrations, the tiny model and the API; no worker."""
    postgres, redis, env = start_backing_servers(root, {**FAST_RECOVERY, **extra_env})
    shutil.copytree(tiny_model, root / "home" / "models" / "tiny-llama")
    api, url = start_api(env, root / "api.log")
    return FaultStack(root, env, postgres, redis, api, url)


def wait_for(check, *, timeout: float, what: str, interval: float = 0.2):  # type: ignore[no-untyped-def]
    """Poll `check` until it returns something truthy; errors count as 'not yet'."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except (httpx.HTTPError, AssertionError) as exc:  # the API may be restarting
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last})")
