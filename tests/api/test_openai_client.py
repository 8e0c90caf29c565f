"""The official `openai` Python client, pointed at our server, drives files and jobs.

One job trains to success (for events and checkpoints); the others are cancelled while
queued, so the module costs one short training.
"""

import json
from typing import Any

import pytest
from openai import ConflictError, NotFoundError, OpenAI

from testbed.jobs import Project
from testbed.learning import bundled_instructions

# 16 rows, batch 8: 2 steps an epoch, 20 steps, a checkpoint every 5.
HYPERPARAMETERS = {"n_epochs": 10, "batch_size": 8, "learning_rate": 5e-3, "save_steps": 5}
CHECKPOINT_STEPS = [20, 15, 10, 5]
LORA = {"type": "lora", "r": 8, "alpha": 16}


def _method(**hyperparameters: Any) -> Any:
    return {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}


@pytest.fixture(scope="module")
def owner(stack) -> Project:  # type: ignore[no-untyped-def]
    # A project of its own, so job and file listings hold exactly what this module made.
    return stack.project("openai-client")


@pytest.fixture(scope="module")
def client(stack, owner: Project) -> OpenAI:  # type: ignore[no-untyped-def]
    # No retries: a refusal must surface as the error it is, not as a retried request.
    return OpenAI(base_url=f"{stack.url}/v1", api_key=owner.key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def data() -> bytes:
    return "\n".join(json.dumps(r) for r in bundled_instructions()).encode() + b"\n"


@pytest.fixture(scope="module")
def training_file(client: OpenAI, data: bytes) -> Any:
    return client.files.create(file=("instructions.jsonl", data), purpose="fine-tune")


@pytest.fixture(scope="module")
def jobs(client: OpenAI, owner: Project, training_file: Any) -> dict[str, Any]:
    """One job trained to success and three cheap ones cancelled while still queued."""
    trained = client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=training_file.id, suffix="oai", seed=7,
        method=_method(**HYPERPARAMETERS), metadata={"suite": "openai"},
        extra_body={"tuning": LORA})
    # The single worker is busy with `trained`, so these stay queued until cancelled.
    cheap = [client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=training_file.id, method=_method(n_epochs=1),
        metadata={"suite": "openai", "n": str(i)}, extra_body={"tuning": LORA})
        for i in range(2)]
    # The deprecated top-level hyperparameters, as older scripts still send them.
    cheap.append(client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=training_file.id, hyperparameters={"n_epochs": 2},
        metadata={"suite": "openai", "n": "2"}, extra_body={"tuning": LORA}))
    cancelled = [client.fine_tuning.jobs.cancel(job.id) for job in cheap]
    done = owner.wait(trained.id, timeout=300)
    return {"created": trained, "done": done, "cheap": cheap, "cancelled": cancelled}


def test_files_create_retrieve_list_content(client: OpenAI, training_file: Any,
                                            data: bytes) -> None:
    assert training_file.id.startswith("file-")
    assert training_file.object == "file" and training_file.purpose == "fine-tune"
    assert training_file.filename == "instructions.jsonl" and training_file.bytes == len(data)
    processed = client.files.wait_for_processing(training_file.id, max_wait_seconds=10)
    assert processed.status == "processed"
    got = client.files.retrieve(training_file.id)
    assert (got.id, got.bytes, got.filename) == (training_file.id, len(data), "instructions.jsonl")
    assert training_file.id in [f.id for f in client.files.list()]
    assert training_file.id in [f.id for f in client.files.list(purpose="fine-tune")]
    assert client.files.content(training_file.id).content == data


def test_files_delete(client: OpenAI) -> None:
    upload = client.files.create(file=("gone.jsonl", b'{"text": "to be deleted"}\n'),
                                 purpose="fine-tune")
    deleted = client.files.delete(upload.id)
    assert deleted.id == upload.id and deleted.deleted is True
    with pytest.raises(NotFoundError):
        client.files.retrieve(upload.id)
    with pytest.raises(NotFoundError):
        client.files.content(upload.id)
    assert upload.id not in [f.id for f in client.files.list()]


def test_create_returns_the_job_as_openai_shapes_it(jobs: dict[str, Any],
                                                    training_file: Any) -> None:
    job = jobs["created"]
    assert job.id.startswith("ftjob-") and job.object == "fine_tuning.job"
    assert job.status == "queued" and job.model == "tiny-llama"
    assert job.training_file == training_file.id and job.seed == 7
    assert job.hyperparameters.n_epochs == 10 and job.hyperparameters.batch_size == 8
    assert job.method.type == "supervised"
    assert job.method.supervised.hyperparameters.n_epochs == 10
    assert job.metadata == {"suite": "openai"}
    # Our extension comes back as an extra field the client keeps.
    assert job.model_extra["tuning"]["type"] == "lora" and job.model_extra["tuning"]["r"] == 8


