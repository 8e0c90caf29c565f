"""kill -9 a worker mid-training: the job resumes from its checkpoint on another worker and
ends as good as a job never interrupted; a job whose workers keep dying fails `worker_lost`.
"""

import time
from pathlib import Path
from typing import Any

import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from testbed.jobs import Project
from testbed.learning import answer_token_accuracy, bundled_instructions
from testbed.servers import Service
from tests.faults.evidence import (
    checkpoint_steps,
    child_pids,
    claims,
    loss_by_step,
    process_gone,
    training_starts,
)
from tests.faults.stack import FaultStack, wait_for

# A module's stack and its jobs start inside its first test; a loaded 2-core machine
# needs more than the default 600 s.
pytestmark = pytest.mark.timeout(1200)

# Two attempts: one kill is survived, a second kill of the same job fails it.
STACK_ENV = {"TUNESMITH_MAX_ATTEMPTS": "2"}

STEPS = 100
LONG_SFT: dict[str, Any] = {
    "model": "tiny-llama",
    "method": {"type": "supervised", "supervised": {"hyperparameters": {
        "max_steps": STEPS, "batch_size": 8, "learning_rate": 3e-3,
        "save_steps": 10, "logging_steps": 1}}},
    "tuning": {"type": "lora", "r": 16, "alpha": 32},
    "seed": 7,
}


@pytest.fixture(scope="module")
def project(fault_stack: FaultStack) -> Project:
    return fault_stack.project("faults")


@pytest.fixture(scope="module")
def training_file(project: Project) -> str:
    return project.upload(bundled_instructions(), "instructions.jsonl")["id"]


@pytest.fixture(scope="module")
def reference(project: Project, training_file: str) -> dict[str, Any]:
    """The same spec and seed, never interrupted."""
    job = project.create_job({**LONG_SFT, "training_file": training_file})
    done = project.wait(job["id"], timeout=400)
    assert done["status"] == "succeeded", done["error"]
    return done


@pytest.fixture(scope="module")
def interrupted(fault_stack: FaultStack, project: Project, training_file: str,
                reference: dict[str, Any]) -> dict[str, Any]:
    """A job whose worker is killed (the whole process group, -9) after its 3rd checkpoint."""
    job = project.create_job({**LONG_SFT, "training_file": training_file})
    wait_for(lambda: len(checkpoint_steps(project.events(job["id"]))) >= 3, timeout=300,
             what="three checkpoints", interval=0.1)
    killed_at = time.monotonic()
    fault_stack.workers["w1"].kill_group()
    events = project.events(job["id"])
    step_at_kill = project.job(job["id"])["progress"]["step"]
    pid = child_pids(events)[0]
    # PR_SET_PDEATHSIG: the training child dies with its supervisor, nothing trains on.
    wait_for(lambda: process_gone(pid), timeout=10, what=f"training child {pid} to die")
    assert project.job(job["id"])["status"] == "running"  # nobody has noticed yet
    fault_stack.start_worker("w2")
    done = project.wait(job["id"], timeout=400)
    return {"job": done, "events": project.events(job["id"]), "step_at_kill": step_at_kill,
            "recovery_seconds": time.monotonic() - killed_at,
            "checkpoint_at_kill": max(checkpoint_steps(events))}


def test_killed_job_is_requeued_and_resumes_from_its_checkpoint(
        interrupted: dict[str, Any]) -> None:
    job, events = interrupted["job"], interrupted["events"]
    assert job["status"] == "succeeded", (job["error"], [e["message"] for e in events][-20:])
    assert job["attempt"] == 2
    messages = [e["message"] for e in events]
    assert any("lease expired" in m and "requeued (attempt 2 of 2)" in m for m in messages), \
        messages
    # Exactly one claim and one training process per attempt: it never ran twice at once.
    assert len(claims(events)) == 2 and len(training_starts(events)) == 2
    resumed = [e for e in events if e["message"].startswith("Resuming from checkpoint-")]
    assert len(resumed) == 1, messages
    step = resumed[0]["data"]["resume_from_step"]
    assert step == interrupted["checkpoint_at_kill"] or step > interrupted["checkpoint_at_kill"]
    assert step <= interrupted["step_at_kill"]
    begin = [e for e in events if e["message"].startswith("Training from step")]
    assert begin and begin[-1]["data"]["step"] == step
    assert job["progress"]["step"] == STEPS
    print(f"\nkilled at step {interrupted['step_at_kill']}, resumed from {step}, "
          f"recovered and finished in {interrupted['recovery_seconds']:.1f} s")


def test_loss_curve_continues_where_it_stopped(interrupted: dict[str, Any],
                                               reference: dict[str, Any],
                                               project: Project) -> None:
    losses = loss_by_step(interrupted["events"])
    expected = loss_by_step(project.events(reference["id"]))
    assert sorted(losses) == sorted(expected) == list(range(1, STEPS + 1))
    resume = next(e["data"]["resume_from_step"] for e in interrupted["events"]
                  if e["message"].startswith("Resuming from"))
    # Right after the resume the loss is where it was before the kill, far below the start.
    after = [losses[s] for s in range(resume + 1, resume + 6)]
    before = [losses[s] for s in range(resume - 4, resume + 1)]
    start = [losses[s] for s in range(1, 6)]
    assert sum(after) / 5 < 0.5 * sum(start) / 5, (start, before, after)
    assert abs(sum(after) - sum(before)) / 5 < 0.25 * sum(start) / 5, (before, after)
    # Restored optimizer, scheduler, RNG and data order: the same curve as uninterrupted.
    gaps = [abs(losses[s] - expected[s]) for s in range(resume + 1, STEPS + 1)]
    print(f"\nlargest per-step loss gap after resume: {max(gaps):.2e}")
    assert max(gaps) < 1e-3, gaps


