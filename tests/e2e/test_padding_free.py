"""Padding-free batches train the same model as padded ones: the same job with
`method.supervised.padding_free` true and false gives the same first loss, per-step losses
within rounding drift, the same trained tokens, and adapters whose logits agree."""

from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from testbed.jobs import Project, train_and_wait, wait_succeeded
from testbed.learning import bundled_instructions, prompt_answer_ids


def spec(file_id: str, padding_free: bool | str, **hyperparameters: Any) -> dict[str, Any]:
    return {
        "model": "tiny-llama", "training_file": file_id, "seed": 7,
        "method": {"type": "supervised", "supervised": {
            "padding_free": padding_free,
            "hyperparameters": {"max_steps": 12, "batch_size": 8, "learning_rate": 5e-3,
                                "logging_steps": 1, **hyperparameters}}},
        "tuning": {"type": "lora", "r": 8, "alpha": 16},
    }


def batches_event(project: Project, job_id: str) -> dict[str, Any]:
    events = [e for e in project.events(job_id) if "batches" in (e["data"] or {})]
    assert len(events) == 1, project.event_messages(job_id)
    return events[0]["data"]["batches"]


@pytest.fixture(scope="module")
def pair(project: Project, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    upload = project.upload(bundled_instructions(), "instructions.jsonl")
    # Both jobs are queued before either runs: the worker takes them in turn.
    jobs = {flag: project.create_job(spec(upload["id"], flag)) for flag in (True, False)}
    done = {flag: wait_succeeded(project, job["id"]) for flag, job in jobs.items()}
    folders = {flag: project.download_artifacts(
        job["id"], tmp_path_factory.mktemp(f"padding_free_{flag}")) for flag, job in done.items()}
    return {"jobs": done, "folders": folders}


def test_each_job_says_how_it_batched(project: Project, pair: dict[str, Any]) -> None:
    free = batches_event(project, pair["jobs"][True]["id"])
    padded = batches_event(project, pair["jobs"][False]["id"])
    assert free["padding_free"] is True and "true in the job" in free["reason"]
    assert padded["padding_free"] is False and "false in the job" in padded["reason"]


def test_same_losses_and_tokens(project: Project, pair: dict[str, Any]) -> None:
    free = project.losses(pair["jobs"][True]["id"])
    padded = project.losses(pair["jobs"][False]["id"])
    assert len(free) == len(padded) == 12
    # Step 1 is the same computation to float rounding: a row that saw another row's tokens
    # (a wrong mask) would change it at once.
    assert abs(free[0] - padded[0]) < 1e-4, (free[0], padded[0])
    # Later steps drift by rounding alone (sums in another order, amplified by lr 5e-3).
    assert max(abs(a - b) / b for a, b in zip(free, padded, strict=True)) < 0.02, (free, padded)
    assert free[-1] < 0.7 * free[0]  # and it learned
    assert pair["jobs"][True]["trained_tokens"] == pair["jobs"][False]["trained_tokens"] > 0


def test_adapters_agree(stack: Any, pair: dict[str, Any]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(stack.tiny_model)
    pairs = [prompt_answer_ids(tokenizer, row) for row in bundled_instructions()[:4]]
    ids = [prompt + answer for prompt, answer in pairs]
    logits = {}
    base_logits = None
    for flag, folder in pair["folders"].items():
        base = AutoModelForCausalLM.from_pretrained(stack.tiny_model, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, folder / "adapter").eval()
        with torch.no_grad():
            logits[flag] = [model(torch.tensor([row])).logits for row in ids]
            with model.disable_adapter():
                base_logits = [model(torch.tensor([row])).logits for row in ids]
    for free, padded, untuned in zip(logits[True], logits[False], base_logits, strict=True):
        change = (padded - untuned).abs().mean().item()
        assert change > 0.1  # the adapters moved the model ...
        assert (free - padded).abs().mean().item() < 0.1 * change  # ... to the same place


def test_auto_reports_its_estimate_and_warns_of_truncation(project: Project) -> None:
    # The bundled rows are 15-20 tokens long: two of them are over 18.
    upload = project.upload(bundled_instructions(), "instructions.jsonl")
    job = train_and_wait(project, spec(upload["id"], "auto", max_steps=2, max_seq_length=18))
    layout = batches_event(project, job["id"])
    assert isinstance(layout["padding_free"], bool)
    assert 0 < layout["estimated_flops_ratio"] < 2
    warnings = [e for e in project.events(job["id"]) if "rows_truncated" in (e["data"] or {})]
    assert warnings and warnings[0]["level"] == "warn"
    assert warnings[0]["data"]["rows_truncated"] == 2
    assert "max_seq_length=18" in warnings[0]["message"]
