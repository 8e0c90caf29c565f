"""A stack of its own for tests that need worker settings the session stack does not have
(test-only faults): PostgreSQL, Redis, the API and one worker, all with `settings`."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from testbed.servers import (
    FAST_RECOVERY,
    run_cli,
    start_api,
    start_backing_servers,
)
from tests.faults.stack import FaultStack


@contextmanager
def stack_with(settings: dict[str, str]) -> Iterator[FaultStack]:
    root = Path(tempfile.mkdtemp(prefix="tunesmith-settings-"))
    os.chmod(root, 0o755)  # the postgres user must reach its data folder inside
    postgres, redis, env = start_backing_servers(root, {**FAST_RECOVERY, **settings})
    run_cli(["tiny-model"], env)
    api, url = start_api(env, root / "api.log")
    stack = FaultStack(root, env, postgres, redis, api, url)
    try:
        stack.start_worker("w1")
        yield stack
    finally:
        stack.close()
        if not os.environ.get("TUNESMITH_KEEP_TEST_DIR"):
            shutil.rmtree(root, ignore_errors=True)
