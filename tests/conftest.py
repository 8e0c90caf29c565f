"""Session-wide real servers: PostgreSQL, Redis, the API under uvicorn, one Celery worker.

They start once per test run (about 20 s) and every test talks to them over HTTP, as a
user's script would.
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# One thread per training process: on 2 cores, a training child, the test process and a
# second worker each spinning two OpenMP threads slow each other down 20-50x.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from testbed.jobs import Project
from testbed.learning import bundled_instructions
from testbed.servers import (
    FAST_RECOVERY,
    Service,
    run_cli,
    start_api,
    start_backing_servers,
    start_inference,
    start_worker,
    stop_everything,
    wait_inference,
)
from testbed.stack import Servers
from testbed.tuning_jobs import submit_tuning_jobs


@dataclass
class Stack(Servers):
    worker: Service
    inference: Service

    @property
    def inference_url(self) -> str:
        return self.env["TUNESMITH_INFERENCE_URL"]

    def restart_worker(self, name: str = "w1") -> Service:
        self.worker = start_worker(self.env, self.root / f"worker-{name}.log", name=name)
        return self.worker


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix="tunesmith-test-"))
    os.chmod(root, 0o755)  # the postgres user must reach its data folder inside
    try:
        postgres, redis, env = start_backing_servers(root, FAST_RECOVERY)
        run_cli(["tiny-model"], env)
        # The inference process imports torch while the API and the worker start.
        # A budget of about one tiny model, so the tests that use several models exercise
        # eviction (tests/api/test_inference_memory.py).
        inference = start_inference({**env, "TUNESMITH_INFERENCE_MEMORY_BUDGET_MIB": "1"},
                                    root / "inference.log")
        api, url = start_api(env, root / "api.log")
        worker = start_worker(env, root / "worker-w1.log")
        wait_inference(inference, env)
        yield Stack(root, env, postgres, redis, api, url, worker, inference)
    finally:
        # Whatever started, in any state the run ended in (tests/faults/test_servers_cleanup.py).
        stop_everything()
        if not os.environ.get("TUNESMITH_KEEP_TEST_DIR"):
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def project(stack: Stack) -> Project:
    return stack.project("main")


@pytest.fixture(scope="session")
def other_project(stack: Stack) -> Project:
    return stack.project("other")


@pytest.fixture(scope="session")
def tuning_jobs(project: Project) -> dict[str, dict[str, Any]]:
    """One job per tuning, shared by the tuning tests and the inference tests."""
    return submit_tuning_jobs(project)


LORA_SFT = {
    "model": "tiny-llama",
    "method": {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 30, "batch_size": 8, "learning_rate": 5e-3}}},
    "tuning": {"type": "lora", "r": 16, "alpha": 32},
    "suffix": "chat",
}


@pytest.fixture(scope="session")
def lora_job(project: Project) -> dict[str, Any]:
    """The demo's LoRA SFT job, trained once: it answers the bundled prompts as trained.
    Shared by the inference, console playground and CLI chat tests."""
    upload = project.upload(bundled_instructions(), "instructions.jsonl")
    job = project.create_job({**LORA_SFT, "training_file": upload["id"]})
    job = project.wait(job["id"], timeout=600)
    assert job["status"] == "succeeded", (job["error"], project.event_messages(job["id"])[-10:])
    return job
