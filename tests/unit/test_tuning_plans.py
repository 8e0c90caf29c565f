"""Every `tuning.type` has a TuningPlan, and our fixes to peft's prompt learning hold.

Fast (no servers): the tiny model is built in a temporary folder and wrapped by the real
plans. The e2e module tests/e2e/test_tunings_e2e.py trains each tuning through the API.
"""

from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from peft import PeftModel, PrefixTuningConfig, TaskType, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import SFTConfig, SFTTrainer

from testbed.learning import bundled_instructions, prompt_answer_ids
from tunesmith.spec.job import JobSpec
from tunesmith.spec.tunings import NO_ACTIVATION_CHECKPOINTING, PROMPT_LEARNING, TUNING_CLASSES
from worker.data.sft_data import sft_loss_options, to_sft_rows
from worker.registry import TUNINGS, load_all, tuning
from worker.training.context import JobContext
from worker.training.tiny_model import build_tiny_model
from worker.tunings.prompt_learning import ENCODER_STATE

# Small prompt-learning settings for the tiny model (hidden 64, two layers).
PROMPT_TUNINGS: dict[str, dict[str, Any]] = {
    "prefix": {"type": "prefix", "num_virtual_tokens": 6, "encoder_hidden_size": 32},
    "p_tuning_v2": {"type": "p_tuning_v2", "num_virtual_tokens": 6},
    "p_tuning": {"type": "p_tuning", "num_virtual_tokens": 6, "encoder_hidden_size": 32},
    "p_tuning_lstm": {"type": "p_tuning", "num_virtual_tokens": 6, "encoder_type": "LSTM",
                      "encoder_hidden_size": 16},
    "prompt": {"type": "prompt", "num_virtual_tokens": 6},
}


def test_every_spec_tuning_has_a_registered_plan() -> None:
    load_all()
    assert set(TUNING_CLASSES) == set(TUNINGS)
    for cls, plan in TUNINGS.items():
        assert plan.spec is cls
        assert tuning(cls) is plan


def test_defaults_follow_what_each_tuning_trains() -> None:
    load_all()
    rate = {plan.name: plan.default_learning_rate for plan in TUNINGS.values()}
    # Full fine-tuning moves pretrained weights: lowest. Prompt learning steers a frozen model
    # through a few vectors: highest.
    assert rate["full"] == min(rate.values())
    assert rate["lora"] == rate["qlora"] < rate["adapter"]
    assert all(rate[name] > rate["adapter"] for name in PROMPT_LEARNING)
    # The prefix is a KV cache, which gradient checkpointing drops.
    unsupported = {p.name for p in TUNINGS.values() if not p.supports_gradient_checkpointing}
    assert unsupported == {"prefix", "p_tuning_v2"}
    # ... and the API refuses `gradient_checkpointing: true` for exactly those.
    assert unsupported == NO_ACTIVATION_CHECKPOINTING


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


def wrapped(tiny: Path, tuning_spec: dict[str, Any]) -> Any:
    """The tiny model as a job with this tuning gets it from its plan."""
    spec = JobSpec.model_validate({"model": "tiny-llama", "training_file": "file-x",
                                   "tuning": tuning_spec})
    ctx = JobContext(job_id="ftjob-plans", spec=spec, device="cpu", seed=0)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    return tuning(type(spec.tuning)).apply(model, spec.tuning, "causal_lm", ctx)


@torch.no_grad()
def manual_greedy(model: Any, prompt: list[int], steps: int) -> list[int]:
    """Greedy decoding by full forward passes: what `generate` must reproduce."""
    ids = torch.tensor([prompt])
    for _ in range(steps):
        ids = torch.cat([ids, model(input_ids=ids).logits[:, -1:].argmax(-1)], dim=1)
    return ids[0, len(prompt):].tolist()


@torch.no_grad()
def generated(model: Any, prompt: list[int], steps: int) -> list[int]:
    out = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=steps,
                         min_new_tokens=steps, do_sample=False, eos_token_id=None)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("name", sorted(PROMPT_TUNINGS))
