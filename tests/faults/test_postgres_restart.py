"""Restart PostgreSQL under a training job: writes are retried, nothing is lost or doubled.

A short outage (a few seconds) and one longer than the lease: the worker cannot renew its
lease while the database is away, and the job must not be taken from it for that.
"""

import time
from typing import Any

import httpx
import pytest

from testbed.jobs import Project
from testbed.learning import bundled_instructions
from tests.faults.evidence import checkpoint_steps, claims, step_metrics, training_starts
from tests.faults.stack import FaultStack, wait_for

# A module's stack and its jobs start inside its first test; a loaded 2-core machine
# needs more than the default 600 s.
pytestmark = pytest.mark.timeout(900)

STEPS = 60
LEASE_SECONDS = 10.0


def _spec(file_id: str) -> dict[str, Any]:
    return {"model": "tiny-llama", "training_file": file_id, "seed": 5,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {
                "max_steps": STEPS, "batch_size": 8, "learning_rate": 3e-3,
                "save_steps": 10, "logging_steps": 1}}},
            "tuning": {"type": "lora", "r": 8, "alpha": 16}}


def _restart_during_training(stack: FaultStack, project: Project, file_id: str,
                             downtime: float) -> dict[str, Any]:
    job_id = project.create_job(_spec(file_id))["id"]
    wait_for(lambda: project.job(job_id)["progress"].get("step", 0) >= 10, timeout=240,
             what="the job to pass step 10", interval=0.1)
    stack.postgres.stop("fast")
    down_at = time.monotonic()
    # While the database is away the API says so, with a status a client may retry on.
    during = httpx.get(f"{stack.url}/v1/fine_tuning/jobs/{job_id}", headers=project.http.headers,
                       timeout=30)
    ready = stack.readyz()
    time.sleep(max(0.0, downtime - (time.monotonic() - down_at)))
    stack.postgres.start()
    up_at = time.monotonic()
    # The child waits on its writes while the database is away, so the job outlives it.
    status_after = wait_for(lambda: project.job(job_id)["status"], timeout=30,
                            what="the API to answer again")
    done = wait_for(lambda: project.job(job_id)["status"] in ("succeeded", "failed")
                    and project.job(job_id), timeout=300, what="the job to finish")
    return {"job": done, "events": project.events(job_id), "during": during, "ready": ready,
            "status_after": status_after,
            "downtime": up_at - down_at, "finished_after": time.monotonic() - up_at,
            "checkpoints": project.http.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints",
                                            params={"limit": 100}).json()["data"]}


@pytest.fixture(scope="module")
def project(fault_stack: FaultStack) -> Project:
    return fault_stack.project("pg")


@pytest.fixture(scope="module")
def file_id(project: Project) -> str:
    return project.upload(bundled_instructions())["id"]


@pytest.mark.parametrize("downtime", [4.0, LEASE_SECONDS + 5], ids=["short", "past-lease"])
def test_job_survives_a_postgres_restart(fault_stack: FaultStack, project: Project,
                                         file_id: str, downtime: float) -> None:
    run = _restart_during_training(fault_stack, project, file_id, downtime)
    job, events = run["job"], run["events"]
    messages = [e["message"] for e in events]
    assert run["status_after"] == "running"
    assert job["status"] == "succeeded", (job["error"], messages[-20:])
    # Never taken from its worker, never started twice.
    assert job["attempt"] == 1, messages
    assert len(claims(events)) == 1 and len(training_starts(events)) == 1, messages
    assert not any("lease expired" in m for m in messages), messages
    # Every step's metrics exactly once, in order: no event lost, none written twice.
    steps = [m["step"] for m in step_metrics(events)]
    assert steps == list(range(1, STEPS + 1)), steps
    # Every checkpoint recorded, the ones saved while the database was away included.
    expected = list(range(10, STEPS + 1, 10))
    assert sorted(checkpoint_steps(events)) == expected
    # The newest five stay listed (worker/training/listed_checkpoints.py).
    assert sorted(c["step_number"] for c in run["checkpoints"]) == expected[-5:]
    assert run["during"].status_code == 503, run["during"].text
    assert run["during"].json()["error"]["code"] == "database_unavailable"
    assert run["ready"] == 503
    print(f"\nPostgreSQL down {run['downtime']:.1f} s; job done {run['finished_after']:.1f} s "
          "after it came back")
