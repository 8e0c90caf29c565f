"""A cancelled job keeps its last checkpoint as an artifact folder that loads like a result."""

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from testbed.jobs import Project
from testbed.learning import bundled_instructions


def test_cancelled_job_keeps_its_last_checkpoint(project: Project, stack: Any,
                                                 tmp_path: Path) -> None:
    file_id = project.upload(bundled_instructions(), "cancelled.jsonl")["id"]
    job = project.create_job({
        "model": "tiny-llama", "training_file": file_id,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 50, "batch_size": 1, "learning_rate": 5e-3, "save_steps": 3,
            "logging_steps": 1}}},
        "tuning": {"type": "lora", "r": 8, "alpha": 16}})
    project.wait_for_step(job["id"], 10)  # three checkpoints listed by now
    response = project.http.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    done = project.wait(job["id"], timeout=60)
    assert done["status"] == "cancelled", done

    newest = project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"][0]
    assert newest["step_number"] >= 9
    listed = {f["name"]: f["sha256"]
              for f in project.http.get(newest["files_url"]).json()["data"]}
    artifacts = project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts").json()["data"]
    kept = {a["name"].removeprefix("checkpoint/"): a["sha256"] for a in artifacts
            if a["name"].startswith("checkpoint/")}
    # The kept artifact is the newest listed checkpoint, file for file.
    assert kept == listed and "adapter_model.safetensors" in kept, (kept, listed)
    events = project.event_messages(job["id"])
    assert f"Kept the checkpoint of step {newest['step_number']} as artifacts/checkpoint" \
        in events, events[-5:]

    archive = project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts/checkpoint.tar.gz")
    assert archive.status_code == 200, archive.text
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        unpacked = {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest()  # type: ignore[union-attr]
                    for m in tar.getmembers() if m.isfile()}
    assert unpacked == {f"checkpoint/{n}": s for n, s in listed.items()}

    folder = project.download_artifacts(job["id"], tmp_path, "checkpoint/") / "checkpoint"
    assert json.loads((folder / "adapter_config.json").read_text())[
        "base_model_name_or_path"] == "tiny-llama"
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(stack.tiny_model)
        base_logits = base(input_ids=ids).logits
        tuned_logits = PeftModel.from_pretrained(base, str(folder))(input_ids=ids).logits
    assert not torch.allclose(base_logits, tuned_logits, atol=1e-3)
