"""One supervised job per `tuning.type` on the tiny model, submitted once per test session:
tests/e2e/test_tunings_e2e.py checks what each learned, tests/e2e/test_inference_tunings.py
chats with each through the inference process."""

from dataclasses import dataclass
from typing import Any

from testbed.jobs import Project
from testbed.learning import bundled_instructions


@dataclass(frozen=True)
class Case:
    tuning: dict[str, Any]
    n_epochs: int
    learning_rate: float
    # Gains over the base model (accuracy 0.0, log-likelihood -7.1 per answer token), set
    # well below what these settings measured (`pytest -s` prints the figures). Prompt
    # learning can only steer the frozen random model: it learns the answers' form (".",
    # end token) and some words, not all of them.
    accuracy_gain: float
    log_likelihood_gain: float
    # Mean of the last four logged losses below this share of the first four.
    loss_ratio: float


# 16 rows, batch 8: two steps an epoch (20 epochs = 40 steps, a checkpoint every 8). The
# seed is fixed, so on one machine each job's figures repeat exactly.
CASES: dict[str, Case] = {
    "qlora": Case({"type": "qlora", "r": 16, "alpha": 32, "bits": 4, "quant_type": "nf4",
                   "double_quant": True}, 15, 1.5e-2, 0.7, 4.0, 0.6),
    "adapter": Case({"type": "adapter", "size": 64, "placement": "houlsby"}, 20, 2e-2,
                    0.6, 3.5, 0.6),
    "prefix": Case({"type": "prefix", "num_virtual_tokens": 10, "encoder_hidden_size": 128},
                   20, 3e-2, 0.4, 2.5, 0.7),
    "p_tuning_v2": Case({"type": "p_tuning_v2", "num_virtual_tokens": 10}, 20, 1e-1,
                        0.4, 2.0, 0.8),
    # The slowest learner here (an MLP-encoded input prompt): twice the epochs.
    "p_tuning": Case({"type": "p_tuning", "num_virtual_tokens": 10, "encoder_type": "MLP",
                      "encoder_hidden_size": 128}, 40, 1e-2, 0.3, 1.2, 0.85),
    "prompt": Case({"type": "prompt", "num_virtual_tokens": 20, "init": "text",
                    "init_text": "Answer the question in one word."}, 20, 1e-1, 0.4, 1.5, 0.85),
    "full": Case({"type": "full"}, 10, 3e-3, 0.8, 4.0, 0.4),
    # LoRA has its own module (test_lora_sft_e2e); here with QLoRA's settings, to compare.
    "lora": Case({"type": "lora", "r": 16, "alpha": 32}, 15, 1.5e-2, 0.7, 4.0, 0.6),
}
NAMES = list(CASES)


def job_spec(name: str, training_file: str) -> dict[str, Any]:
    case = CASES[name]
    return {
        "model": "tiny-llama", "training_file": training_file, "seed": 0, "suffix": name,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": case.n_epochs, "batch_size": 8, "learning_rate": case.learning_rate}}},
        "tuning": case.tuning,
    }


def submit_tuning_jobs(project: Project) -> dict[str, dict[str, Any]]:
    upload = project.upload(bundled_instructions(), "instructions.jsonl")
    return {name: project.create_job(job_spec(name, upload["id"])) for name in NAMES}
