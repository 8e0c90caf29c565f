"""Jobs on a worker without the warm start (`TUNESMITH_WARM_START=false`, what GPU nodes
do): each training process is a fresh interpreter that imports everything and ends with
`os._exit` once its work is stored. The job succeeds, its artifact is whole, and the worker
notices the end without waiting for the interpreter's teardown."""

import time
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from testbed.learning import answer_token_accuracy, bundled_instructions
from tests.faults.stack import FaultStack

STACK_ENV = {"TUNESMITH_WARM_START": "false"}

SPEC: dict[str, Any] = {
    "model": "tiny-llama",
    "method": {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 20, "batch_size": 8, "learning_rate": 5e-3}}},
    "tuning": {"type": "lora", "r": 8, "alpha": 16},
}


def test_cold_process_job_succeeds_and_its_adapter_learned(fault_stack: FaultStack,
                                                           tmp_path: Path) -> None:
    project = fault_stack.project("cold")
    rows = bundled_instructions()
    job = project.create_job({**SPEC, "training_file": project.upload(rows)["id"]})
    # Poll every 50 ms: when the last step shows, and when the job is done.
    last_step_seen = done_seen = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = project.job(job["id"])
        progress = state.get("progress") or {}
        if last_step_seen is None and progress.get("step") and \
                progress.get("step") == progress.get("total_steps"):
            last_step_seen = time.monotonic()
        if state["status"] in ("succeeded", "failed", "cancelled"):
            done_seen = time.monotonic()
            break
        time.sleep(0.05)
    assert state["status"] == "succeeded", (state["error"], project.event_messages(job["id"]))
    messages = project.event_messages(job["id"])
    assert any(m.startswith("Training process started") for m in messages)
    assert last_step_seen is not None and done_seen is not None
    print(f"\ncold process: last step -> succeeded {done_seen - last_step_seen:.2f} s")

    folder = project.download_artifacts(job["id"], tmp_path)
    tiny_model = fault_stack.tiny_model
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    before = answer_token_accuracy(base, tokenizer, rows)
    tuned = PeftModel.from_pretrained(base, folder / "adapter").eval()
    assert answer_token_accuracy(tuned, tokenizer, rows) > before + 0.5
