"""Every object the API sends, checked against OpenAI's published OpenAPI document (an
excerpt in tests/data, with its source commit), from real jobs driven through every state:
queued, running, pausing, paused, cancelling, cancelled, succeeded and failed. Our
extensions may add fields, never a value outside OpenAI's enums.

The job that succeeds has a validation file: its metrics events carry OpenAI's names, its
`result_files` hold the id of the step CSV the official client reads, and its checkpoints
keep both losses.
"""

import csv
import io
import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from jsonschema import validators
from openai import BadRequestError, OpenAI

from testbed.jobs import Project
from testbed.learning import bundled_instructions

EXCERPT = json.loads((Path(__file__).parents[1] / "data" / "openai_openapi_excerpt.json")
                     .read_text())
CSV_HEADER = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
LORA = {"type": "lora", "r": 8, "alpha": 16}


def _exclusive_minimum(validator: Any, value: Any, instance: Any, schema: dict) -> Any:
    """OpenAI's document is OpenAPI 3.1 but writes some `exclusiveMinimum` the 3.0 way, as a
    flag on `minimum`; read those as the 3.0 meaning, numbers as 2020-12's."""
    if not validator.is_type(instance, "number"):
        return
    bound = schema.get("minimum") if isinstance(value, bool) else value
    if value is not False and bound is not None and instance <= bound:
        yield jsonschema.ValidationError(f"{instance} is not greater than {bound}")


Validator = validators.extend(jsonschema.Draft202012Validator,
                              {"exclusiveMinimum": _exclusive_minimum})


def assert_openai(name: str, body: Any, what: str) -> None:
    """`body` validates against OpenAI's schema `name`; every error is listed."""
    validator = Validator({**EXCERPT, "$ref": f"#/components/schemas/{name}"})
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(body)]
    assert not errors, f"{what} is not an OpenAI {name}:\n" + "\n".join(errors)


def test_the_schema_check_can_fail() -> None:
    """The check refuses what a strict OpenAI client would: a status outside the enum."""
    job = {"id": "ftjob-x", "object": "fine_tuning.job", "created_at": 1, "error": None,
           "finished_at": None, "fine_tuned_model": None, "hyperparameters": {},
           "model": "m", "organization_id": "p", "result_files": [], "status": "running",
           "trained_tokens": None, "training_file": "file-x", "validation_file": None,
           "seed": 1}
    assert_openai("FineTuningJob", job, "a running job")
    with pytest.raises(AssertionError, match="status"):
        assert_openai("FineTuningJob", {**job, "status": "cancelling"}, "a cancelling job")
    with pytest.raises(AssertionError, match="expires_at"):
        assert_openai("OpenAIFile", {"id": "file-x", "object": "file", "bytes": 1,
                                     "created_at": 1, "filename": "a", "purpose": "fine-tune",
                                     "status": "processed", "expires_at": None}, "a file")


def _spec(file_id: str, **hyperparameters: Any) -> dict[str, Any]:
    return {"model": "tiny-llama", "training_file": file_id, "tuning": LORA,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {
                "batch_size": 8, "learning_rate": 5e-3, **hyperparameters}}}}


