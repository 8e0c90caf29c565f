"""Two workers drain twenty queued jobs: each job runs exactly once, and both workers work.

The reconciler looks at jobs left queued past TUNESMITH_REDISPATCH_AFTER_SECONDS (3 s
here, so every job but the first few is looked at while it waits): it finds their
messages still waiting in Redis and sends none again, so each job is delivered once.
"""

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from testbed.learning import bundled_instructions
from tests.faults.evidence import claims, training_starts
from tests.faults.stack import FaultStack

# A module's stack and its jobs start inside its first test; a loaded 2-core machine
# needs more than the default 600 s.
pytestmark = pytest.mark.timeout(1200)

STACK_WORKERS = ("alpha", "beta")
STACK_ENV = {"TUNESMITH_REDISPATCH_AFTER_SECONDS": "3"}
JOBS = 20
# As cheap as a real job gets: two steps on four rows, one checkpoint; the cost is the
# training child's imports.
TINY: dict[str, Any] = {
    "model": "tiny-llama",
    "method": {"type": "supervised", "supervised": {"hyperparameters": {
        "max_steps": 2, "batch_size": 4, "save_steps": 2}}},
    "tuning": {"type": "lora", "r": 4, "alpha": 8},
}


def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


@pytest.fixture(scope="module")
def drained(fault_stack: FaultStack) -> dict[str, Any]:
    project = fault_stack.project("pair")
    file_id = project.upload(bundled_instructions()[:4])["id"]
    started = time.monotonic()
    ids = [project.create_job({**TINY, "training_file": file_id, "suffix": f"n{i}"})["id"]
           for i in range(JOBS)]
    jobs = [project.wait(job_id, timeout=900) for job_id in ids]
    return {"project": project, "jobs": jobs, "seconds": time.monotonic() - started,
            "events": {job["id"]: project.events(job["id"]) for job in jobs}}


def test_every_job_succeeds_exactly_once(drained: dict[str, Any]) -> None:
    for job in drained["jobs"]:
        events = drained["events"][job["id"]]
        assert job["status"] == "succeeded", (job["error"], [e["message"] for e in events])
        assert job["attempt"] == 1
        assert len(claims(events)) == 1, [e["message"] for e in events]
        assert len(training_starts(events)) == 1, [e["message"] for e in events]
    print(f"\n{JOBS} jobs on two workers in {drained['seconds']:.1f} s")


def test_both_workers_took_jobs(fault_stack: FaultStack, drained: dict[str, Any]) -> None:
    # A claim names the Celery pool process (host:pid); map it to the worker that forked it.
    by_worker: Counter[str] = Counter()
    pids = {name: service.pid for name, service in fault_stack.workers.items()}
    for events in drained["events"].values():
        pool_pid = int(claims(events)[0]["data"]["worker"].rsplit(":", 1)[1])
        parent = _parent_pid(pool_pid)
        owner = next((name for name, pid in pids.items() if pid == parent), None)
        assert owner is not None, (pool_pid, parent, pids)
        by_worker[owner] += 1
    print(f"\njobs per worker: {dict(by_worker)}")
    assert set(by_worker) == set(STACK_WORKERS), by_worker
    assert sum(by_worker.values()) == JOBS


def test_waiting_jobs_keep_their_one_message(fault_stack: FaultStack,
                                             drained: dict[str, Any]) -> None:
    waits = [claims(drained["events"][job["id"]])[0]["created_at"] - job["created_at"]
             for job in drained["jobs"]]
    # The reconciler (every second) had many chances to send waiting jobs again.
    assert max(waits) >= 3 * 3, waits
    logs = "".join(fault_stack.worker_log(name) for name in STACK_WORKERS)
    received = re.findall(r"Task tunesmith\.run_job\[[^\]]+\] received", logs)
    assert len(received) == JOBS, f"{len(received)} deliveries for {JOBS} jobs"
    assert "message dropped" not in logs
