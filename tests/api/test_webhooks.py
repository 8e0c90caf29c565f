"""Webhook endpoints over the running API: created with a secret shown once, listed, read,
deleted; bad input refused naming the field; a job's end sent signed to a receiver on
127.0.0.1 that fails three times first, with every attempt in the delivery log."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook

from testbed.jobs import Project
from testbed.learning import bundled_instructions
from testbed.servers import wait_until
from testbed.webhook_receiver import Receiver

EVENTS = ["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(fail_first=3)
    yield receiver
    receiver.close()


def _create(project: Project, body: dict[str, Any]) -> dict[str, Any]:
    response = project.http.post("/v1/webhooks", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _refused(project: Project, body: Any, param: str | None) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = project.http.post("/v1/webhooks", content=raw,
                                 headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    return error["message"]


def test_endpoints_are_created_listed_read_and_deleted(project: Project,
                                                       other_project: Project) -> None:
    created = _create(project, {"url": "http://127.0.0.1:9/a", "description": "ci"})
    assert created["object"] == "webhook_endpoint"
    assert created["events"] == EVENTS  # every event unless a filter is given
    assert created["secret"].startswith("whsec_")
    Webhook(created["secret"])  # a secret the Standard Webhooks library takes

    filtered = _create(project, {"url": "https://127.0.0.1:9/b",
                                 "events": ["fine_tuning.job.failed"]})
    assert filtered["events"] == ["fine_tuning.job.failed"]

    listed = project.http.get("/v1/webhooks").json()
    ids = [e["id"] for e in listed["data"]]
    assert created["id"] in ids and filtered["id"] in ids
    read = project.http.get(f"/v1/webhooks/{created['id']}").json()
    assert read["url"] == "http://127.0.0.1:9/a" and read["description"] == "ci"
    # The secret is shown once, in the create answer only.
    assert "secret" not in read and all("secret" not in e for e in listed["data"])

    # Another project sees none of it.
    assert other_project.http.get(f"/v1/webhooks/{created['id']}").status_code == 404
    assert other_project.http.delete(f"/v1/webhooks/{created['id']}").status_code == 404
    assert created["id"] not in [e["id"] for e in other_project.http.get("/v1/webhooks")
                                 .json()["data"]]

    deleted = project.http.delete(f"/v1/webhooks/{created['id']}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert project.http.get(f"/v1/webhooks/{created['id']}").status_code == 404
    assert project.http.get(f"/v1/webhooks/{created['id']}/deliveries").status_code == 404
    project.http.delete(f"/v1/webhooks/{filtered['id']}")


def test_bad_endpoints_are_refused_naming_the_field(project: Project) -> None:
    before = project.http.get("/v1/webhooks").json()["data"]
    assert "http" in _refused(project, {"url": "ftp://127.0.0.1/x"}, "url")
    _refused(project, {"url": "file:///etc/passwd"}, "url")
    _refused(project, {"url": "http:///nohost"}, "url")
    _refused(project, {"url": 5}, "url")
    _refused(project, {}, "url")
    assert "fine_tuning.job.paused" in _refused(
        project, {"url": "http://127.0.0.1:9/", "events": ["fine_tuning.job.paused"]}, "events")
    _refused(project, {"url": "http://127.0.0.1:9/", "events": []}, "events")
    _refused(project, {"url": "http://127.0.0.1:9/", "secret": "whsec_mine"}, "secret")
    _refused(project, {"url": "http://127.0.0.1:9/", "description": "x" * 513}, "description")
    _refused(project, b'{"url": "http://127.0.0.1:9/",', None)
    _refused(project, b"[]", None)
    # Nothing was created by any of them.
    assert project.http.get("/v1/webhooks").json()["data"] == before


def test_a_cancelled_job_is_sent_signed_after_three_failures(project: Project,
                                                             other_project: Project,
                                                             receiver: Receiver) -> None:
    endpoint = _create(project, {"url": receiver.url})
    # An endpoint of another project, and one of this project listening to other events,
    # get nothing.
    other = Receiver()
    elsewhere = _create(other_project, {"url": other.url})
    only_failed = _create(project, {"url": other.url, "events": ["fine_tuning.job.failed"]})
    try:
        file_id = project.upload(bundled_instructions(), "webhooks.jsonl")["id"]
        job = project.create_job({
            "model": "tiny-llama", "training_file": file_id,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {
                "n_epochs": 3, "batch_size": 8}}},
            "tuning": {"type": "lora", "r": 4, "alpha": 8}})
        cancel = project.http.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
        assert cancel.status_code == 200, cancel.text
        project.wait(job["id"], {"cancelled"}, timeout=120)

        signed = wait_until(lambda: [r for r in receiver.of("fine_tuning.job.cancelled",
                                                             endpoint["secret"])
                                     if r.answered == 200], timeout=60,
                            what="the cancelled event, delivered")
        assert len(signed) == 1
        attempts = receiver.of("fine_tuning.job.cancelled", endpoint["secret"])
        assert [r.answered for r in attempts] == [500, 500, 500, 200]
        # One event, retried under one id: the receiver can drop duplicates by it.
        assert len({r.headers["webhook-id"] for r in attempts}) == 1
        payload = json.loads(signed[0].body)
        assert payload["object"] == "event" and payload["id"].startswith("evt_")
        assert payload["type"] == "fine_tuning.job.cancelled"
        assert payload["data"] == {"id": job["id"]}
        assert isinstance(payload["created_at"], int)
        assert signed[0].headers["webhook-id"] == payload["id"]

        log = project.http.get(f"/v1/webhooks/{endpoint['id']}/deliveries").json()["data"]
        assert len(log) == 1, log
        entry = log[0]
        assert entry["event"] == "fine_tuning.job.cancelled"
        assert entry["event_id"] == payload["id"]
        assert entry["status"] == "delivered" and entry["attempts"] == 4, entry
        assert entry["last_status_code"] == 200 and entry["delivered_at"] is not None
        assert entry["next_attempt_at"] is None
        assert other.requests == []
        assert project.http.get(f"/v1/webhooks/{only_failed['id']}/deliveries"
                                ).json()["data"] == []
    finally:
        other.close()
        other_project.http.delete(f"/v1/webhooks/{elsewhere['id']}")
        for item in project.http.get("/v1/webhooks").json()["data"]:
            project.http.delete(f"/v1/webhooks/{item['id']}")