class Seen:
    """Every response body of the scenario, by OpenAI schema name."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[tuple[str, Any]]] = {}

    def add(self, schema: str, what: str, body: Any) -> Any:
        self.bodies.setdefault(schema, []).append((what, body))
        return body

    def job(self, project: Project, job_id: str, what: str) -> dict[str, Any]:
        return self.add("FineTuningJob", what, project.job(job_id))

    def post(self, project: Project, path: str, what: str) -> dict[str, Any]:
        response = project.http.post(path)
        assert response.status_code == 200, response.text
        return self.add("FineTuningJob", what, response.json())


@pytest.fixture(scope="module")
def owner(stack) -> Project:  # type: ignore[no-untyped-def]
    return stack.project("openai-fidelity")


@pytest.fixture(scope="module")
def scenario(stack, owner: Project) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Real jobs through every state, each state's job object kept. One worker runs the
    jobs one at a time, so a job created behind another stays queued."""
    seen = Seen()
    rows = bundled_instructions()
    training = seen.add("OpenAIFile", "upload", owner.upload(rows, "train.jsonl"))
    validation = seen.add("OpenAIFile", "upload", owner.upload(rows[:4], "valid.jsonl"))
    pairs = [{"prompt": f"Question: {r['messages'][0]['content']} " * 4, "chosen": " yes",
              "rejected": " no"} for r in rows[:4]]
    preferences = seen.add("OpenAIFile", "upload", owner.upload(pairs, "pairs.jsonl"))

    # 800 steps of one row: long enough to pause, resume and cancel while training.
    long = owner.create_job(_spec(training["id"], n_epochs=50, batch_size=1, logging_steps=1))
    seen.add("FineTuningJob", "created (queued)", long)
    path = f"/v1/fine_tuning/jobs/{long['id']}"
    owner.wait_for_step(long["id"], 2)
    states = {"running": seen.job(owner, long["id"], "running")}
    # Succeeds with a validation file: 16 rows, batch 8, 3 epochs = 6 steps, every step
    # logged, evaluated and checkpointed every 2. Queued behind the running job.
    validated = owner.create_job({**_spec(training["id"], n_epochs=3, logging_steps=1,
                                          save_steps=2),
                                  "validation_file": validation["id"], "suffix": "val"})
    seen.add("FineTuningJob", "created behind another (queued)", validated)
    waiting = f"/v1/fine_tuning/jobs/{validated['id']}"
    states["paused while queued"] = seen.post(owner, f"{waiting}/pause", "paused while queued")
    states["resumed (queued)"] = seen.post(owner, f"{waiting}/resume", "resumed (queued)")
    states["pausing"] = seen.post(owner, f"{path}/pause", "pausing")
    states["paused"] = owner.wait(long["id"], {"paused"}, timeout=60)
    seen.add("FineTuningJob", "paused", states["paused"])
    # The worker is free: the validated job runs while the long one is paused.
    done = owner.wait(validated["id"], timeout=300)
    assert done["status"] == "succeeded", (done["error"], owner.event_messages(done["id"]))
    seen.add("FineTuningJob", "succeeded", done)
    seen.post(owner, f"{path}/resume", "resumed after training (queued)")
    owner.wait_for_step(long["id"], states["paused"]["progress"]["step"] + 1)
    states["running again"] = seen.job(owner, long["id"], "running again")
    states["cancelling"] = seen.post(owner, f"{path}/cancel", "cancelling")
    states["cancelled"] = owner.wait(long["id"], timeout=60)
    seen.add("FineTuningJob", "cancelled", states["cancelled"])
    # Fails: no preference pair fits 8 tokens.
    doomed = owner.create_job({"model": "tiny-llama", "training_file": preferences["id"],
                               "tuning": LORA, "method": {"type": "reward", "reward": {
                                   "hyperparameters": {"max_seq_length": 8}}}})
    states["failed"] = owner.wait(doomed["id"], timeout=300)
    seen.add("FineTuningJob", "failed", states["failed"])

    job_ids = [validated["id"], long["id"], doomed["id"]]
    seen.add("ListPaginatedFineTuningJobsResponse", "jobs list",
             owner.http.get("/v1/fine_tuning/jobs").json())
    seen.add("ListPaginatedFineTuningJobsResponse", "jobs page",
             owner.http.get("/v1/fine_tuning/jobs", params={"limit": 1}).json())
    for job_id in job_ids:
        events = owner.http.get(f"/v1/fine_tuning/jobs/{job_id}/events",
                                params={"limit": 1000}).json()
        seen.add("ListFineTuningJobEventsResponse", f"events of {job_id}", events)
        for event in events["data"]:
            seen.add("FineTuningJobEvent", f"event {event['message'][:60]!r}", event)
        checkpoints = owner.http.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()
        seen.add("ListFineTuningJobCheckpointsResponse", f"checkpoints of {job_id}", checkpoints)
        for checkpoint in checkpoints["data"]:
            seen.add("FineTuningJobCheckpoint", f"checkpoint {checkpoint['id']}", checkpoint)
    results = [f for job in (done, states["cancelled"]) for f in job["result_files"]]
    for file_id in [training["id"], *results]:
        seen.add("OpenAIFile", f"file {file_id}", owner.http.get(f"/v1/files/{file_id}").json())
    seen.add("ListFilesResponse", "files list", owner.http.get("/v1/files").json())
    seen.add("ListFilesResponse", "empty files list",
             owner.http.get("/v1/files", params={"purpose": "batch"}).json())
    seen.add("ListFineTuningJobCheckpointsResponse", "empty checkpoints list",
             owner.http.get(f"/v1/fine_tuning/jobs/{doomed['id']}/checkpoints").json())
    gone = owner.upload(rows[:1], "gone.jsonl")
    seen.add("DeleteFileResponse", "file delete",
             owner.http.delete(f"/v1/files/{gone['id']}").json())
    return {"seen": seen, "states": states, "validated": done, "long": states["cancelled"],
            "failed": states["failed"], "training": training}


