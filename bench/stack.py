"""The real service for the benchmarks, started the way tests/conftest.py starts it.

PostgreSQL, Redis, the API under uvicorn and as many Celery workers as a benchmark asks for,
all in one temporary folder that is removed afterwards (unless `keep`).
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from testbed.servers import (
    Service,
    run_cli,
    start_api,
    start_backing_servers,
    start_worker,
)
from testbed.stack import Servers

BENCH_SETTINGS = {
    "TUNESMITH_ALLOW_HUB_DOWNLOADS": "false",
    # The load benchmark queues thousands of jobs that must never train; the default cap
    # (100 queued per project) would answer them 429.
    "TUNESMITH_MAX_QUEUED_JOBS_PER_PROJECT": "1000000000",
    # Those jobs sit on a queue no worker reads; without this the reaper would resend
    # thousands of messages every two minutes in the middle of a measurement.
    "TUNESMITH_REDISPATCH_AFTER_SECONDS": "86400",
    # The load benchmark measures what the routes can serve, not the per-key rate limit
    # (50/s by default), which would answer most of its requests 429.
    "TUNESMITH_RATE_LIMIT_PER_SECOND": "0",
    # The event_streams benchmark opens 50 streams on one key (default cap 20).
    "TUNESMITH_MAX_EVENT_STREAMS_PER_KEY": "64",
}


@dataclass
class Stack(Servers):
    workers: list[Service] = field(default_factory=list)

    @property
    def models(self) -> Path:
        return self.home / "models"

    @cached_property
    def engine(self) -> Engine:
        """A connection pool of the benchmark's own, for polling and bulk inserts."""
        return sa.create_engine(self.postgres.url, pool_size=2, max_overflow=2)

    def set_workers(self, count: int) -> None:
        """Run exactly `count` workers (w1, w2, ...), starting or stopping the difference."""
        while len(self.workers) > count:
            self.workers.pop().stop()
        while len(self.workers) < count:
            name = f"w{len(self.workers) + 1}"
            self.workers.append(start_worker(self.env, self.root / f"worker-{name}.log",
                                             name=name))

    def stop(self) -> None:
        self.set_workers(0)
        self.api.stop()
        self.redis.stop()
        if "engine" in self.__dict__:
            self.engine.dispose()
        self.postgres.stop("immediate")


@contextmanager
def running_stack(*, keep: bool = False,
                  extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix="tunesmith-bench-"))
    os.chmod(root, 0o755)  # the postgres user must reach its data folder inside
    postgres, redis, env = start_backing_servers(root, {**BENCH_SETTINGS, **(extra_env or {})})
    run_cli(["tiny-model"], env)
    api, url = start_api(env, root / "api.log")
    stack = Stack(root, env, postgres, redis, api, url)
    try:
        yield stack
    finally:
        stack.stop()
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
