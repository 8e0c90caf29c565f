"""`hyperparameters.gradient_checkpointing: true` (activation checkpointing, the memory
option) trains the same model: recomputing activations changes no number."""

from typing import Any

from testbed.jobs import Project, train_and_wait
from testbed.learning import bundled_instructions


def spec(file_id: str, checkpointing: bool) -> dict[str, Any]:
    return {
        "model": "tiny-llama", "training_file": file_id, "seed": 11,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "max_steps": 8, "batch_size": 8, "learning_rate": 5e-3, "logging_steps": 1,
            "gradient_checkpointing": checkpointing}}},
        "tuning": {"type": "lora", "r": 8, "alpha": 16},
    }


def test_checkpointed_job_trains_the_same(project: Project) -> None:
    upload = project.upload(bundled_instructions(), "instructions.jsonl")
    on = train_and_wait(project, spec(upload["id"], True))
    off = train_and_wait(project, spec(upload["id"], False))
    assert on["resolved_hyperparameters"]["gradient_checkpointing"] is True
    assert off["resolved_hyperparameters"]["gradient_checkpointing"] is False
    with_, without = project.losses(on["id"]), project.losses(off["id"])
    assert len(with_) == len(without) == 8
    assert max(abs(a - b) for a, b in zip(with_, without, strict=True)) < 1e-4
    assert with_[-1] < 0.8 * with_[0]