def test_jobs_in_every_state_are_openai_jobs(scenario: dict[str, Any]) -> None:
    states = scenario["states"]
    # The states were reached: OpenAI's status, ours in status_detail.
    expected = {"paused while queued": ("queued", "paused"), "resumed (queued)":
                ("queued", "queued"), "running": ("running", "running"),
                "pausing": ("running", "pausing"), "paused": ("queued", "paused"),
                "cancelling": ("running", "cancelling"), "cancelled": ("cancelled", "cancelled"),
                "failed": ("failed", "failed")}
    assert {k: (states[k]["status"], states[k]["status_detail"]) for k in expected} == expected
    assert scenario["validated"]["status"] == "succeeded"
    for what, body in scenario["seen"].bodies["FineTuningJob"]:
        assert_openai("FineTuningJob", body, f"job ({what})")
    assert len(scenario["seen"].bodies["FineTuningJob"]) >= 13


def test_lists_events_checkpoints_and_files_are_openai_shaped(scenario: dict[str, Any]) -> None:
    bodies = scenario["seen"].bodies
    for name in ("ListPaginatedFineTuningJobsResponse", "FineTuningJobEvent",
                 "ListFineTuningJobEventsResponse", "FineTuningJobCheckpoint",
                 "ListFineTuningJobCheckpointsResponse", "OpenAIFile", "ListFilesResponse",
                 "DeleteFileResponse"):
        assert bodies.get(name), f"the scenario made no {name}"
        for what, body in bodies[name]:
            assert_openai(name, body, what)
    levels = {body["level"] for _, body in bodies["FineTuningJobEvent"]}
    assert {"info", "error"} <= levels, levels


def test_error_bodies_are_openai_errors(stack, owner: Project,  # type: ignore[no-untyped-def]
                                        scenario: dict[str, Any]) -> None:
    training, done = scenario["training"]["id"], scenario["validated"]["id"]
    http = owner.http
    refused = {
        "schema (400)": http.post("/v1/fine_tuning/jobs", json={**_spec(training, n_epochs=0)}),
        "integrations (400)": http.post("/v1/fine_tuning/jobs", json={
            **_spec(training), "integrations": [{"type": "comet", "comet": {"project": "p"}}]}),
        "unknown file (400)": http.post("/v1/fine_tuning/jobs", json=_spec("file-nope")),
        "bad upload (400)": http.post("/v1/files", files={"file": ("x.jsonl", b"{oops\n")},
                                      data={"purpose": "fine-tune"}),
        "no key (401)": httpx.get(f"{stack.url}/v1/files"),
        "missing job (404)": http.get("/v1/fine_tuning/jobs/ftjob-nope"),
        "missing route (404)": http.get("/v1/nowhere"),
        "finished job cancel (409)": http.post(f"/v1/fine_tuning/jobs/{done}/cancel"),
        "bad query (400)": http.get("/v1/fine_tuning/jobs", params={"limit": "many"}),
    }
    for what, response in refused.items():
        assert str(response.status_code) in what, (what, response.status_code, response.text)
        assert_openai("ErrorResponse", response.json(), f"error body ({what})")
    assert refused["integrations (400)"].json()["error"]["param"].startswith("integrations")
    assert refused["schema (400)"].json()["error"]["param"] == \
        "method.supervised.hyperparameters.n_epochs"


def test_openai_client_raises_bad_request_for_invalid_parameters(
        stack, owner: Project, scenario: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    client = OpenAI(base_url=f"{stack.url}/v1", api_key=owner.key, max_retries=0, timeout=60)
    with pytest.raises(BadRequestError) as refused:
        client.fine_tuning.jobs.create(model="tiny-llama",
                                       training_file=scenario["training"]["id"],
                                       hyperparameters={"n_epochs": 0})
    assert refused.value.status_code == 400 and refused.value.param == "hyperparameters.n_epochs"
    with pytest.raises(BadRequestError) as clash:
        client.fine_tuning.jobs.create(
            model="tiny-llama", training_file=scenario["training"]["id"],
            hyperparameters={"n_epochs": 2},
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}})
    assert clash.value.param == "hyperparameters.n_epochs"