def test_retrieve_after_success(client: OpenAI, jobs: dict[str, Any]) -> None:
    done = jobs["done"]
    assert done["status"] == "succeeded", done["error"]
    job = client.fine_tuning.jobs.retrieve(jobs["created"].id)
    assert job.status == "succeeded" and job.error is None
    assert job.fine_tuned_model == f"ft:tiny-llama:{job.organization_id}:oai:{job.id}"
    assert job.finished_at is not None and job.finished_at >= job.created_at
    assert job.trained_tokens and job.trained_tokens > 0
    # The results CSV, a file of the project, as OpenAI's result_files hold.
    assert len(job.result_files) == 1
    results = client.files.retrieve(job.result_files[0])
    assert (results.purpose, results.filename) == ("fine-tune-results", "step_metrics.csv")
    header = client.files.content(results.id).text.splitlines()[0]
    assert header == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    with pytest.raises(NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-doesnotexist")


def test_queued_jobs_cancel_at_once(client: OpenAI, jobs: dict[str, Any]) -> None:
    assert jobs["cheap"][2].hyperparameters.n_epochs == 2
    assert jobs["cheap"][2].method.supervised.hyperparameters.n_epochs == 2
    for created, cancelled in zip(jobs["cheap"], jobs["cancelled"], strict=True):
        assert created.status == "queued"
        assert cancelled.id == created.id and cancelled.status == "cancelled"
        assert client.fine_tuning.jobs.retrieve(created.id).status == "cancelled"
    with pytest.raises(ConflictError) as refused:
        client.fine_tuning.jobs.cancel(jobs["cheap"][0].id)
    assert refused.value.status_code == 409 and refused.value.code == "job_not_cancellable"


def test_list_pages_with_limit_and_after(client: OpenAI, jobs: dict[str, Any]) -> None:
    newest_first = [j.id for j in reversed(jobs["cheap"])] + [jobs["created"].id]
    first = client.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in first.data] == newest_first[:2] and first.has_more is True
    second = client.fine_tuning.jobs.list(limit=2, after=first.data[-1].id)
    assert [j.id for j in second.data] == newest_first[2:] and second.has_more is False
    assert client.fine_tuning.jobs.list(limit=2, after=newest_first[-1]).data == []
    # The client's own paging follows `after` until has_more is false.
    assert [j.id for j in client.fine_tuning.jobs.list(limit=1)] == newest_first
    statuses = {j.id: j.status for j in client.fine_tuning.jobs.list(limit=10)}
    assert statuses == {**{j.id: "cancelled" for j in jobs["cheap"]},
                        jobs["created"].id: "succeeded"}
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"n": "1"})] == \
        [jobs["cheap"][1].id]


def test_list_events(client: OpenAI, owner: Project, jobs: dict[str, Any]) -> None:
    job_id = jobs["created"].id
    events = list(client.fine_tuning.jobs.list_events(job_id, limit=7))  # pages of 7
    assert [e.id for e in events] == [e["id"] for e in reversed(owner.events(job_id))]
    assert all(e.object == "fine_tuning.job.event" for e in events)
    messages = [e.message for e in reversed(events)]
    assert messages[0] == "Created fine-tuning job: supervised x lora on tiny-llama"
    assert any(m.startswith("Job started on ") for m in messages)
    assert any(m.startswith("Training process started (pid ") for m in messages)
    assert messages[-1] == "The job has successfully completed"
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics and all("step" in e.data for e in metrics)
    page = client.fine_tuning.jobs.list_events(job_id, limit=3)
    assert len(page.data) == 3 and page.has_more is True
    assert page.data[0].message == "The job has successfully completed"
    cancelled = [e.message for e in
                 client.fine_tuning.jobs.list_events(jobs["cheap"][0].id).data]
    assert cancelled[0] == "Job cancelled before it started"


def test_checkpoints_list(client: OpenAI, jobs: dict[str, Any]) -> None:
    job_id = jobs["created"].id
    page = client.fine_tuning.jobs.checkpoints.list(job_id)
    assert [c.step_number for c in page.data] == CHECKPOINT_STEPS and page.has_more is False
    for checkpoint in page.data:
        assert checkpoint.object == "fine_tuning.job.checkpoint"
        assert checkpoint.fine_tuning_job_id == job_id
        assert checkpoint.metrics.step == checkpoint.step_number
        assert checkpoint.metrics.train_loss is not None and checkpoint.metrics.train_loss > 0
    first = client.fine_tuning.jobs.checkpoints.list(job_id, limit=3)
    assert [c.step_number for c in first.data] == CHECKPOINT_STEPS[:3] and first.has_more
    rest = client.fine_tuning.jobs.checkpoints.list(job_id, limit=3, after=first.data[-1].id)
    assert [c.step_number for c in rest.data] == CHECKPOINT_STEPS[3:] and not rest.has_more
    assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(
        job_id, limit=1)] == CHECKPOINT_STEPS


def test_training_file_deletes_once_its_jobs_are_done(client: OpenAI, jobs: dict[str, Any],
                                                      training_file: Any) -> None:
    assert jobs["done"]["status"] == "succeeded"
    assert client.files.delete(training_file.id).deleted is True
    # The finished job still names its training file.
    assert client.fine_tuning.jobs.retrieve(jobs["created"].id).training_file == \
        training_file.id
