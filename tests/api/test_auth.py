"""Every file, job, export, model and webhook route refuses a missing, malformed or revoked
key (401), and hides one project's things from another project's key (404, and not a byte
of their data).

The route table is checked against the server's own OpenAPI listing, so a new route
without a row here fails this test.
"""

import hashlib
import io
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from testbed.jobs import Project
from testbed.learning import bundled_instructions
from testbed.servers import run_cli

MARKER = "zebra-quartz-7731"  # in the owner's data only: must never reach another project


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # with {file_id}, {job_id}, {name} placeholders
    body: str | None = None  # "upload", "job", "chat", "completion", "export" or "webhook"
    params: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.params)
        return f"{self.method} {self.path}" + (f"?{query}" if query else "")


ROUTES = [
    Route("POST", "/v1/files", body="upload"),
    Route("GET", "/v1/files"),
    Route("GET", "/v1/files/{file_id}"),
    Route("GET", "/v1/files/{file_id}/content"),
    Route("GET", "/v1/files/{file_id}/preview"),
    Route("DELETE", "/v1/files/{file_id}"),
    Route("POST", "/v1/fine_tuning/jobs", body="job"),
    Route("GET", "/v1/fine_tuning/jobs"),
    Route("GET", "/v1/fine_tuning/jobs/{job_id}"),
    Route("POST", "/v1/fine_tuning/jobs/{job_id}/cancel"),
    Route("POST", "/v1/fine_tuning/jobs/{job_id}/pause"),
    Route("POST", "/v1/fine_tuning/jobs/{job_id}/resume"),
    Route("GET", "/v1/fine_tuning/jobs/{job_id}/events"),
    Route("GET", "/v1/fine_tuning/jobs/{job_id}/events", params=(("stream", "true"),)),
    Route("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints"),
    Route("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}/files"),
    Route("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}/files/"
                 "{checkpoint_file}"),
    Route("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}.tar.gz"),
    Route("GET", "/v1/fine_tuning/jobs/{job_id}/artifacts"),
    Route("GET", "/v1/fine_tuning/jobs/{job_id}/artifacts/{name}"),
    Route("POST", "/v1/fine_tuning/jobs/{job_id}/exports", body="export"),
    Route("GET", "/v1/fine_tuning/jobs/{job_id}/exports"),
    Route("GET", "/v1/exports/{export_id}"),
    Route("POST", "/v1/exports/{export_id}/cancel"),
    Route("GET", "/v1/exports/{export_id}/artifacts"),
    Route("GET", "/v1/exports/{export_id}/artifacts/{export_file}"),
    Route("GET", "/v1/methods"),
    Route("GET", "/v1/models"),
    Route("GET", "/v1/models/{model}"),
    Route("DELETE", "/v1/models/{model}"),
    Route("POST", "/v1/chat/completions", body="chat"),
    Route("POST", "/v1/completions", body="completion"),
    Route("POST", "/v1/webhooks", body="webhook"),
    Route("GET", "/v1/webhooks"),
    Route("GET", "/v1/webhooks/{webhook_id}"),
    Route("GET", "/v1/webhooks/{webhook_id}/deliveries"),
    Route("DELETE", "/v1/webhooks/{webhook_id}"),
]
# Routes whose path names one of the owner's objects: another project's key gets 404.
ID_ROUTES = [r for r in ROUTES if "{" in r.path]
# Routes with no id in the path: another project's key works, but sees only its own things.
OPEN_ROUTES = [r for r in ROUTES if "{" not in r.path]


def _call(url: str, route: Route, headers: dict[str, str], ids: dict[str, str]) -> httpx.Response:
    path = route.path.format(**ids)
    kwargs: dict[str, Any] = {"headers": headers, "params": dict(route.params), "timeout": 30}
    if route.body == "upload":
        kwargs["files"] = {"file": ("probe.jsonl", io.BytesIO(b'{"text": "probe"}\n'))}
        kwargs["data"] = {"purpose": "fine-tune"}
    elif route.body == "job":
        kwargs["json"] = {"model": "tiny-llama", "training_file": ids["file_id"],
                          "tuning": {"type": "lora"}}
    elif route.body == "chat":
        kwargs["json"] = {"model": ids["model"], "max_tokens": 2,
                          "messages": [{"role": "user", "content": "Hi"}]}
    elif route.body == "completion":
        kwargs["json"] = {"model": ids["model"], "prompt": "Hi", "max_tokens": 2}
    elif route.body == "export":
        kwargs["json"] = {"format": "merged"}
    elif route.body == "webhook":
        kwargs["json"] = {"url": "http://127.0.0.1:9/hook"}
    return httpx.request(route.method, url + path, **kwargs)


def _assert_error_shape(response: httpx.Response, status: int, label: str) -> dict[str, Any]:
    assert response.status_code == status, (label, response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), label
    body = response.json()
    assert set(body) == {"error"}, (label, body)
    assert {"type", "code", "message", "param"} <= set(body["error"]), (label, body)
    assert body["error"]["message"], (label, body)
    return body["error"]


