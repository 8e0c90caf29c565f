"""Cancel, done for real: a running job stops within seconds and its training process is gone;
a queued job is cancelled at once; the single worker then takes the next job as usual."""

import time
from pathlib import Path
from typing import Any

import pytest

from testbed.jobs import Project
from testbed.learning import bundled_instructions

CANCEL_WITHIN_SECONDS = 10.0


def _spec(file_id: str, n_epochs: int, **extra: Any) -> dict[str, Any]:
    hyperparameters = {"n_epochs": n_epochs, "batch_size": 8, "learning_rate": 5e-3, **extra}
    return {"model": "tiny-llama", "training_file": file_id,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
            "tuning": {"type": "lora", "r": 8, "alpha": 16}}


def _training_pid(project: Project, job_id: str) -> int | None:
    for event in project.events(job_id):
        if event["message"].startswith("Training process started (pid "):
            return int(event["data"]["pid"])
    return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def _assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"type", "code", "message", "param"}, error
    assert error["code"] == code and error["message"], error


@pytest.fixture(scope="module")
def file_id(project: Project) -> str:
    return project.upload(bundled_instructions(), "cancel.jsonl")["id"]


@pytest.fixture(scope="module")
def running(project: Project, file_id: str) -> dict[str, Any]:
    """A job of 800 steps (a minute or more here), caught while its trainer is stepping."""
    job = project.create_job(_spec(file_id, n_epochs=50, batch_size=1, logging_steps=2))
    project.wait_for_step(job["id"], 1)
    pid = _training_pid(project, job["id"])
    assert pid is not None
    return {"id": job["id"], "pid": pid}


def test_queued_job_cancels_at_once_and_running_one_stops_in_seconds(
        project: Project, file_id: str, running: dict[str, Any]) -> None:
    job_id, pid = running["id"], running["pid"]
    # The training really runs in that process before the cancel.
    assert "worker.training.child" in _cmdline(pid) and job_id in _cmdline(pid)
    assert project.job(job_id)["status"] == "running"

    # The one worker is busy, so these two wait in the queue.
    queued = project.create_job(_spec(file_id, n_epochs=1))
    follower = project.create_job(_spec(file_id, n_epochs=2))
    response = project.http.post(f"/v1/fine_tuning/jobs/{queued['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert project.job(queued["id"])["status"] == "cancelled"

    started = time.monotonic()
    response = project.http.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    # OpenAI's status stays in its enum; ours says the stop is under way.
    assert (response.json()["status"], response.json()["status_detail"]) in (
        ("running", "cancelling"), ("cancelled", "cancelled"))
    done = project.wait(job_id, timeout=CANCEL_WITHIN_SECONDS + 5)
    took = time.monotonic() - started
    print(f"running job {job_id} cancelled in {took:.1f}s")
    assert done["status"] == "cancelled", done
    assert took <= CANCEL_WITHIN_SECONDS, f"cancel took {took:.1f}s"
    assert done["finished_at"] is not None and done["fine_tuned_model"] is None
    # Its training process is gone (reaped, not a zombie: /proc has no entry at all).
    assert not Path(f"/proc/{pid}").exists(), _cmdline(pid)
    messages = project.event_messages(job_id)
    assert "Cancel requested; stopping the training" in messages
    assert messages[-1] == "Job cancelled; training stopped"

    # A second cancel is a conflict, in the one error shape; so is cancelling the queued one.
    _assert_error(project.http.post(f"/v1/fine_tuning/jobs/{job_id}/cancel"), 409,
                  "job_not_cancellable")
    _assert_error(project.http.post(f"/v1/fine_tuning/jobs/{queued['id']}/cancel"), 409,
                  "job_not_cancellable")

    # The worker moves on: it drops the cancelled job's message and trains the next one.
    after = project.wait(follower["id"], timeout=240)
    assert after["status"] == "succeeded", (after["error"],
                                            project.event_messages(follower["id"])[-10:])
    assert project.job(queued["id"])["status"] == "cancelled"
    queued_messages = project.event_messages(queued["id"])
    assert queued_messages[-1] == "Job cancelled before it started"
    assert not any(m.startswith(("Job started on", "Training process started"))
                   for m in queued_messages), queued_messages
    assert project.job(job_id)["status"] == "cancelled"
