"""The response models keep every body exactly: FastAPI writes a route's answer through
its model, so a key the serializer writes and the model lacks would vanish from the wire,
and a value the model coerces (2 -> 2.0, a missing key -> null) would change. Each body is
checked the way FastAPI sends it (validated, then dumped as JSON by alias without unset
fields). Built from rows in memory: no servers."""

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from api.routes.exports import export_object
from api.routes.methods import describe_methods
from api.routes.webhooks import delivery_object, endpoint_object
from api.schemas.events import EventObject
from api.schemas.exports import ExportObject
from api.schemas.files import FileObject
from api.schemas.jobs import DryRun, JobObject
from api.schemas.methods import Methods
from api.schemas.outputs import ArtifactObject, CheckpointObject
from api.schemas.webhooks import (
    WebhookDeliveryObject,
    WebhookEndpointCreated,
    WebhookEndpointObject,
)
from api.serializers import (
    artifact_object,
    checkpoint_object,
    event_object,
    file_object,
    job_object,
)
from tunesmith.db.models import (
    Artifact,
    Checkpoint,
    Export,
    File,
    Job,
    JobEvent,
    WebhookDelivery,
    WebhookEndpoint,
)
from tunesmith.dry_run import dry_run
from tunesmith.model_names import ModelLocation
from tunesmith.spec.job import JobSpec


def sent(model: type[BaseModel], body: dict[str, Any]) -> dict[str, Any]:
    return model.model_validate(body).model_dump(mode="json", by_alias=True,
                                                 exclude_unset=True)


def _job(spec: dict[str, Any], **fields: Any) -> Job:
    parsed = JobSpec.model_validate(spec)
    values: dict[str, Any] = {
        "id": "ftjob-abc", "project_id": "proj-1", "model": parsed.model,
        "training_file_id": parsed.training_file, "validation_file_id": None,
        "method_type": parsed.method.type, "tuning_type": parsed.tuning.type,
        "spec": parsed.model_dump(mode="json"), "status": "queued", "suffix": None,
        "seed": 42, "metadata_": None, "max_attempts": 3, "attempt": 0,
        "created_at": 1700000000, "started_at": None, "finished_at": None,
        "fine_tuned_model": None, "hyperparameters": None, "result_files": None,
        "trained_tokens": None, "error": None, "progress": None, "last_metrics": None,
        **fields}
    return Job(**values)


SUPERVISED = {"model": "tiny", "training_file": "file-a", "suffix": "s",
              "metadata": {"team": "x"},
              "method": {"type": "supervised", "supervised": {"hyperparameters": {
                  "n_epochs": 2, "learning_rate_multiplier": 2}}},
              "integrations": [{"type": "wandb", "wandb": {"project": "p"}},
                               {"type": "tensorboard"}]}
MULTITASK = {"model": "tiny", "method": {"type": "multitask", "multitask": {"tasks": [
    {"name": "a", "file": "file-a"}, {"name": "b", "file": "file-b", "weight": 2}]}}}

