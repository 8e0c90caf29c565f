"""`tuning.type: ia3` end to end, the example of adding a tuning (one spec class in
tunesmith/spec/tunings.py, one worker module worker/tunings/ia3.py, this test): a supervised
job over the API on the tiny model, its events, its artifact downloaded and loaded with peft
as a user would, and what it learned."""

import json
from pathlib import Path
from typing import Any

import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from testbed.learning import answer_log_likelihood, bundled_instructions


@pytest.fixture(scope="module")
def finished(stack, project, tmp_path_factory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    upload = project.upload(bundled_instructions(), "instructions.jsonl")
    job = project.create_job({
        "model": "tiny-llama", "training_file": upload["id"], "seed": 0, "suffix": "ia3",
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 20, "batch_size": 8, "learning_rate": 5e-2}}},
        "tuning": {"type": "ia3"}})
    job = project.wait(job["id"], timeout=900)
    assert job["status"] == "succeeded", (job["error"], project.event_messages(job["id"])[-15:])
    target = project.download_artifacts(job["id"], tmp_path_factory.mktemp("ia3"))
    return {"job": job, "events": project.events(job["id"]), "adapter": target / "adapter"}


def test_ia3_job_trains_only_its_vectors_and_learns(stack, finished) -> None:  # type: ignore[no-untyped-def]
    job, events, adapter = finished["job"], finished["events"], Path(finished["adapter"])
    assert job["tuning"] == {"type": "ia3"}
    losses = [e["data"]["loss"] for e in events if e["type"] == "metrics"
              and "loss" in e["data"] and "learning_rate" in e["data"]]
    assert sum(losses[-4:]) < 0.8 * sum(losses[:4]), losses

    # The artifact is a PEFT (IA)^3 folder that peft loads onto the base as it is.
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "IA3"
    base = AutoModelForCausalLM.from_pretrained(stack.tiny_model)
    tuned = PeftModel.from_pretrained(base, adapter).eval()
    vectors = {name: p for name, p in tuned.named_parameters() if "ia3_l" in name}
    assert vectors and all(not (p == 1).all() for p in vectors.values())  # all moved from 1
    # Only the vectors trained: the event's count is theirs.
    counts = next(e["data"] for e in events if "trainable_parameters" in (e["data"] or {}))
    assert counts["trainable_parameters"] == sum(p.numel() for p in vectors.values())

    tokenizer = AutoTokenizer.from_pretrained(stack.tiny_model)
    rows = bundled_instructions()
    before = answer_log_likelihood(AutoModelForCausalLM.from_pretrained(stack.tiny_model).eval(),
                                   tokenizer, rows)
    after = answer_log_likelihood(tuned, tokenizer, rows)
    print(f"ia3: answer log-likelihood {before:.3f} -> {after:.3f}")
    assert after > before + 1.0
