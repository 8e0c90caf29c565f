"""Every `tuning.type` end to end with `method.type = supervised`: a real job over the API on
the tiny model, its events, its downloaded artifact, and what the artifact learned.

All jobs are submitted up front (the one worker runs them in turn) and each test waits for
the job it needs. Per tuning the test checks: the job succeeded and its loss fell; the
artifact downloaded over the API gives the same logits as the same files in the job folder
on disk and as the worker's last checkpoint (the model as it was when training ended); only
the tuning's own parameters trained and the base stayed frozen (full: the weights moved);
and the reloaded artifact raises answer-token accuracy and log-likelihood of the training
answers clearly over the base model.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from peft import PeftModel
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from testbed.learning import (
    answer_log_likelihood,
    answer_token_accuracy,
    bundled_instructions,
    prompt_answer_ids,
)
from testbed.tuning_jobs import CASES, NAMES
from tunesmith.spec.tunings import PROMPT_LEARNING
from worker.tunings.bottleneck import ADAPTER_NAME, load_bottleneck_adapters
from worker.tunings.prompt_learning import ENCODER_STATE


@dataclass
class Finished:
    job: dict[str, Any]
    events: list[dict[str, Any]]
    downloaded: Path  # the artifact folder as downloaded over the API
    on_disk: Path  # the same folder in the job's folder on the server
    last_checkpoint: Path  # the worker's checkpoint at the final step


@pytest.fixture(scope="module")
def submitted(tuning_jobs) -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    return tuning_jobs


@pytest.fixture(scope="module")
def finished(stack, project, submitted, tmp_path_factory) -> Callable[[str], Finished]:  # type: ignore[no-untyped-def]
    done: dict[str, Finished] = {}

    def get(name: str) -> Finished:
        if name not in done:
            job_id = submitted[name]["id"]
            # Jobs run one after another: the last one waits for all the others.
            job = project.wait(job_id, timeout=900)
            assert job["status"] == "succeeded", \
                (job["error"], project.event_messages(job_id)[-15:])
            target = project.download_artifacts(job_id, tmp_path_factory.mktemp(name))
            folder = "model" if name == "full" else "adapter"
            job_dir = stack.home / "jobs" / job_id
            steps = job["progress"]["total_steps"]
            done[name] = Finished(job, project.events(job_id), target / folder,
                                  job_dir / "artifacts" / folder,
                                  job_dir / "checkpoints" / f"checkpoint-{steps}")
        return done[name]

    return get


@pytest.fixture(scope="module")
def tokenizer(stack):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(stack.tiny_model)


@pytest.fixture(scope="module")
def base_scores(stack, tokenizer) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    base = AutoModelForCausalLM.from_pretrained(stack.tiny_model).eval()
    rows = bundled_instructions()
    return (answer_token_accuracy(base, tokenizer, rows),
            answer_log_likelihood(base, tokenizer, rows))


class InputAligned:
    """Logits for the input positions only.

    peft's prompt and p_tuning models put num_virtual_tokens positions in front of the
    logits (prefix models do not); testbed/learning reads logits by input position.
    """

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, input_ids: torch.Tensor, **kwargs: Any) -> SimpleNamespace:
        logits = self.model(input_ids=input_ids, **kwargs).logits
        return SimpleNamespace(logits=logits[:, -input_ids.shape[1]:])


def load_tuned(name: str, folder: Path, base_path: Path) -> InputAligned:
    """The artifact as a user loads it: peft for peft types, our loader for adapters."""
    if name == "full":
        model = AutoModelForCausalLM.from_pretrained(folder)
    elif name == "adapter":
        model = load_bottleneck_adapters(base_path, folder)
    else:
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), folder)
    return InputAligned(model.eval())


@torch.no_grad()
def logits_on_rows(model: Any, tokenizer: Any) -> list[torch.Tensor]:
    logits = []
    for row in bundled_instructions()[:4]:
        prompt, answer = prompt_answer_ids(tokenizer, row)
        logits.append(model(input_ids=torch.tensor([prompt + answer])).logits)
    return logits


def tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118


def metrics_losses(events: list[dict[str, Any]]) -> list[float]:
    """Per-step losses. The trainer's closing summary (its mean train_loss, logged as loss)
    is not a step: it is the one metrics event without a learning rate."""
    return [e["data"]["loss"] for e in events if e["type"] == "metrics"
            and "loss" in e["data"] and "learning_rate" in e["data"]]


@pytest.mark.parametrize("name", NAMES)
def test_job_succeeds_and_loss_falls(project, finished, name: str) -> None:  # type: ignore[no-untyped-def]
    result = finished(name)
    job, case = result.job, CASES[name]
    assert job["resolved_hyperparameters"]["learning_rate"] == case.learning_rate
    steps = 2 * case.n_epochs
    assert job["progress"]["step"] == job["progress"]["total_steps"] == steps
    losses = metrics_losses(result.events)
    assert len(losses) == steps
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < case.loss_ratio * first, (first, last)
    runtime = max(e["data"].get("train_runtime", 0) for e in result.events
                  if e["type"] == "metrics")
    # Reported with `pytest -s`: the figures a tuning's hyperparameters were chosen on.
    print(f"\n{name}: train_runtime {runtime:.1f}s, losses {first:.2f} -> "
          f"{last:.2f} (final {losses[-1]:.2f}), job {job['finished_at'] - job['created_at']}s")


@pytest.mark.parametrize("name", NAMES)
def test_artifact_is_what_the_worker_trained(stack, tokenizer, finished, name: str) -> None:  # type: ignore[no-untyped-def]
    result = finished(name)
    downloaded = logits_on_rows(load_tuned(name, result.downloaded, stack.tiny_model), tokenizer)
    on_disk = logits_on_rows(load_tuned(name, result.on_disk, stack.tiny_model), tokenizer)
    assert all(torch.equal(a, b) for a, b in zip(downloaded, on_disk, strict=True))
    assert (result.downloaded / "tokenizer_config.json").is_file()
    checkpoint = result.last_checkpoint
    assert (checkpoint / "trainer_state.json").is_file(), sorted(checkpoint.parent.iterdir())
    if name == "adapter":
        # The trainer checkpoints the whole model: its adapter tensors are the artifact's.
        saved = tensors(checkpoint / "model.safetensors")
        artifact = tensors(result.downloaded / "adapter_model.safetensors")
        assert set(artifact) == {k for k in saved if f".{ADAPTER_NAME}." in k}
        assert all(torch.equal(artifact[k], saved[k]) for k in artifact)
        return
    # peft checkpoints hold the adapter as the artifact does; full ones, the whole model.
    trained = logits_on_rows(load_tuned(name, checkpoint, stack.tiny_model), tokenizer)
    assert all(torch.allclose(a, b, atol=1e-5, rtol=0)
               for a, b in zip(downloaded, trained, strict=True))


@pytest.mark.parametrize("name", NAMES)
def test_only_the_tunings_parameters_trained(stack, finished, name: str) -> None:  # type: ignore[no-untyped-def]
    result = finished(name)
    counts = next(e["data"] for e in result.events if "trainable_parameters" in (e["data"] or {}))
    base = tensors(stack.tiny_model / "model.safetensors")
    base_numel = sum(t.numel() for t in base.values())
    folder = result.downloaded
    if name == "full":
        assert counts["trainable_parameters"] == counts["total_parameters"] == base_numel
        trained = tensors(folder / "model.safetensors")
        assert set(trained) == set(base)
        assert not any(torch.equal(trained[k], base[k]) for k in base if "layers" in k)
        return
    saved = tensors(folder / "adapter_model.safetensors")
    assert not set(saved) & set(base), "the artifact holds base weights"
    if name in PROMPT_LEARNING:
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["peft_type"] == {"prefix": "PREFIX_TUNING", "p_tuning_v2": "PREFIX_TUNING",
                                       "p_tuning": "P_TUNING", "prompt": "PROMPT_TUNING"}[name]
        assert set(saved) == {"prompt_embeddings"}
        # Reparameterised prompts: peft saves the encoder's output; we keep the encoder too.
        if name in ("prefix", "p_tuning"):
            saved = tensors(folder / ENCODER_STATE)
    trained_numel = sum(t.numel() for t in saved.values())
    assert counts["trainable_parameters"] == trained_numel
    if name == "qlora":
        # 4-bit weights count half their elements: the base's total is not comparable.
        return
    assert counts["total_parameters"] - counts["trainable_parameters"] == base_numel
    if name == "adapter":
        # The worker's own model at the end: every base tensor exactly as it was loaded.
        checkpoint = tensors(result.last_checkpoint / "model.safetensors")
        assert all(torch.equal(checkpoint[k], base[k]) for k in base)


def test_qlora_trained_on_a_4bit_base(stack, finished) -> None:  # type: ignore[no-untyped-def]
    result = finished("qlora")
    quantised = [e["data"]["quantization"] for e in result.events
                 if "quantization" in (e["data"] or {})]
    assert quantised, [e["message"] for e in result.events]
    base = AutoModelForCausalLM.from_pretrained(stack.tiny_model)
    linear = [n for n, m in base.named_modules()
              if isinstance(m, torch.nn.Linear) and m is not base.get_output_embeddings()]
    assert quantised[0] == {"bits": 4, "quant_type": "nf4", "double_quant": True,
                            "layers": {"Linear4bit": len(linear)}}
    # LoRA sat on every quantised layer ("all-linear"); the other tests load the adapter
    # onto the full-precision base.
    config = json.loads((result.downloaded / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 16
    saved = tensors(result.downloaded / "adapter_model.safetensors")
    adapted = {k.removeprefix("base_model.model.").split(".lora_A")[0]
               for k in saved if ".lora_A" in k}
    assert adapted == set(linear)


@pytest.mark.parametrize("name", NAMES)
def test_artifact_moves_the_model_to_the_training_answers(  # type: ignore[no-untyped-def]
        stack, tokenizer, base_scores, finished, name: str) -> None:
    result, case = finished(name), CASES[name]
    tuned = load_tuned(name, result.downloaded, stack.tiny_model)
    rows = bundled_instructions()
    started = time.monotonic()
    accuracy = answer_token_accuracy(tuned, tokenizer, rows)
    log_likelihood = answer_log_likelihood(tuned, tokenizer, rows)
    base_accuracy, base_log_likelihood = base_scores
    print(f"\n{name}: answer accuracy {base_accuracy:.3f} -> {accuracy:.3f}, log-likelihood "
          f"{base_log_likelihood:.2f} -> {log_likelihood:.2f} ({time.monotonic() - started:.1f}s)")
    assert accuracy >= base_accuracy + case.accuracy_gain, (base_accuracy, accuracy)
    assert log_likelihood >= base_log_likelihood + case.log_likelihood_gain, \
        (base_log_likelihood, log_likelihood)
