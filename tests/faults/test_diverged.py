"""A job whose training goes NaN fails `diverged` with the step, keeps its last good checkpoint
and stores no model; its events (page and stream) stay strict JSON.

A real divergence is not reliable on the tiny model (AdamW bounds each update: learning rate 10
for full fine-tuning gave large but finite losses), so the test-only fault
TUNESMITH_TEST_FAULT_NAN_AT_STEP puts a NaN into a trained weight at step 5; the loss, the
gradients and the optimizer then go NaN as in an overflow.
"""

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import torch
from safetensors.torch import load_file

from testbed.learning import bundled_instructions
from testbed.settings_stack import stack_with
from tests.faults.stack import FaultStack

NAN_STEP = 5


@pytest.fixture(scope="module")
def nan_stack() -> Iterator[FaultStack]:
    with stack_with({"TUNESMITH_TEST_FAULTS": "true",
                     "TUNESMITH_TEST_FAULT_NAN_AT_STEP": str(NAN_STEP)}) as stack:
        yield stack


def _strict(text: str) -> Any:
    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_nan_job_fails_diverged_and_keeps_its_last_good_checkpoint(nan_stack: FaultStack
                                                                    ) -> None:
    project = nan_stack.project("diverge")
    upload = project.upload(bundled_instructions())
    job = project.create_job({
        "model": "tiny-llama", "training_file": upload["id"],
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "max_steps": 8, "batch_size": 4, "save_steps": 2, "logging_steps": 1}}},
        "tuning": {"type": "lora", "r": 8, "alpha": 16}})
    done = project.wait(job["id"], timeout=300)

    assert done["status"] == "failed", project.event_messages(job["id"])[-10:]
    assert done["error"]["code"] == "diverged"
    assert f"step {NAN_STEP}" in done["error"]["message"]
    assert "step 4" in done["error"]["message"]  # the last good checkpoint, named
    assert done["error"]["param"] == "method.hyperparameters.learning_rate"

    # Checkpoints before the NaN only, and their weights are finite.
    checkpoints = project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()
    steps = [c["step_number"] for c in checkpoints["data"]]
    assert steps[0] == 4 and all(step < NAN_STEP for step in steps), steps
    folders = list((nan_stack.home / "jobs" / job["id"] / "checkpoints").glob("checkpoint-*"))
    assert max(int(f.name.split("-")[1]) for f in folders) == 4, folders
    for folder in folders:
        weights = load_file(folder / "adapter_model.safetensors")
        assert all(torch.isfinite(w).all() for w in weights.values()), folder.name
    # No model stored: the only artifact is the last good checkpoint, kept as a failed job's
    # is (step 4, finite weights).
    artifacts = project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts")
    assert artifacts.status_code == 200
    names = [a["name"] for a in artifacts.json()["data"]]
    assert names and all(name.startswith("checkpoint/") for name in names), names
    kept = nan_stack.home / "jobs" / job["id"] / "artifacts" / "checkpoint"
    weights = load_file(kept / "adapter_model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert done["fine_tuned_model"] is None

    # Events: the page and the stream are strict JSON, and no metric is NaN.
    page = project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/events",
                            params={"limit": 1000})
    assert page.status_code == 200
    events = _strict(page.text)["data"]
    losses = {e["data"]["step"]: e["data"]["loss"] for e in events
              if e["type"] == "metrics" and "loss" in (e["data"] or {})}
    assert sorted(losses) == [1, 2, 3, 4]  # step 5's NaN was never logged
    with httpx.stream("GET", f"{nan_stack.url}/v1/fine_tuning/jobs/{job['id']}/events",
                      params={"stream": "true"}, headers=project.http.headers,
                      timeout=30) as response:
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    streamed = [_strict(d) for d in data[:-1]]
    assert streamed[-1]["data"]["status"] == "failed"
    assert len(streamed) == len(events)