def test_final_adapter_as_good_as_uninterrupted(interrupted: dict[str, Any],
                                                reference: dict[str, Any], project: Project,
                                                fault_stack: FaultStack,
                                                tmp_path: Path) -> None:
    model_dir = fault_stack.tiny_model
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = bundled_instructions()
    accuracy = {}
    for name, job in (("interrupted", interrupted["job"]), ("reference", reference)):
        folder = project.download_artifacts(job["id"], tmp_path / name) / "adapter"
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), folder)
        accuracy[name] = answer_token_accuracy(model, tokenizer, rows)
    base = answer_token_accuracy(AutoModelForCausalLM.from_pretrained(model_dir), tokenizer, rows)
    print(f"\nanswer token accuracy: base {base:.3f}, {accuracy}")
    assert accuracy["reference"] > base + 0.5
    assert abs(accuracy["interrupted"] - accuracy["reference"]) <= 0.02, accuracy
    final = [sum(losses[s] for s in range(STEPS - 9, STEPS + 1)) / 10
             for losses in (loss_by_step(interrupted["events"]),
                            loss_by_step(project.events(reference["id"])))]
    assert abs(final[0] - final[1]) < 0.01, final


def _alive_workers(stack: FaultStack) -> list[Service]:
    return [w for w in stack.workers.values() if w.process and w.process.poll() is None]


def test_job_whose_worker_keeps_dying_fails_worker_lost(fault_stack: FaultStack,
                                                        project: Project,
                                                        training_file: str) -> None:
    spec = {**LONG_SFT, "training_file": training_file}
    spec["method"] = {"type": "supervised", "supervised": {"hyperparameters": {
        **LONG_SFT["method"]["supervised"]["hyperparameters"], "max_steps": 100_000}}}
    job = project.create_job(spec)
    for attempt in (1, 2):
        if not _alive_workers(fault_stack):
            fault_stack.start_worker(f"doomed{attempt}")
        # Training, not just claimed: the child is the thing that dies with the worker.
        wait_for(lambda a=attempt: project.job(job["id"])["attempt"] == a
                 and len(training_starts(project.events(job["id"]))) == a,
                 timeout=300, what=f"attempt {attempt} to train")
        for worker in _alive_workers(fault_stack):
            worker.kill_group()
    started = time.monotonic()
    done = project.wait(job["id"], timeout=120)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "worker_lost"
    assert done["attempt"] == 2
    events = project.events(job["id"])
    messages = [e["message"] for e in events]
    assert any("requeued (attempt 2 of 2)" in m for m in messages), messages
    assert any("on attempt 2 of 2; giving up" in m for m in messages), messages
    assert len(claims(events)) == 2
    assert all(process_gone(pid) for pid in child_pids(events))
    print(f"\nfailed worker_lost {time.monotonic() - started:.1f} s after the second kill")


def test_worker_stopped_by_its_host_requeues_its_job_at_once(fault_stack: FaultStack,
                                                             project: Project,
                                                             training_file: str) -> None:
    """SIGTERM to the worker's process group (systemd stop, a preempted node): the child
    checkpoints where it is, the supervisor requeues the job without waiting for the lease,
    and the next worker resumes from that checkpoint: no step is trained twice."""
    spec = {**LONG_SFT, "training_file": training_file}
    spec["method"] = {"type": "supervised", "supervised": {"hyperparameters": {
        **LONG_SFT["method"]["supervised"]["hyperparameters"], "max_steps": 60,
        "save_steps": 1000}}}  # no periodic checkpoint: only the one the stop writes
    job_id = project.create_job(spec)["id"]
    if not _alive_workers(fault_stack):
        fault_stack.start_worker("steady")
    wait_for(lambda: project.job(job_id)["progress"].get("step", 0) >= 10, timeout=300,
             what="the job to pass step 10", interval=0.1)
    (worker,) = _alive_workers(fault_stack)
    stopped_at = time.monotonic()
    worker.stop()  # SIGTERM to the group; SIGKILL only after 20 s
    stop_seconds = time.monotonic() - stopped_at
    job = project.job(job_id)
    events = project.events(job_id)
    messages = [e["message"] for e in events]
    assert job["status"] == "queued", messages[-10:]
    assert any("requeued to resume" in m and "shutdown" in m for m in messages), messages
    assert not any("lease expired" in m for m in messages)
    (saved,) = checkpoint_steps(events)
    fault_stack.start_worker("after-stop")
    done = project.wait(job_id, timeout=300)
    events = project.events(job_id)
    messages = [e["message"] for e in events]
    assert done["status"] == "succeeded", (done["error"], messages[-15:])
    assert f"Resuming from checkpoint-{saved}" in messages
    assert len(claims(events)) == 2 and len(training_starts(events)) == 2
    # Trained once per step: the steps logged after the resume start right after the stop.
    resumed_at = messages.index(f"Resuming from checkpoint-{saved}")
    after = [e["data"]["step"] for e in events[resumed_at:] if e["type"] == "metrics"
             and "train_samples_per_second" not in e["data"]]
    assert after[0] == saved + 1, after
    print(f"\nworker stopped in {stop_seconds:.1f} s, job requeued at step {saved}")
