"""Fault tests get stacks of their own: PostgreSQL, Redis, the API and workers per module.

Killing a worker, restarting Redis or PostgreSQL here never touches the session stack
that the other tests share (tests/conftest.py). Each module names the settings its stack
needs in `STACK_ENV`; a test that needs a fresh stack calls the `make_stack` factory.
"""

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed.servers import run_cli
from tests.faults.stack import FaultStack, build_stack


@pytest.fixture(scope="session")
def tiny_model_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once (about 8 s of imports) and copied into every fault stack's home."""
    home = tmp_path_factory.mktemp("tiny-model-home")
    run_cli(["tiny-model"], {**os.environ, "TUNESMITH_HOME": str(home)})
    return home / "models" / "tiny-llama"


@pytest.fixture(scope="module")
def make_stack(tiny_model_source: Path) -> Iterator[Callable[..., FaultStack]]:
    """A factory of stacks, each in its own folder; all are torn down with the module."""
    stacks: list[FaultStack] = []

    def make(extra_env: dict[str, str] | None = None, *, workers: tuple[str, ...] = ("w1",)
             ) -> FaultStack:
        root = Path(tempfile.mkdtemp(prefix="tunesmith-faults-"))
        os.chmod(root, 0o755)  # the postgres user must reach its data folder inside
        stack = build_stack(root, extra_env or {}, tiny_model=tiny_model_source)
        stacks.append(stack)
        for name in workers:
            stack.start_worker(name)
        return stack

    yield make
    for stack in stacks:
        stack.close()
        if not os.environ.get("TUNESMITH_KEEP_TEST_DIR"):
            shutil.rmtree(stack.root, ignore_errors=True)


@pytest.fixture(scope="module")
def fault_stack(request: pytest.FixtureRequest,
                make_stack: Callable[..., FaultStack]) -> FaultStack:
    """The module's stack, with the module's `STACK_ENV` and `STACK_WORKERS`."""
    env = getattr(request.module, "STACK_ENV", {})
    workers = getattr(request.module, "STACK_WORKERS", ("w1",))
    return make_stack(env, workers=workers)
