"""The service end to end: upload, LoRA SFT job, events, download, and the adapter learned."""

import json

import httpx
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from testbed.learning import answer_token_accuracy, bundled_instructions, greedy_answers

LORA_SFT = {
    "model": "tiny-llama",
    "method": {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 30, "batch_size": 8, "learning_rate": 5e-3}}},
    "tuning": {"type": "lora", "r": 16, "alpha": 32},
    "suffix": "e2e",
}


@pytest.fixture(scope="module")
def trained(project, tmp_path_factory):  # type: ignore[no-untyped-def]
    rows = bundled_instructions()
    upload = project.upload(rows, "instructions.jsonl")
    job = project.create_job({**LORA_SFT, "training_file": upload["id"]})
    assert job["status"] == "queued"
    seen = {job["status"]}
    # Poll as a user would, recording the states the job passes through.
    import time
    deadline = time.monotonic() + 300
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, project.event_messages(job["id"])[-20:]
        time.sleep(0.3)
        job = project.job(job["id"])
        seen.add(job["status"])
    folder = project.download_artifacts(job["id"], tmp_path_factory.mktemp("artifacts"))
    return {"job": job, "seen": seen, "rows": rows, "upload": upload, "folder": folder}


def test_job_goes_queued_running_succeeded(trained) -> None:  # type: ignore[no-untyped-def]
    job = trained["job"]
    assert job["status"] == "succeeded", job["error"]
    assert "running" in trained["seen"]
    assert job["fine_tuned_model"].startswith("ft:tiny-llama:") and job["fine_tuned_model"] \
        .endswith(job["id"])
    assert job["result_files"] and job["trained_tokens"] > 0
    assert job["resolved_hyperparameters"]["n_epochs"] == 30
    assert job["progress"]["step"] == job["progress"]["total_steps"] == 60


def test_events_hold_falling_losses(project, trained) -> None:  # type: ignore[no-untyped-def]
    events = project.events(trained["job"]["id"])
    metrics = [e["data"] for e in events if e["type"] == "metrics"]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert len(losses) >= 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    for key in ("step", "epoch", "learning_rate", "tokens_per_second"):
        assert any(key in m for m in metrics), key
    assert events[-1]["data"]["status"] == "succeeded"


def test_checkpoints_listed_with_step_and_loss(project, trained) -> None:  # type: ignore[no-untyped-def]
    page = project.http.get(f"/v1/fine_tuning/jobs/{trained['job']['id']}/checkpoints").json()
    steps = [c["step_number"] for c in page["data"]]
    assert steps and steps == sorted(steps, reverse=True) and steps[0] == 60
    assert all("train_loss" in c["metrics"] for c in page["data"])


def test_adapter_loads_and_moves_answers_to_training_data(stack, trained) -> None:  # type: ignore[no-untyped-def]
    folder = trained["folder"] / "adapter"
    assert (folder / "adapter_config.json").is_file()
    assert (folder / "adapter_model.safetensors").is_file()
    assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "LORA"
    tokenizer = AutoTokenizer.from_pretrained(stack.tiny_model)
    base = AutoModelForCausalLM.from_pretrained(stack.tiny_model)
    rows = trained["rows"]
    base_accuracy = answer_token_accuracy(base, tokenizer, rows)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(stack.tiny_model),
                                      folder)
    tuned_accuracy = answer_token_accuracy(tuned, tokenizer, rows)
    assert tuned_accuracy > base_accuracy + 0.5, (base_accuracy, tuned_accuracy)
    answers = greedy_answers(tuned, tokenizer, rows)
    expected = [r["messages"][-1]["content"] for r in rows]
    exact = sum(a == e for a, e in zip(answers, expected, strict=True)) / len(rows)
    base_exact = sum(a == e for a, e in zip(greedy_answers(base, tokenizer, rows), expected,
                                              strict=True)) / len(rows)
    assert exact >= 0.75 > base_exact, (answers, expected)
    # The adapter, not chance, makes the difference: logits differ from the base's.
    ids = torch.tensor([[1, 2, 3, 4]])
    assert not torch.allclose(base(input_ids=ids).logits, tuned(input_ids=ids).logits)


def test_artifacts_have_size_and_sha256(project, trained) -> None:  # type: ignore[no-untyped-def]
    listing = project.http.get(f"/v1/fine_tuning/jobs/{trained['job']['id']}/artifacts").json()
    names = {a["name"] for a in listing["data"]}
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= names
    assert all(len(a["sha256"]) == 64 and a["bytes"] > 0 for a in listing["data"])
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)


def test_events_stream_as_sse_until_the_job_ends(stack, project, trained) -> None:  # type: ignore[no-untyped-def]
    job_id = trained["job"]["id"]
    with httpx.stream("GET", f"{stack.url}/v1/fine_tuning/jobs/{job_id}/events",
                      params={"stream": "true"}, headers=project.http.headers,
                      timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    events = [json.loads(d) for d in data[:-1]]
    assert events[0]["message"].startswith("Created fine-tuning job")
    assert events[-1]["data"]["status"] == "succeeded"
    assert len(events) == len(project.events(job_id))