def test_validated_job_speaks_openai_metrics(stack, owner: Project,  # type: ignore[no-untyped-def]
                                             scenario: dict[str, Any]) -> None:
    job = scenario["validated"]
    metrics = [e["data"] for e in owner.events(job["id"]) if e["type"] == "metrics"]
    train = [m for m in metrics if "train_loss" in m]
    valid = [m for m in metrics if "valid_loss" in m]
    assert [m["step"] for m in train] == [1, 2, 3, 4, 5, 6]
    assert [m["step"] for m in valid] == [2, 4, 6]
    for m in train:
        assert m["train_loss"] == m["loss"] > 0 and 0 <= m["train_mean_token_accuracy"] <= 1
    for m in valid:
        assert m["valid_loss"] == m["full_valid_loss"] == m["eval_loss"] > 0
        assert 0 <= m["valid_mean_token_accuracy"] <= 1
    # The results file, read as an OpenAI user reads it.
    client = OpenAI(base_url=f"{stack.url}/v1", api_key=owner.key, max_retries=0, timeout=60)
    assert len(job["result_files"]) == 1
    content = client.files.content(job["result_files"][0])
    table = list(csv.reader(io.StringIO(content.text)))
    assert table[0] == CSV_HEADER
    by_step = {int(row[0]): row for row in table[1:]}
    assert sorted(by_step) == [1, 2, 3, 4, 5, 6] and len(table) == 7, \
        content.text + "\n" + "\n".join(json.dumps(m) for m in metrics)
    valid_at = {m["step"]: m for m in valid}
    for m in train:
        row = by_step[m["step"]]
        assert float(row[1]) == m["train_loss"]
        assert float(row[2]) == m["train_mean_token_accuracy"]
        if m["step"] in valid_at:
            assert float(row[3]) == valid_at[m["step"]]["valid_loss"]
            assert float(row[4]) == valid_at[m["step"]]["valid_mean_token_accuracy"]
        else:
            assert row[3] == row[4] == ""
    # Checkpoints keep both losses, under the fine-tuned model's name.
    checkpoints = owner.http.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
    assert [c["step_number"] for c in checkpoints] == [6, 4, 2]
    train_at = {m["step"]: m for m in train}
    for checkpoint in checkpoints:
        step = checkpoint["step_number"]
        assert checkpoint["metrics"]["train_loss"] == train_at[step]["train_loss"]
        assert checkpoint["metrics"]["valid_loss"] == valid_at[step]["valid_loss"]
        assert checkpoint["metrics"]["full_valid_loss"] == valid_at[step]["valid_loss"]
        assert checkpoint["fine_tuned_model_checkpoint"] == \
            f"{job['fine_tuned_model']}:ckpt-step-{step}"


def test_hyperparameters_show_what_ran(scenario: dict[str, Any]) -> None:
    job = scenario["validated"]
    ran = job["method"]["supervised"]["hyperparameters"]
    assert (ran["n_epochs"], ran["batch_size"], ran["learning_rate"]) == (3, 8, 5e-3)
    assert ran["learning_rate_multiplier"] != "auto" and ran["max_seq_length"] != "auto"
    assert job["hyperparameters"]["n_epochs"] == 3
    assert "auto" not in job["hyperparameters"].values()


def test_a_cancelled_job_that_trained_has_its_results(stack, owner: Project,  # type: ignore[no-untyped-def]
                                                      scenario: dict[str, Any]) -> None:
    job = scenario["long"]
    assert len(job["result_files"]) == 1
    client = OpenAI(base_url=f"{stack.url}/v1", api_key=owner.key, max_retries=0, timeout=60)
    table = list(csv.reader(io.StringIO(client.files.content(job["result_files"][0]).text)))
    steps = [int(row[0]) for row in table[1:]]
    assert table[0] == CSV_HEADER and steps == list(range(1, len(steps) + 1))
    assert len(steps) >= job["progress"]["step"] - 1
