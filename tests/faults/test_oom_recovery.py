"""Out-of-memory recovery: an OOM at step 5 (the test-only fault
TUNESMITH_TEST_FAULT_OOM_AT_STEP raises a real torch.OutOfMemoryError on CPU, once per job)
is recovered by a fresh training process with half the micro-batch and twice the gradient
accumulation, resuming from the checkpoint of step 4: the job succeeds, its events say what
changed, the effective batch is the same, and the loss curve goes on from the checkpoint."""

from collections.abc import Iterator

import pytest

from testbed.learning import bundled_instructions
from testbed.settings_stack import stack_with
from tests.faults.stack import FaultStack

OOM_STEP = 5


@pytest.fixture(scope="module")
def oom_stack() -> Iterator[FaultStack]:
    with stack_with({"TUNESMITH_TEST_FAULTS": "true",
                     "TUNESMITH_TEST_FAULT_OOM_AT_STEP": str(OOM_STEP)}) as stack:
        yield stack


def test_oom_halves_the_micro_batch_and_resumes(oom_stack: FaultStack) -> None:
    project = oom_stack.project("oom")
    upload = project.upload(bundled_instructions())
    job = project.create_job({
        "model": "tiny-llama", "training_file": upload["id"], "seed": 3,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "max_steps": 8, "batch_size": 8, "learning_rate": 5e-3, "save_steps": 2,
            "logging_steps": 1}}},
        "tuning": {"type": "lora", "r": 8, "alpha": 16}})
    done = project.wait(job["id"], timeout=400)
    events = project.events(job["id"])
    messages = [e["message"] for e in events]
    assert done["status"] == "succeeded", (done["error"], messages[-15:])

    # What changed, said on the job.
    recovery = [e for e in events if "oom_recovery" in (e["data"] or {})]
    assert len(recovery) == 1, messages
    assert "micro-batch 8 -> 4" in recovery[0]["message"]
    assert "effective batch unchanged" in recovery[0]["message"]
    assert recovery[0]["data"]["oom_recovery"]["halvings"] == 1
    assert any(m.startswith("Resuming from checkpoint-4") for m in messages), messages

    # The same effective batch: 4 rows a pass, 2 passes a step.
    resolved = done["resolved_hyperparameters"]
    assert resolved["batch_size"] == 8
    assert (resolved["micro_batch_size"], resolved["gradient_accumulation_steps"]) == (4, 2)

    # Each step logged once; the steps after the resume continue the curve (a restart from
    # scratch would start again near step 1's loss).
    steps = [e["data"]["step"] for e in events
             if e["type"] == "metrics" and "loss" in (e["data"] or {})]
    assert steps == list(range(1, 9)), steps
    losses = project.losses(job["id"])
    assert max(losses[OOM_STEP - 1:]) < 0.9 * losses[0], losses
    assert losses[-1] < 0.8 * losses[0], losses
