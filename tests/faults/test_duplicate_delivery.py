"""A Celery message delivered again (broker redelivery, a resend) never runs a job twice.

The duplicates are real messages sent by name through the broker, as the API and the
reaper send them; a second worker is started so one of them is free to take the
duplicate while the first is still training the job.
"""

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.jobs import Project
from testbed.learning import bundled_instructions
from testbed.servers import REPO, Service, start_worker, wait_until

SPEC = {
    "model": "tiny-llama",
    # 100 steps: long enough for the duplicates to arrive while the job trains.
    "method": {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 50, "batch_size": 8, "learning_rate": 5e-3}}},
    "tuning": {"type": "lora", "r": 8, "alpha": 16},
}
SEND = ("import sys\n"
        "from tunesmith.queue import RUN_JOB_TASK, celery_app\n"
        "app = celery_app()\n"
        "print(' '.join(app.send_task(RUN_JOB_TASK, args=[sys.argv[1]]).id for _ in range(2)))\n")
SUPERVISE = ("import sys\n"
             "from worker.process.supervise import supervise\n"
             "print(supervise(sys.argv[1], worker_id='test-direct-call'))\n")


def _python(code: str, job_id: str, env: dict[str, str]) -> str:
    """Run code in a process of its own with the stack's settings (read at import)."""
    result = subprocess.run([sys.executable, "-c", code, job_id], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def _send_twice(env: dict[str, str], job_id: str) -> list[str]:
    """Two more messages for the job; returns their Celery task ids."""
    return _python(SEND, job_id, env).split()


def _outcomes(logs: list[Path], task_ids: list[str]) -> dict[str, str]:
    """What each task returned, from the workers' logs ("Task ...[id] succeeded in ...: 'x'")."""
    text = "".join(log.read_text(errors="replace") for log in logs if log.is_file())
    found = {}
    for task_id in task_ids:
        match = re.search(rf"\[{task_id}\] succeeded in [0-9.]+s: '(\w+)'", text)
        if match:
            found[task_id] = match.group(1)
    return found


def _wait_outcomes(logs: list[Path], task_ids: list[str], timeout: float) -> dict[str, str]:
    return wait_until(lambda: (o := _outcomes(logs, task_ids)) and len(o) == len(task_ids) and o,
                      timeout=timeout, what=f"tasks {task_ids} in {logs}")


def _snapshot(project: Project, job_id: str) -> dict[str, Any]:
    """Everything a user can see of a finished job."""
    job = project.job(job_id)
    base = f"/v1/fine_tuning/jobs/{job_id}"
    return {
        "job": {k: job[k] for k in ("status", "finished_at", "started_at", "fine_tuned_model",
                                    "result_files", "trained_tokens", "attempt", "error")},
        "artifacts": project.http.get(f"{base}/artifacts").json()["data"],
        "checkpoints": project.http.get(f"{base}/checkpoints", params={"limit": 100}).json(),
        "events": project.events(job_id),
    }


@pytest.fixture(scope="module")
def second_worker(stack) -> Iterator[Service]:  # type: ignore[no-untyped-def]
    service = start_worker(stack.env, stack.root / "worker-dup.log", name="dup")
    try:
        yield service
    finally:
        service.stop()


def test_duplicate_messages_never_run_a_job_twice(stack, project: Project,  # type: ignore[no-untyped-def]
                                                  second_worker: Service) -> None:
    logs = [stack.worker.log, second_worker.log]
    upload = project.upload(bundled_instructions(), "duplicates.jsonl")
    job = project.create_job({**SPEC, "training_file": upload["id"]})
    job_id = job["id"]
    wait_until(lambda: (project.job(job_id)["progress"] or {}).get("step"), timeout=180,
               what=f"job {job_id} training")

    # While it trains: whichever worker is free takes the duplicates and drops them.
    during = _send_twice(stack.env, job_id)
    assert _wait_outcomes(logs, during, timeout=60) == dict.fromkeys(during, "skipped")
    assert project.job(job_id)["status"] == "running", "the job ended before the duplicates"

    done = project.wait(job_id, timeout=300)
    assert done["status"] == "succeeded", (done["error"], project.event_messages(job_id)[-10:])
    before = _snapshot(project, job_id)
    assert before["artifacts"] and before["job"]["attempt"] == 1

    # After it succeeded: more deliveries change nothing a user can see.
    after_success = _send_twice(stack.env, job_id)
    assert _wait_outcomes(logs, after_success, timeout=60) == \
        dict.fromkeys(after_success, "skipped")
    # The supervisor itself, called on the finished job, claims nothing.
    assert _python(SUPERVISE, job_id, stack.env) == "skipped"
    time.sleep(1)  # anything a stray run would write, it writes at once
    assert _snapshot(project, job_id) == before

    messages = [e["message"] for e in before["events"]]
    assert sum(m.startswith("Job started on ") for m in messages) == 1, messages
    assert sum(m.startswith("Training process started (pid ") for m in messages) == 1, messages
    assert sum(m == "The job has successfully completed" for m in messages) == 1, messages
