"""Tunings on a quantised base over the API: bottleneck adapters on NF4, the refusals a
library makes necessary, GPTQ's availability, the dry run (nothing stored) and /v1/methods."""

import json
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from testbed.learning import answer_log_likelihood, answer_token_accuracy, bundled_instructions
from tunesmith.spec.quantization import gptq_library_installed
from worker.tunings.bottleneck import load_bottleneck_adapters

NF4 = {"method": "bnb_nf4", "double_quant": True}


@pytest.fixture(scope="module")
def training_file(project) -> str:  # type: ignore[no-untyped-def]
    return project.upload(bundled_instructions(), "instructions.jsonl")["id"]


def spec(training_file: str, **fields: Any) -> dict[str, Any]:
    return {"model": "tiny-llama", "training_file": training_file, "seed": 0, **fields}


def refused(project, body: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = project.http.post("/v1/fine_tuning/jobs", json=body)
    assert response.status_code == 400, response.text
    return response.json()["error"]


def nf4_base(path: Any) -> Any:
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.float32)
    return AutoModelForCausalLM.from_pretrained(path, quantization_config=quantization,
                                                device_map={"": "cpu"})


def test_bottleneck_adapters_train_and_reload_on_an_nf4_base(  # type: ignore[no-untyped-def]
        stack, project, training_file) -> None:
    job = project.create_job(spec(
        training_file, suffix="adapter-nf4", quantization=NF4,
        tuning={"type": "adapter", "size": 64, "placement": "houlsby"},
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 20, "batch_size": 8, "learning_rate": 2e-2}}}))
    done = project.wait(job["id"], timeout=900)
    events = project.events(job["id"])
    assert done["status"] == "succeeded", (done["error"], [e["message"] for e in events][-15:])
    losses = project.losses(job["id"])
    assert sum(losses[-4:]) < 0.6 * sum(losses[:4]), losses
    quantised = [e["data"]["quantization"] for e in events
                 if "quantization" in (e["data"] or {})]
    base = AutoModelForCausalLM.from_pretrained(stack.tiny_model)
    linear = [m for m in base.modules()
              if isinstance(m, torch.nn.Linear) and m is not base.get_output_embeddings()]
    assert quantised and quantised[0]["method"] == "bnb_nf4"
    assert quantised[0]["layers"] == {"Linear4bit": len(linear)}
    optimizer = [e for e in events if e["message"].startswith("Optimizer:")]
    assert optimizer and "CPU" in optimizer[0]["message"], [e["message"] for e in events]

    folder = project.download_artifacts(job["id"], stack.root / "adapter-nf4") / "adapter"
    assert json.loads((folder / "bottleneck_config.json").read_text())["placement"] == "houlsby"
    tokenizer = AutoTokenizer.from_pretrained(stack.tiny_model)
    rows = bundled_instructions()
    before = nf4_base(stack.tiny_model).eval()
    tuned = load_bottleneck_adapters(nf4_base(stack.tiny_model), folder)
    accuracy = answer_token_accuracy(tuned, tokenizer, rows)
    base_accuracy = answer_token_accuracy(before, tokenizer, rows)
    log_likelihood = answer_log_likelihood(tuned, tokenizer, rows)
    base_log_likelihood = answer_log_likelihood(before, tokenizer, rows)
    print(f"\nadapter on nf4: accuracy {base_accuracy:.3f} -> {accuracy:.3f}, log-likelihood "
          f"{base_log_likelihood:.2f} -> {log_likelihood:.2f}")
    assert accuracy >= base_accuracy + 0.5
    assert log_likelihood >= base_log_likelihood + 3.0


@pytest.mark.parametrize(("fields", "says"), [
    ({"tuning": {"type": "full"}, "quantization": NF4}, "no gradient"),
    ({"tuning": {"type": "qlora"}, "quantization": {"method": "bnb_int8"}}, "names its own"),
    ({"tuning": {"type": "prefix"}, "quantization": {"method": "gptq"}}, "'lora' only"),
    ({"quantization": {"method": "bnb_nf4", "bits": 3}}, "bits"),
    ({"quantization": {"method": "awq"}}, "method"),
    # The tiny model is no GPTQ checkpoint: gptq must name one.
    ({"quantization": {"method": "gptq"}}, "GPTQ checkpoint"),
])
def test_impossible_combinations_are_refused_naming_quantization(  # type: ignore[no-untyped-def]
        project, training_file, fields: dict[str, Any], says: str) -> None:
    before = project.http.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    error = refused(project, spec(training_file, **fields))
    assert error["param"].startswith("quantization"), error
    assert says in error["message"], error
    after = project.http.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    assert len(after) == len(before)


def test_a_gptq_checkpoint_is_detected(stack, project, training_file) -> None:  # type: ignore[no-untyped-def]
    # A folder whose config.json says GPTQ (the weights are not read before the refusal).
    folder = stack.home / "models" / "tiny-gptq-config"
    folder.mkdir(exist_ok=True)
    config = json.loads((stack.tiny_model / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 32}
    (folder / "config.json").write_text(json.dumps(config))
    body = spec(training_file, model="tiny-gptq-config")
    error = refused(project, body)
    assert error["param"] == "quantization" and 'quant_method "gptq"' in error["message"]
    error = refused(project, {**body, "quantization": NF4})
    assert "already quantised by GPTQ" in error["message"]
    if not gptq_library_installed():
        error = refused(project, {**body, "quantization": {"method": "gptq"}})
        assert "gptqmodel" in error["message"], error


def test_dry_run_answers_without_storing(project, training_file) -> None:  # type: ignore[no-untyped-def]
    before = project.http.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    body = spec(training_file, quantization=NF4, dry_run=True,
                tuning={"type": "lora", "r": 16},
                method={"type": "supervised", "supervised": {"hyperparameters": {
                    "batch_size": 4, "max_seq_length": 128}}})
    response = project.http.post("/v1/fine_tuning/jobs", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "fine_tuning.job.dry_run"
    hp = answer["hyperparameters"]
    assert hp["batch_size"] == 4 and hp["max_seq_length"] == 128
    assert hp["learning_rate"] == 2e-4 and hp["n_epochs"] == 10  # under 20 rows: 10 epochs
    assert answer["quantization"] == "bnb_nf4" and answer["optimizer"] == "paged_adamw_32bit"
    memory = answer["memory"]["per_device"]
    assert 0 < memory["peak_allocated_gib"] < 1 and memory["micro_batch_size"] >= 1
    after = project.http.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    assert len(after) == len(before)
    # Still checked as at creation: a bad dry_run or a bad spec is a 400.
    assert refused(project, {**body, "dry_run": "yes"})["param"] == "dry_run"
    assert refused(project, {**body, "training_file": "file-none"})["param"] == "training_file"


def test_methods_lists_quantizations(project) -> None:  # type: ignore[no-untyped-def]
    methods = project.http.get("/v1/methods").json()
    by_method = {q["method"]: q for q in methods["quantizations"]}
    assert set(by_method) == {"bnb_nf4", "bnb_fp4", "bnb_int8", "gptq"}
    assert "adapter" in by_method["bnb_nf4"]["tunings"]
    assert by_method["gptq"]["tunings"] == ["lora"]
    assert "full" not in by_method["bnb_int8"]["tunings"]
