"""A job can start from a fine-tuned model or one of its checkpoints (`"model": "ft:..."`)
and continues from those weights: its first loss is the first job's low loss, not the base
model's."""

import json
from pathlib import Path
from typing import Any

import pytest

from testbed.jobs import Project, train_and_wait
from testbed.learning import bundled_instructions

SAVE_STEPS = 20  # 60 steps: checkpoints at 20, 40, 60


def _spec(file_id: str, model: str, tuning: str = "lora", **hyperparameters: Any) -> dict:
    return {"model": model, "training_file": file_id,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {
                "batch_size": 8, "learning_rate": 5e-3, **hyperparameters}}},
            "tuning": {"type": tuning, **({"r": 8, "alpha": 16} if tuning == "lora" else {})}}


def _losses(project: Project, job_id: str) -> dict[int, float]:
    """Each logged step's training loss. The end-of-run mean comes after the last step's
    loss, with the same step: the first value per step is the step's own."""
    losses: dict[int, float] = {}
    for event in project.events(job_id):
        data = event["data"] or {}
        if event["type"] == "metrics" and ("loss" in data or "train_loss" in data):
            losses.setdefault(data["step"], data.get("loss", data.get("train_loss")))
    return losses


@pytest.fixture(scope="module")
def file_id(project: Project) -> str:
    return project.upload(bundled_instructions(), "ft-start.jsonl")["id"]


@pytest.fixture(scope="module")
def first(project: Project, file_id: str) -> dict[str, Any]:
    return train_and_wait(project, _spec(file_id, "tiny-llama", n_epochs=30,
                                         save_steps=SAVE_STEPS))


def _continues_from(project: Project, first_job: dict[str, Any], job: dict[str, Any],
                    step: int | None = None) -> None:
    """The job's first loss is the first job's loss at `step` (default: its last), give or
    take a batch's noise, and far below the base model's first loss."""
    before = _losses(project, first_job["id"])
    base_start, start = before[min(before)], next(iter(_losses(project, job["id"]).values()))
    reached = before[step or max(before)]
    print(f"first loss: base model {base_start:.3f}, from {job['model']} {start:.3f} "
          f"(the first job's loss there: {reached:.3f})")
    assert start < 0.5 * base_start and start < 1.5 * reached + 0.05, (start, reached)


def test_job_from_fine_tuned_model_starts_at_its_low_loss(
        project: Project, file_id: str, first: dict[str, Any], stack: Any,
        tmp_path: Path) -> None:
    name = first["fine_tuned_model"]
    second = train_and_wait(project, _spec(file_id, name, n_epochs=1, logging_steps=1))
    assert second["model"] == name
    _continues_from(project, first, second)
    assert any(m.startswith(f"Starting from {name}") for m in project.event_messages(
        second["id"]))
    folder = project.download_artifacts(second["id"], tmp_path, "adapter/") / "adapter"
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == name
    assert str(stack.root) not in (folder / "adapter_config.json").read_text()


def test_job_from_checkpoint_starts_at_its_loss(project: Project, file_id: str,
                                                first: dict[str, Any]) -> None:
    steps = [c["step_number"] for c in project.http.get(
        f"/v1/fine_tuning/jobs/{first['id']}/checkpoints").json()["data"]]
    assert 2 * SAVE_STEPS in steps, steps
    name = f"{first['fine_tuned_model']}:ckpt-step-{2 * SAVE_STEPS}"
    job = train_and_wait(project, _spec(file_id, name, n_epochs=1, logging_steps=1))
    _continues_from(project, first, job, step=2 * SAVE_STEPS)
    # The older checkpoint form (job id plus step) names the same weights.
    older = project.create_job(_spec(file_id, f"{first['id']}:ckpt-step-{2 * SAVE_STEPS}",
                                     n_epochs=1))
    assert project.http.post(f"/v1/fine_tuning/jobs/{older['id']}/cancel").status_code == 200


def test_job_from_full_fine_tuned_model(project: Project, file_id: str, stack: Any,
                                        tmp_path: Path) -> None:
    full = train_and_wait(project, _spec(file_id, "tiny-llama", tuning="full", n_epochs=30,
                                         learning_rate=2e-3))
    folder = project.download_artifacts(full["id"], tmp_path, "model/") / "model"
    config = json.loads((folder / "config.json").read_text())
    assert config.get("_name_or_path", "tiny-llama") == "tiny-llama", config
    for path in folder.rglob("*"):
        assert str(stack.root).encode() not in path.read_bytes(), path.name
    job = train_and_wait(project, _spec(file_id, full["fine_tuned_model"], n_epochs=1,
                                        logging_steps=1))
    _continues_from(project, full, job)


def test_unknown_or_foreign_fine_tuned_models_are_refused(
        project: Project, other_project: Project, file_id: str, first: dict[str, Any]) -> None:
    name = first["fine_tuned_model"]
    other_file = other_project.upload(bundled_instructions(), "other.jsonl")["id"]
    cases = [
        (project, file_id, "ft:tiny-llama:nobody:ftjob-0123abcd"),
        (project, file_id, f"{name}:ckpt-step-999"),
        (project, file_id, "ft:tiny-llama"),
        (other_project, other_file, name),  # another project's model is not there at all
    ]
    for who, training_file, model in cases:
        before = len(who.http.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"])
        response = who.http.post("/v1/fine_tuning/jobs", json=_spec(training_file, model))
        assert response.status_code == 400, (model, response.text)
        error = response.json()["error"]
        assert error["param"] == "model" and model.split(":")[0] in error["message"], error
        after = len(who.http.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"])
        assert after == before, model