JOBS = {
    "running supervised, with an eta": _job(
        SUPERVISED, status="running", started_at=1700000100,
        hyperparameters={"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 2},
        progress={"step": 5, "total_steps": 20, "steps_per_second": 0.5},
        last_metrics={"train_loss": 1.25, "step": 5}),
    "failed multitask (no OpenAI method, no training file)": _job(
        MULTITASK, status="failed", finished_at=1700000200, attempt=1,
        error={"code": "out_of_memory", "message": "CUDA out of memory", "param": None,
               "hint": "a key of the worker's own"}),
    "paused dpo": _job({"model": "tiny", "training_file": "file-p",
                        "method": {"type": "dpo"}}, status="paused"),
    "succeeded": _job(SUPERVISED, status="succeeded", finished_at=1700000300,
                      fine_tuned_model="ft:tiny:proj-1:s:ftjob-abc",
                      result_files=["file-r"], trained_tokens=1234),
}


@pytest.mark.parametrize("name", JOBS)
def test_job_bodies_are_sent_unchanged(name: str) -> None:
    body = job_object(JOBS[name])
    assert sent(JobObject, body) == body


def test_only_openai_method_types_carry_method() -> None:
    assert "method" in sent(JobObject, job_object(JOBS["paused dpo"]))
    assert "method" not in sent(JobObject, job_object(
        JOBS["failed multitask (no OpenAI method, no training file)"]))


def test_a_dropped_key_is_caught() -> None:
    """The comparison can fail: a key the model does not declare disappears."""
    body = {**file_object(_file()), "invented": 1}
    assert sent(FileObject, body) != body


def _file() -> File:
    return File(id="file-a", project_id="proj-1", filename="a.jsonl", purpose="fine-tune",
                bytes=10, sha256="0" * 64, format="messages", row_count=3,
                status="processed", created_at=1700000000)


def test_other_bodies_are_sent_unchanged() -> None:
    job = JOBS["succeeded"]
    checkpoint = Checkpoint(id="ftckpt-1", job_id=job.id, step=10, path="checkpoints/step-10",
                            metrics={"train_loss": 0.5, "stage": "sft"}, created_at=1700000050)
    artifact = Artifact(id="art-1", job_id=job.id, name="adapter/adapter_model.safetensors",
                        kind="adapter", bytes=100, sha256="1" * 64, created_at=1700000300)
    event = JobEvent(seq=7, job_id=job.id, created_at=1700000001, level="warn",
                     type="metrics", message="step 5", data={"loss": float("nan"), "step": 5})
    export = Export(id="ftexp-1", project_id="proj-1", job_id=job.id, format="gguf",
                    quantization="q8_0", checkpoint_step=None, status="succeeded",
                    error=None, artifacts=[{"name": "model.gguf", "bytes": 5,
                                            "sha256": "2" * 64}],
                    created_at=1700000400, started_at=1700000401, finished_at=1700000500)
    endpoint = WebhookEndpoint(id="wh-1", project_id="proj-1", url="https://example.com/h",
                               events=["fine_tuning.job.succeeded"], description=None,
                               secret="sealed", created_at=1700000000)
    delivery = WebhookDelivery(id="whd-1", endpoint_id="wh-1", event_id="evt-1",
                               event_type="fine_tuning.job.succeeded", payload="{}",
                               status="pending", attempts=2, last_status_code=500,
                               last_error="HTTP 500", next_attempt_at=1700000600.5,
                               created_at=1700000000, delivered_at=None)
    bodies: list[tuple[type[BaseModel], dict[str, Any]]] = [
        (FileObject, file_object(_file())),
        (CheckpointObject, checkpoint_object(checkpoint, job)),
        (ArtifactObject, artifact_object(artifact)),
        (EventObject, event_object(event)),
        (ExportObject, export_object(export)),
        (WebhookEndpointObject, endpoint_object(endpoint)),
        (WebhookEndpointCreated, endpoint_object(endpoint, secret="whsec_x")),
        (WebhookDeliveryObject, delivery_object(delivery)),
        (Methods, describe_methods()),
    ]
    for model, body in bodies:
        assert sent(model, body) == body, model.__name__


def test_a_dry_run_is_sent_unchanged(tmp_path: Path) -> None:
    """With a memory estimate, a card it fits and one it does not (with suggestions)."""
    (tmp_path / "config.json").write_text(json.dumps({  # LLaMA 7B's shape
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
        "intermediate_size": 11008, "vocab_size": 32000, "max_position_embeddings": 2048}))
    location = ModelLocation(name="llama", source="local", path_or_id=str(tmp_path))
    spec = JobSpec.model_validate({**SUPERVISED, "model": "llama"})
    body = dry_run(spec, location, rows=1000, gpu_classes={"small": 8, "a100": 80})
    assert [entry["fits"] for entry in body["gpu_classes"]] == [False, True]
    assert "suggestions" in body["gpu_classes"][0]
    assert sent(DryRun, body) == body
    hub = dry_run(spec, None, rows=100, gpu_classes={"a10": 24})
    assert sent(DryRun, hub) == hub
