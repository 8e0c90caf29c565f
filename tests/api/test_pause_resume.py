"""Pause and resume, done for real: a running job saves a checkpoint and frees the worker
within seconds; another job runs meanwhile; resumed, the job continues from that checkpoint
and ends with every step trained once. A queued job pauses at once; a paused job can be
cancelled; the official `openai` client's `pause`/`resume` work; wrong states answer 409."""

import time
from typing import Any

import pytest
from openai import OpenAI

from testbed.jobs import Project
from testbed.learning import bundled_instructions
from tests.conftest import Stack

STOP_WITHIN_SECONDS = 10.0


def spec(file_id: str, **hyperparameters: Any) -> dict[str, Any]:
    return {"model": "tiny-llama", "training_file": file_id,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {
                "batch_size": 8, "learning_rate": 5e-3, **hyperparameters}}},
            "tuning": {"type": "lora", "r": 8, "alpha": 16}}


@pytest.fixture(scope="module")
def file_id(project: Project) -> str:
    return project.upload(bundled_instructions(), "pause.jsonl")["id"]


@pytest.fixture(scope="module")
def paused_and_resumed(project: Project, file_id: str) -> dict[str, Any]:
    # 160 steps of one row, logged every step: long enough to be caught while training.
    job = project.create_job(spec(file_id, n_epochs=10, batch_size=1, logging_steps=1))
    project.wait_for_step(job["id"], 3)
    asked = time.monotonic()
    response = project.http.post(f"/v1/fine_tuning/jobs/{job['id']}/pause")
    assert response.status_code == 200, response.text
    assert response.json()["status_detail"] in ("pausing", "paused")
    paused = project.wait(job["id"], {"paused"}, timeout=60)
    stopped_after = time.monotonic() - asked
    checkpoints = project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()
    # The worker is free: another job runs to the end while this one is paused.
    other = project.create_job(spec(file_id, max_steps=2))
    other_done = project.wait(other["id"], {"succeeded", "failed"})
    still_paused = project.job(job["id"])
    resumed = project.http.post(f"/v1/fine_tuning/jobs/{job['id']}/resume")
    assert resumed.status_code == 200, resumed.text
    done = project.wait(job["id"], {"succeeded", "failed", "cancelled"}, timeout=300)
    return {"id": job["id"], "created": job, "paused": paused, "stopped_after": stopped_after,
            "checkpoints": checkpoints["data"], "other": other_done,
            "still_paused": still_paused, "resumed": resumed.json(), "done": done,
            "events": project.events(job["id"])}


def test_a_running_job_pauses_within_seconds_at_a_checkpoint(
        paused_and_resumed: dict[str, Any]) -> None:
    assert paused_and_resumed["stopped_after"] < STOP_WITHIN_SECONDS
    step = paused_and_resumed["paused"]["progress"]["step"]
    assert 3 <= step < 160
    assert step in {c["step_number"] for c in paused_and_resumed["checkpoints"]}


def test_the_worker_runs_other_jobs_meanwhile(paused_and_resumed: dict[str, Any]) -> None:
    assert paused_and_resumed["other"]["status"] == "succeeded"
    assert paused_and_resumed["still_paused"]["status_detail"] == "paused"


def test_resumed_job_continues_from_its_checkpoint(paused_and_resumed: dict[str, Any]) -> None:
    done, events = paused_and_resumed["done"], paused_and_resumed["events"]
    assert paused_and_resumed["resumed"]["status"] == "queued"
    assert done["status"] == "succeeded", done["error"]
    step = paused_and_resumed["paused"]["progress"]["step"]
    messages = [e["message"] for e in events]
    assert f"Resuming from checkpoint-{step}" in messages
    steps = [e["data"]["step"] for e in events if e["type"] == "metrics" and "loss" in e["data"]]
    assert sorted(steps) == list(range(1, 161)), steps  # every step trained and logged once
    # The attempt the pause ended was no failure: it does not count against the job.
    assert done["attempt"] == 2
    assert done["max_attempts"] == paused_and_resumed["created"]["max_attempts"] + 1


def test_wrong_states_answer_409(project: Project, paused_and_resumed: dict[str, Any]) -> None:
    job_id = paused_and_resumed["id"]  # succeeded by now
    for action, code in (("pause", "job_not_pausable"), ("resume", "job_not_resumable")):
        response = project.http.post(f"/v1/fine_tuning/jobs/{job_id}/{action}")
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == code


def test_queued_job_pauses_at_once_and_openai_client_resumes_it(
        stack: Stack, project: Project, file_id: str) -> None:
    client = OpenAI(base_url=f"{stack.url}/v1", api_key=project.key, max_retries=0, timeout=60)
    # The single worker is busy with the first job, so the others wait in the queue.
    busy = project.create_job(spec(file_id, n_epochs=4, batch_size=1))
    waiting = project.create_job(spec(file_id, max_steps=2))
    doomed = project.create_job(spec(file_id, max_steps=2))
    # OpenAI's enum has no paused: a paused job is queued for OpenAI, paused in full.
    for paused in (client.fine_tuning.jobs.pause(waiting["id"]),
                   client.fine_tuning.jobs.pause(doomed["id"])):
        assert (paused.status, paused.model_extra["status_detail"]) == ("queued", "paused")
    cancelled = project.http.post(f"/v1/fine_tuning/jobs/{doomed['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert project.event_messages(doomed["id"])[-1] == "Job cancelled while paused"
    project.http.post(f"/v1/fine_tuning/jobs/{busy['id']}/cancel")
    assert client.fine_tuning.jobs.resume(waiting["id"]).status == "queued"
    done = project.wait(waiting["id"], {"succeeded", "failed", "cancelled"})
    assert done["status"] == "succeeded", done["error"]
    assert done["attempt"] == 1  # paused before it started: no attempt was spent


def test_worker_lost_while_pausing_leaves_the_job_paused(stack: Stack, project: Project,
                                                         file_id: str) -> None:
    job = project.create_job(spec(file_id, n_epochs=10, batch_size=1))
    project.wait_for_step(job["id"], 2)
    stack.worker.kill_group()  # worker and training process, -9: nobody left to pause it
    try:
        assert project.http.post(f"/v1/fine_tuning/jobs/{job['id']}/pause").json()[
            "status_detail"] == "pausing"
        # The lease (10 s in the tests) runs out; the reaper finishes the pause.
        paused = project.wait(job["id"], {"paused"}, timeout=60)
        assert "lease expired); job paused at its last checkpoint" in \
            project.event_messages(job["id"])[-1]
        assert paused["max_attempts"] == job["max_attempts"] + 1
    finally:
        stack.restart_worker()
    project.http.post(f"/v1/fine_tuning/jobs/{job['id']}/resume")
    done = project.wait(job["id"], {"succeeded", "failed", "cancelled"}, timeout=300)
    assert done["status"] == "succeeded", done["error"]
