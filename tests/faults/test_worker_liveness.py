"""What the service says about its workers, on the PostgreSQL + Redis stack: /readyz
counts a live worker, and a job waiting on a queue no worker consumes says so."""

import time

import httpx
import sqlalchemy as sa

from testbed.jobs import Project
from testbed.learning import bundled_instructions
from testbed.servers import wait_until
from tests.conftest import Stack


def test_readyz_counts_the_live_worker(stack: Stack) -> None:
    ready = httpx.get(f"{stack.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "workers": "ok"}
    # The heartbeat row names the worker and the queue it consumes.
    engine = sa.create_engine(stack.postgres.url)
    with engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT hostname, queues, heartbeat_at FROM worker_heartbeats")).all()
    engine.dispose()
    assert any(row.queues == "gpu" and row.heartbeat_at > time.time() - 15 for row in rows), rows


def test_job_on_a_queue_no_worker_consumes_says_so(project: Project) -> None:
    upload = project.upload(bundled_instructions()[:4])
    job = project.create_job({
        "model": "tiny-llama", "training_file": upload["id"],
        "method": {"type": "supervised"}, "tuning": {"type": "lora"},
        "resources": {"gpu_class": "h100"}})
    try:
        warned = wait_until(
            lambda: [e for e in project.events(job["id"])
                     if (e.get("data") or {}).get("reason") == "no_worker"],
            timeout=60, what="the no-worker event")
        [event] = warned
        assert "gpu.h100" in event["message"] and "tunesmith worker" in event["message"]
        assert event["data"]["queue"] == "gpu.h100"
        assert project.job(job["id"])["status"] == "queued"
        # Once per attempt, not every reaper round.
        time.sleep(3)
        assert len([e for e in project.events(job["id"])
                    if (e.get("data") or {}).get("reason") == "no_worker"]) == 1
    finally:
        project.http.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
