"""LoRA on a GPTQ checkpoint through the API (needs gptqmodel and optimum on the server and
here, which `make install` puts in the venv; a server without them refuses creation, which
tests/e2e/test_quantized.py checks).

The tests quantise the tiny model with gptqmodel on CPU (4-bit, groups of 32), the job
trains LoRA on it as published, and the adapter reloads onto the quantised base and moves
its answers toward the training data; its `merged` export is the base dequantised plus the
adapter, a plain model that loads without gptqmodel.
"""

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch

try:
    import gptqmodel
except ImportError as missing:  # a failure, never a skip: the Makefile installs it
    raise ImportError("gptqmodel is not installed: `make install` installs it (with --no-deps, "
                      "see GPTQ_PACKAGES in the Makefile)") from missing

from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from testbed.jobs import Project
from testbed.learning import (
    answer_log_likelihood,
    bundled_instructions,
    prompt_answer_ids,
)
from tests.e2e.test_readme_examples import readme_job_examples
from worker.training.tiny_model import corpus_text

MODEL = "tiny-gptq"


@pytest.fixture(scope="module")
def gptq_folder(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model quantised by gptqmodel on CPU, in the server's models folder."""
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    folder = stack.home / "models" / MODEL
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("gptq-log"))  # gptqmodel writes a log to the cwd
    try:
        quantizer = gptqmodel.GPTQModel.load(
            str(stack.tiny_model),
            gptqmodel.QuantizeConfig(bits=4, group_size=32, desc_act=False), device="cpu")
        quantizer.quantize([line for line in corpus_text().splitlines() if line.strip()][:32],
                           batch_size=4)
        quantizer.save(str(folder))
    finally:
        os.chdir(here)
    assert json.loads((folder / "config.json").read_text())[
        "quantization_config"]["quant_method"] == "gptq"
    return folder


@pytest.fixture(scope="module")
def job(project: Project, gptq_folder: Path) -> dict[str, Any]:
    """README's GPTQ example, with hyperparameters that make it learn the bundled rows."""
    [example] = readme_job_examples(gptq=True)
    assert example["model"] == MODEL and example["quantization"] == {"method": "gptq"}
    upload = project.upload(bundled_instructions(), "instructions.jsonl")
    job = project.create_job({
        **example, "training_file": upload["id"], "seed": 0,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 15, "batch_size": 8, "learning_rate": 1.5e-2}}}})
    done = project.wait(job["id"], timeout=900)
    assert done["status"] == "succeeded", (
        done["error"], project.event_messages(job["id"])[-15:])
    return done


@pytest.fixture(scope="module")
def adapter(project: Project, job: dict[str, Any], stack: Any) -> Path:
    return project.download_artifacts(job["id"], stack.root / "gptq-lora", "adapter/") / "adapter"


def test_lora_trains_on_a_gptq_checkpoint(project: Project, job: dict[str, Any],
                                          gptq_folder: Path, adapter: Path) -> None:
    losses = project.losses(job["id"])
    assert sum(losses[-4:]) < 0.6 * sum(losses[:4]), losses
    layers = [e["data"]["quantization"]["layers"] for e in project.events(job["id"])
              if "quantization" in (e["data"] or {})]
    assert layers and sum(layers[0].values()) == 14  # 2 layers x q, k, v, o, gate, up, down

    tokenizer = AutoTokenizer.from_pretrained(gptq_folder)
    rows = bundled_instructions()
    base = AutoModelForCausalLM.from_pretrained(gptq_folder, device_map={"": "cpu"}).eval()
    before = answer_log_likelihood(base, tokenizer, rows)
    tuned = PeftModel.from_pretrained(base, adapter).eval()
    after = answer_log_likelihood(tuned, tokenizer, rows)
    print(f"\nLoRA on GPTQ: answer log-likelihood {before:.2f} -> {after:.2f}, losses "
          f"{losses[0]:.2f} -> {losses[-1]:.2f}")
    assert after >= before + 3.0


def _merged_export(project: Project, job_id: str, target: Path) -> Path:
    response = project.http.post(f"/v1/fine_tuning/jobs/{job_id}/exports",
                                 json={"format": "merged"})
    assert response.status_code == 200, response.text
    export_id = response.json()["id"]
    deadline = time.monotonic() + 300
    while (export := project.http.get(f"/v1/exports/{export_id}").json())["status"] not in (
            "succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, export
        time.sleep(0.5)
    assert export["status"] == "succeeded", export["error"]
    for entry in project.http.get(f"/v1/exports/{export_id}/artifacts").json()["data"]:
        body = project.http.get(entry["url"]).content
        assert hashlib.sha256(body).hexdigest() == entry["sha256"], entry["name"]
        (target / entry["name"]).parent.mkdir(parents=True, exist_ok=True)
        (target / entry["name"]).write_bytes(body)
    return target / "model"


def _logits(model: Any, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


def test_merged_export_is_the_dequantised_base_plus_the_adapter(
        project: Project, job: dict[str, Any], gptq_folder: Path, adapter: Path,
        tmp_path: Path) -> None:
    merged = _merged_export(project, job["id"], tmp_path)
    config = json.loads((merged / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16", config
    assert not [p.name for p in merged.iterdir() if p.name.endswith((".bin", ".pt", ".pkl"))]
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    assert not [n for n, m in model.named_modules() if "gptq" in type(m).__module__]
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear

    # The reference: the GPTQ base as the job trained on it, with the adapter, in fp32.
    tokenizer = AutoTokenizer.from_pretrained(merged)
    prompt, answer = prompt_answer_ids(tokenizer, bundled_instructions()[0])
    base = AutoModelForCausalLM.from_pretrained(gptq_folder, dtype=torch.float32,
                                                device_map={"": "cpu"}).eval()
    base_logits = _logits(base, prompt + answer)
    expected = _logits(PeftModel.from_pretrained(base, adapter).eval(), prompt + answer)
    got = _logits(model, prompt + answer)
    error, moved = (got - expected).abs().max(), (expected - base_logits).abs().max()
    print(f"\nmerged GPTQ export: max logit error {error:.4f}, the adapter moves logits by "
          f"{moved:.2f} (scale {expected.abs().max():.2f})")
    # The export keeps the checkpoint's dtype, bf16: 8 significant bits, so every merged
    # weight is rounded by up to 2**-9 of itself (GPTQ's fp16 dequantised values and the
    # adapter's update alike). Through two layers and the head that moves logits by about
    # 1 % of their scale (measured: 0.06 on logits of 7.2); 4 % bounds it, while the
    # adapter's own effect is several times that, so a merge that dropped or doubled the
    # adapter, or a wrong dequantisation (a 4-bit step is 1/16 of a group's range), fails.
    assert error <= 0.04 * expected.abs().max(), (error, expected.abs().max())
    assert moved >= 10 * error, (moved, error)
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.9
