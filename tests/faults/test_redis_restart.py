"""Restart Redis (no persistence: every message is lost) with one job running and several
queued: every job still runs, exactly once, and /readyz tells the truth meanwhile."""

import time
from typing import Any

import pytest

from testbed.jobs import Project
from testbed.learning import bundled_instructions
from tests.faults.evidence import claims, training_starts
from tests.faults.stack import FaultStack, wait_for

# A module's stack and its jobs start inside its first test; a loaded 2-core machine
# needs more than the default 600 s.
pytestmark = pytest.mark.timeout(900)


def _spec(file_id: str, steps: int) -> dict[str, Any]:
    return {"model": "tiny-llama", "training_file": file_id, "seed": 3,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {
                "max_steps": steps, "batch_size": 8, "learning_rate": 3e-3,
                "save_steps": 20}}},
            "tuning": {"type": "lora", "r": 8, "alpha": 16}}


@pytest.fixture(scope="module")
def outage(fault_stack: FaultStack) -> dict[str, Any]:
    """One job training, three queued, Redis down for a few seconds, one job sent meanwhile."""
    project = fault_stack.project("redis")
    file_id = project.upload(bundled_instructions())["id"]
    # Long enough to outlast the outage (a step takes a few tens of milliseconds).
    running = project.create_job(_spec(file_id, 600))["id"]
    wait_for(lambda: project.job(running)["progress"].get("step", 0) > 0, timeout=180,
             what="the first job to train")
    queued = [project.create_job(_spec(file_id, 3))["id"] for _ in range(3)]
    assert all(project.job(j)["status"] == "queued" for j in queued)
    assert fault_stack.readyz() == 200

    fault_stack.redis.stop()
    down_at = time.monotonic()
    ready_while_down = fault_stack.readyz()
    sent_while_down = time.monotonic()
    # The API still takes a job; the reconciler sends its message when the broker is back.
    during = project.create_job(_spec(file_id, 3))["id"]
    create_seconds = time.monotonic() - sent_while_down
    assert project.job(running)["status"] == "running"
    time.sleep(max(0.0, 5 - (time.monotonic() - down_at)))
    fault_stack.redis.start()
    up_at = time.monotonic()
    ready_after = wait_for(lambda: fault_stack.readyz() == 200, timeout=30,
                           what="/readyz to answer 200")
    jobs = [running, *queued, during]
    for job_id in jobs:
        project.wait(job_id, timeout=400)
    return {"project": project, "jobs": jobs, "running": running,
            "ready_while_down": ready_while_down, "ready_after": ready_after,
            "create_seconds": create_seconds, "downtime": up_at - down_at,
            "all_done_after": time.monotonic() - up_at}


def test_readyz_says_unavailable_while_redis_is_down(outage: dict[str, Any]) -> None:
    assert outage["ready_while_down"] == 503
    assert outage["ready_after"]
    # Creating a job does not hang on the broker's retries.
    assert outage["create_seconds"] < 10, outage["create_seconds"]
    print(f"\n/readyz 503 while Redis was down; a job created meanwhile answered in "
          f"{outage['create_seconds']:.1f} s")


def test_every_job_runs_once_and_succeeds(outage: dict[str, Any]) -> None:
    project: Project = outage["project"]
    for job_id in outage["jobs"]:
        job = project.job(job_id)
        events = project.events(job_id)
        assert job["status"] == "succeeded", (job_id, job["error"],
                                              [e["message"] for e in events][-15:])
        assert job["attempt"] == 1, job_id
        assert len(claims(events)) == 1, [e["message"] for e in events]
        assert len(training_starts(events)) == 1, [e["message"] for e in events]
        assert job["result_files"], job_id
    print(f"\nRedis down {outage['downtime']:.1f} s; all {len(outage['jobs'])} jobs done "
          f"{outage['all_done_after']:.1f} s after it came back")