def test_generate_uses_the_virtual_tokens(tiny: Path, name: str) -> None:
    torch.manual_seed(0)
    model = wrapped(tiny, PROMPT_TUNINGS[name]).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    base = AutoModelForCausalLM.from_pretrained(tiny).eval()
    prompts = [prompt_answer_ids(tokenizer, row)[0] for row in bundled_instructions()[:3]]
    for prompt in prompts:
        assert generated(model, prompt, 6) == manual_greedy(model, prompt, 6)
    # The untrained virtual tokens already change the answers, so the check above can fail.
    assert any(manual_greedy(model, p, 6) != manual_greedy(base, p, 6) for p in prompts)


def test_peft_generation_still_needs_our_fix(tiny: Path) -> None:
    """When this fails, peft reads transformers' `cache` key itself: delete fix_generation."""
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny), PrefixTuningConfig(
        task_type=TaskType.CAUSAL_LM, num_virtual_tokens=6)).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny).eval()
    prompt = prompt_answer_ids(AutoTokenizer.from_pretrained(tiny), bundled_instructions()[0])[0]
    assert manual_greedy(model, prompt, 6) != manual_greedy(base, prompt, 6)
    assert generated(model, prompt, 6) == manual_greedy(base, prompt, 6), \
        "peft's generate now sees the prefix: remove worker.tunings.prompt_learning.fix_generation"


def train(tiny: Path, tuning_spec: dict[str, Any], out: Path, *, steps: int,
          resume: Path | None = None) -> Any:
    """A short SFT run the way the supervised objective trains, checkpointing every 2 steps."""
    set_seed(0)
    model = wrapped(tiny, tuning_spec)
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    rows = to_sft_rows(bundled_instructions(), tokenizer, assistant_only=True)
    args = SFTConfig(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=8, learning_rate=3e-2,
        bf16=False, gradient_checkpointing=False, use_cpu=True, save_strategy="steps",
        save_steps=2, logging_steps=1, report_to="none", disable_tqdm=True, seed=0, data_seed=0,
        **sft_loss_options(rows, tokenizer, completion_only=True))
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return model.eval()


@pytest.mark.parametrize("name", ["prefix", "p_tuning", "p_tuning_lstm"])
def test_resume_from_a_checkpoint_continues_the_same_run(tiny: Path, tmp_path: Path,
                                                          name: str) -> None:
    """A requeued job resumes from its checkpoint; prompt encoders must come back exactly."""
    spec = PROMPT_TUNINGS[name]
    straight = train(tiny, spec, tmp_path / "a", steps=4)
    assert (tmp_path / "a" / "checkpoint-2" / ENCODER_STATE).is_file()
    resumed = train(tiny, spec, tmp_path / "b", steps=4, resume=tmp_path / "a" / "checkpoint-2")
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        expected, got = straight(input_ids=ids).logits, resumed(input_ids=ids).logits
    assert torch.allclose(expected, got, atol=1e-5), (expected - got).abs().max()
    # The checkpoint itself still loads with peft alone, as the artifact does.
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny),
                                         tmp_path / "a" / "checkpoint-4").eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, expected, atol=1e-5)


def test_qlora_quantises_on_load_and_refuses_a_plain_base(tiny: Path) -> None:
    from tunesmith.spec.tunings import QLoraTuning
    from worker.tunings.qlora import load_kwargs, quantized_layers

    spec = JobSpec.model_validate({"model": "tiny-llama", "training_file": "file-x",
                                   "tuning": {"type": "qlora", "bits": 4}})
    ctx = JobContext(job_id="ftjob-plans", spec=spec, device="cpu", seed=0)
    assert isinstance(spec.tuning, QLoraTuning)
    kwargs = load_kwargs(spec.tuning, ctx)
    assert kwargs["device_map"] == {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(tiny, **kwargs)
    linear = sum(isinstance(m, torch.nn.Linear) for m in
                 AutoModelForCausalLM.from_pretrained(tiny).modules()) - 1  # all but lm_head
    assert quantized_layers(model) == {"Linear4bit": linear}
    with pytest.raises(RuntimeError, match="without any bitsandbytes layer"):
        tuning(QLoraTuning).apply(AutoModelForCausalLM.from_pretrained(tiny), spec.tuning,
                              "causal_lm", ctx)