@pytest.fixture(scope="module")
def owner(stack) -> Project:  # type: ignore[no-untyped-def]
    return stack.project("auth-owner")


@pytest.fixture(scope="module")
def intruder(stack) -> Project:  # type: ignore[no-untyped-def]
    return stack.project("auth-intruder")


@pytest.fixture(scope="module")
def owned(owner: Project) -> dict[str, Any]:
    """The owner's file and a finished job with checkpoints and artifacts, full of MARKER."""
    rows = [*bundled_instructions(), {"messages": [
        {"role": "user", "content": f"What is the {MARKER}?"},
        {"role": "assistant", "content": f"The {MARKER}."}]}]
    upload = owner.upload(rows, f"{MARKER}.jsonl")
    job = owner.create_job({
        "model": "tiny-llama", "training_file": upload["id"], "suffix": MARKER,
        "metadata": {"tag": MARKER},
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 1, "batch_size": 8, "save_steps": 1}}},
        "tuning": {"type": "lora", "r": 4, "alpha": 8}})
    done = owner.wait(job["id"], timeout=300)
    assert done["status"] == "succeeded", (done["error"], owner.event_messages(job["id"])[-10:])
    artifacts = owner.http.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts").json()["data"]
    checkpoint = owner.http.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"][0]
    ids = {"file_id": upload["id"], "job_id": job["id"],
           "name": "adapter/adapter_model.safetensors", "checkpoint_id": checkpoint["id"],
           "checkpoint_file": "adapter_model.safetensors", "model": done["fine_tuned_model"]}
    assert ids["name"] in {a["name"] for a in artifacts}
    export = owner.http.post(f"/v1/fine_tuning/jobs/{job['id']}/exports",
                             json={"format": "merged"}).json()
    deadline = time.monotonic() + 240
    while export["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, export
        time.sleep(0.5)
        export = owner.http.get(f"/v1/exports/{export['id']}").json()
    assert export["status"] == "succeeded", export
    ids |= {"export_id": export["id"], "export_file": "model/config.json"}
    webhook = owner.http.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook",
                                                    "description": MARKER})
    assert webhook.status_code == 200, webhook.text
    ids["webhook_id"] = webhook.json()["id"]
    # Strings that belong to the owner and that no refusal may echo.
    secrets = {MARKER, owner.key, done["organization_id"], upload["sha256"],
               *(a["sha256"] for a in artifacts + export["artifacts"])}
    return {"ids": ids, "secrets": secrets, "upload": upload, "job": done}


def _assert_nothing_leaks(response: httpx.Response, secrets: set[str], label: str) -> None:
    text = response.content.decode(errors="replace")
    for secret in secrets:
        assert secret not in text, (label, secret, text[:500])


def test_route_table_covers_every_v1_route(stack) -> None:  # type: ignore[no-untyped-def]
    schema = httpx.get(f"{stack.url}/openapi.json", timeout=30).json()
    served = {(method.upper(), re.sub(r"\{[^}]+\}", "{}", path))
              for path, operations in schema["paths"].items() if path.startswith("/v1/")
              for method in operations}
    covered = {(r.method, re.sub(r"\{[^}]+\}", "{}", r.path)) for r in ROUTES}
    assert served <= covered, f"routes without an auth check here: {sorted(served - covered)}"


def test_the_owner_reaches_every_read_route(stack, owner: Project, owned: dict) -> None:  # type: ignore[no-untyped-def]
    # The positive control: the ids are real, so the refusals below are about the key.
    for route in ROUTES:
        if route.method == "GET":
            response = _call(stack.url, route, dict(owner.http.headers), owned["ids"])
            assert response.status_code == 200, (route.label, response.text[:300])


@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Basic dXNlcjpwYXNzd29yZA==", "Token ts-abc", "ts-abc",
    "Bearer ts-not-a-key-of-anyone", "Bearer OWNER-KEY-WITHOUT-BEARER",
], ids=["none", "empty", "bearer-only", "basic", "token", "bare",
        "unknown-key", "key-as-scheme"])
def test_no_or_bad_key_is_401_everywhere(stack, owner: Project, owned: dict,  # type: ignore[no-untyped-def]
                                         header: str | None) -> None:
    if header == "Bearer OWNER-KEY-WITHOUT-BEARER":
        header = owner.key  # the right secret, but not as a bearer token
    headers = {} if header is None else {"Authorization": header}
    for route in ROUTES:
        response = _call(stack.url, route, headers, owned["ids"])
        error = _assert_error_shape(response, 401, route.label)
        assert error["type"] == "authentication_error", (route.label, error)
        _assert_nothing_leaks(response, owned["secrets"], route.label)


