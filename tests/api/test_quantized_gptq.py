"""LoRA on a GPTQ checkpoint through the API (needs gptqmodel and optimum on the server and
here, which `make install` puts in the venv; a server without them refuses creation, which
tests/api/test_quantized.py checks).

The test quantises the tiny model with gptqmodel on CPU (4-bit, groups of 32), the job
trains LoRA on it as published, and the adapter reloads onto the quantised base and moves
its answers toward the training data.
"""

import json
import os

try:
    import gptqmodel
except ImportError as missing:  # a failure, never a skip: the Makefile installs it
    raise ImportError("gptqmodel is not installed: `make install` installs it (with --no-deps, "
                      "see GPTQ_PACKAGES in the Makefile)") from missing

from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.utils.learning import answer_log_likelihood, bundled_instructions
from worker.tiny_model import corpus_text


def test_lora_trains_on_a_gptq_checkpoint(stack, project, tmp_path,  # type: ignore[no-untyped-def]
                                          monkeypatch) -> None:
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    monkeypatch.chdir(tmp_path)  # gptqmodel writes its quantisation log to the working folder
    folder = stack.home / "models" / "tiny-gptq"
    quantizer = gptqmodel.GPTQModel.load(
        str(stack.tiny_model), gptqmodel.QuantizeConfig(bits=4, group_size=32, desc_act=False),
        device="cpu")
    quantizer.quantize([line for line in corpus_text().splitlines() if line.strip()][:32],
                       batch_size=4)
    quantizer.save(str(folder))
    assert json.loads((folder / "config.json").read_text())[
        "quantization_config"]["quant_method"] == "gptq"

    upload = project.upload(bundled_instructions(), "instructions.jsonl")
    job = project.create_job({
        "model": "tiny-gptq", "training_file": upload["id"], "seed": 0,
        "quantization": {"method": "gptq"}, "tuning": {"type": "lora", "r": 16, "alpha": 32},
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 15, "batch_size": 8, "learning_rate": 1.5e-2}}}})
    done = project.wait(job["id"], timeout=900)
    events = project.events(job["id"])
    assert done["status"] == "succeeded", (done["error"], [e["message"] for e in events][-15:])
    losses = project.losses(job["id"])
    assert sum(losses[-4:]) < 0.6 * sum(losses[:4]), losses
    layers = [e["data"]["quantization"]["layers"] for e in events
              if "quantization" in (e["data"] or {})]
    assert layers and sum(layers[0].values()) == 14  # 2 layers x q, k, v, o, gate, up, down

    adapter = project.download_artifacts(job["id"], stack.root / "gptq-lora") / "adapter"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = bundled_instructions()
    base = AutoModelForCausalLM.from_pretrained(folder, device_map={"": "cpu"}).eval()
    before = answer_log_likelihood(base, tokenizer, rows)
    tuned = PeftModel.from_pretrained(base, adapter).eval()
    after = answer_log_likelihood(tuned, tokenizer, rows)
    print(f"\nLoRA on GPTQ: answer log-likelihood {before:.2f} -> {after:.2f}, losses "
          f"{losses[0]:.2f} -> {losses[-1]:.2f}")
    assert after >= before + 3.0
