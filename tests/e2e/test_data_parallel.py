"""`resources.processes: 2` trains one job data parallel (torchrun; gloo on CPU), and its
adapter is as good as a one-process run's on the same spec."""

import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from testbed.jobs import train_and_wait
from testbed.learning import answer_token_accuracy, bundled_instructions

SPEC = {
    "model": "tiny-llama",
    "method": {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 30, "batch_size": 8, "learning_rate": 5e-3}}},
    "tuning": {"type": "lora", "r": 16, "alpha": 32},
    "seed": 3,
}


@pytest.fixture(scope="module")
def runs(stack, project, tmp_path_factory):  # type: ignore[no-untyped-def]
    upload = project.upload(bundled_instructions(), "instructions.jsonl")
    results = {}
    for name, resources in (("one", {"gpus": 0}), ("two", {"gpus": 0, "processes": 2})):
        job = train_and_wait(project, {**SPEC, "training_file": upload["id"],
                                       "resources": resources})
        folder = project.download_artifacts(job["id"], tmp_path_factory.mktemp(name))
        results[name] = {"job": job, "folder": folder / "adapter",
                         "events": project.events(job["id"])}
    return results


def test_two_process_job_trains_and_reports_once(runs) -> None:  # type: ignore[no-untyped-def]
    two = runs["two"]
    assert two["job"]["status"] == "succeeded"
    messages = [e["message"] for e in two["events"]]
    # One report per job, not one per rank.
    assert sum(m.startswith("Training process started") for m in messages) == 1
    steps = [e["data"]["step"] for e in two["events"] if e["type"] == "metrics"
             and "loss" in e["data"]]
    assert steps == sorted(set(steps))
    # Each process takes half the batch: the job runs as many steps as the one-process run.
    assert two["job"]["progress"]["total_steps"] == runs["one"]["job"]["progress"]["total_steps"]


def test_two_process_adapter_equals_one_process_in_quality(stack, runs) -> None:  # type: ignore[no-untyped-def]
    tokenizer = AutoTokenizer.from_pretrained(stack.tiny_model)
    rows = bundled_instructions()
    base = answer_token_accuracy(AutoModelForCausalLM.from_pretrained(stack.tiny_model),
                                 tokenizer, rows)
    accuracy = {}
    for name in ("one", "two"):
        model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(stack.tiny_model), runs[name]["folder"])
        accuracy[name] = answer_token_accuracy(model, tokenizer, rows)
    assert accuracy["two"] > base + 0.5, (base, accuracy)
    assert abs(accuracy["two"] - accuracy["one"]) <= 0.1, accuracy