def test_revoked_key_is_401_everywhere(stack, owned: dict) -> None:  # type: ignore[no-untyped-def]
    holder = stack.project("auth-owner")  # a second key of the owner's own project
    assert holder.http.get("/v1/files").status_code == 200
    assert holder.http.get(f"/v1/files/{owned['ids']['file_id']}").status_code == 200
    assert run_cli(["keys", "revoke", holder.key[:10]], stack.env) == "revoked 1 key(s)"
    for route in ROUTES:
        response = _call(stack.url, route, dict(holder.http.headers), owned["ids"])
        _assert_error_shape(response, 401, route.label)
        _assert_nothing_leaks(response, owned["secrets"], route.label)
    with pytest.raises(RuntimeError, match="no active key"):  # already revoked: nothing to do
        run_cli(["keys", "revoke", holder.key[:10]], stack.env)


def test_another_projects_ids_are_404_and_leak_nothing(stack, owner: Project,  # type: ignore[no-untyped-def]
                                                      intruder: Project, owned: dict) -> None:
    ids = owned["ids"]
    missing = {"file_id": "file-000000000000000000000000",
               "job_id": "ftjob-000000000000000000000000", "name": ids["name"],
               "checkpoint_id": ids["checkpoint_id"], "checkpoint_file": ids["checkpoint_file"],
               "model": "ft:tiny-llama:proj-0:ftjob-000000000000000000000000",
               "export_id": "ftexp-000000000000000000000000", "export_file": ids["export_file"],
               "webhook_id": "wh-000000000000000000000000"}
    for route in ID_ROUTES:
        response = _call(stack.url, route, dict(intruder.http.headers), ids)
        error = _assert_error_shape(response, 404, route.label)
        assert error["type"] == "not_found_error", (route.label, error)
        _assert_nothing_leaks(response, owned["secrets"], route.label)
        # Indistinguishable from an id that exists nowhere: no oracle for other projects' ids.
        absent = _call(stack.url, route, dict(intruder.http.headers), missing)
        assert absent.status_code == 404, (route.label, absent.text)
        expected = absent.text
        for key in ("file_id", "job_id", "export_id", "webhook_id"):
            expected = expected.replace(missing[key], ids[key])
        assert response.text == expected, route.label
    # The refused delete, cancel, pause and resume changed nothing of the owner's.
    assert owner.http.get(f"/v1/files/{ids['file_id']}").json()["status"] == "processed"
    assert owner.job(ids["job_id"]) == owned["job"]


def test_another_projects_listings_and_create_see_nothing_of_the_owner(  # type: ignore[no-untyped-def]
        stack, intruder: Project, owned: dict) -> None:
    ids = owned["ids"]
    for route in OPEN_ROUTES:
        if route.body in ("job", "chat", "completion", "webhook"):
            continue
        response = _call(stack.url, route, dict(intruder.http.headers), ids)
        assert response.status_code == 200, (route.label, response.text[:300])
        _assert_nothing_leaks(response, owned["secrets"] | set(ids.values()) - {ids["name"]},
                              route.label)
    # Naming the owner's file in a job: refused exactly as a file that does not exist.
    job_route = next(r for r in OPEN_ROUTES if r.body == "job")
    response = _call(stack.url, job_route, dict(intruder.http.headers), ids)
    error = _assert_error_shape(response, 400, job_route.label)
    assert error["param"] == "training_file", error
    _assert_nothing_leaks(response, owned["secrets"], job_route.label)
    absent = _call(stack.url, job_route, dict(intruder.http.headers),
                   {**ids, "file_id": "file-000000000000000000000000"})
    assert response.text == absent.text.replace("file-000000000000000000000000", ids["file_id"])
    assert intruder.http.get("/v1/fine_tuning/jobs").json()["data"] == []
    # Naming the owner's fine-tuned model in a chat or completion: 404, as OpenAI answers.
    for route in OPEN_ROUTES:
        if route.body in ("chat", "completion"):
            response = _call(stack.url, route, dict(intruder.http.headers), ids)
            error = _assert_error_shape(response, 404, route.label)
            assert error["param"] == "model", error
            _assert_nothing_leaks(response, owned["secrets"], route.label)


def test_keys_are_stored_hashed(stack, owner: Project, intruder: Project) -> None:  # type: ignore[no-untyped-def]
    engine = sa.create_engine(stack.env["TUNESMITH_DATABASE_URL"])
    try:
        with engine.connect() as connection:
            rows = [dict(r._mapping) for r in connection.execute(sa.text("SELECT * FROM api_keys"))]
    finally:
        engine.dispose()
    stored = json.dumps(rows, default=str)
    hashes = {r["key_hash"] for r in rows}
    for key in (owner.key, intruder.key):
        assert key not in stored
        # Not the secret under another spelling either: only its first few characters show.
        assert key[10:] not in stored and key[3:20] not in stored
        assert hashlib.sha256(key.encode()).hexdigest() in hashes
    assert all(len(r["prefix"]) <= 12 for r in rows), rows
