"""The event stream as a client meets it: a reconnect resumes after `Last-Event-ID` with
nothing repeated or lost, the stream ends when the job pauses or its key is revoked, pages and
stream are strict JSON when metrics are NaN or infinite, and a malformed cursor is a 400."""

import math
import threading
import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from testbed.jobs import Project, wait_succeeded
from testbed.learning import bundled_instructions
from testbed.servers import run_cli
from testbed.sse import Message, messages, open_stream, strict_loads
from tests.conftest import Stack
from tunesmith.db.models import JobEvent
from tunesmith.jobs.events import add_event


def spec(file_id: str, **hyperparameters: Any) -> dict[str, Any]:
    return {"model": "tiny-llama", "training_file": file_id,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {
                "batch_size": 1, "learning_rate": 5e-3, "logging_steps": 1,
                **hyperparameters}}},
            "tuning": {"type": "lora", "r": 8, "alpha": 16}}


@pytest.fixture(scope="module")
def file_id(project: Project) -> str:
    return project.upload(bundled_instructions(), "stream.jsonl")["id"]


@pytest.fixture(scope="module")
def finished(project: Project, file_id: str) -> str:
    """A job that ran 8 steps, each logged: a dozen or more events."""
    return wait_succeeded(project, project.create_job(spec(file_id, max_steps=8))["id"])["id"]


def read_all(http: httpx.Client, job_id: str, headers: dict[str, str] | None = None,
             **params: str) -> list[Message]:
    with open_stream(http, job_id, headers, **params) as response:
        assert response.status_code == 200, response.read()
        return list(messages(response))


def event_ids(stream: list[Message]) -> list[str]:
    assert stream[-1].data == "[DONE]", stream[-3:]
    return [m.id for m in stream[:-1] if m.id is not None]


def test_a_reconnect_resumes_after_last_event_id_without_repeats(
        project: Project, finished: str) -> None:
    everything = event_ids(read_all(project.http, finished))
    assert everything == [e["id"] for e in project.events(finished)]
    assert len(everything) >= 10
    for k in (0, len(everything) // 2, len(everything) - 2):
        header = {"Last-Event-ID": everything[k]}
        assert event_ids(read_all(project.http, finished, header)) == everything[k + 1:]
        # `after` in the URL does the same; the header (what EventSource sends when it
        # reconnects to the URL it first opened) wins over it.
        assert event_ids(read_all(project.http, finished, after=everything[k])) == \
            everything[k + 1:]
        assert event_ids(read_all(project.http, finished, header, after=everything[0])) == \
            everything[k + 1:]
    last = {"Last-Event-ID": everything[-1]}
    assert event_ids(read_all(project.http, finished, last)) == []


def test_a_stream_dropped_mid_job_resumes_and_ends_when_the_job_pauses(
        project: Project, file_id: str) -> None:
    job_id = project.create_job(spec(file_id, n_epochs=10))["id"]
    project.wait_for_step(job_id, 2)
    with open_stream(project.http, job_id) as response:  # the connection drops after 4
        first: list[Message] = []
        for message in messages(response):
            first.append(message)
            if len(first) == 4:
                break
    resumed: list[Message] = []

    def follow() -> None:
        with open_stream(project.http, job_id, {"Last-Event-ID": first[-1].id or ""}) as r:
            resumed.extend(messages(r))

    follower = threading.Thread(target=follow)
    follower.start()
    try:
        deadline = time.monotonic() + 30
        while not resumed and time.monotonic() < deadline:  # the resumed stream is open
            time.sleep(0.1)
        assert project.http.post(f"/v1/fine_tuning/jobs/{job_id}/pause").status_code == 200
        follower.join(timeout=90)
        assert not follower.is_alive(), "the stream stayed open on a paused job"
        assert project.job(job_id)["status_detail"] == "paused"  # status: OpenAI's enum
        ids = [m.id for m in first] + event_ids(resumed)
        assert ids == [e["id"] for e in project.events(job_id)]  # none lost, none twice
        assert strict_loads(resumed[-2].data)["data"]["status"] == "paused"
    finally:
        project.http.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
        follower.join(timeout=90)


def test_a_stream_ends_when_its_key_is_revoked(stack: Stack, file_id: str) -> None:
    owner = stack.project("revoked-streams")
    data = owner.upload(bundled_instructions(), "revoke.jsonl")["id"]
    job_id = owner.create_job(spec(data, n_epochs=10))["id"]
    received: list[Message] = []
    ended = threading.Event()

    def follow() -> None:
        with open_stream(owner.http, job_id) as response:
            for message in messages(response):
                received.append(message)
        ended.set()

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    try:
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert received, "the stream sent nothing"
        assert run_cli(["keys", "revoke", owner.key[:10]], stack.env) == "revoked 1 key(s)"
        revoked_at = time.monotonic()
        assert ended.wait(timeout=15), "the stream went on after its key was revoked"
        assert time.monotonic() - revoked_at < 5
        assert received[-1].event == "error"
        assert strict_loads(received[-1].data)["error"]["code"] == "invalid_api_key"
    finally:
        stack.project("revoked-streams").http.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")


def test_events_are_strict_json_when_metrics_are_not_finite(
        stack: Stack, project: Project, finished: str) -> None:
    before = project.events(finished)[-1]["id"]
    engine = sa.create_engine(stack.env["TUNESMITH_DATABASE_URL"])
    try:
        with Session(engine) as session:  # what the worker's callback writes on a NaN step
            event = add_event(session, finished, "step 9", type="metrics", data={
                "step": 9, "train_loss": math.nan, "valid_loss": math.inf,
                "curve": [1.0, -math.inf], "nested": {"grad_norm": math.nan, "lr": 0.001}})
            session.commit()
            stored = session.scalar(sa.select(JobEvent.data).where(JobEvent.seq == event.seq))
    finally:
        engine.dispose()
    expected = {"step": 9, "train_loss": None, "valid_loss": None, "curve": [1.0, None],
                "nested": {"grad_norm": None, "lr": 0.001}}
    assert stored == expected  # stored so, not only shown so
    page = project.http.get(f"/v1/fine_tuning/jobs/{finished}/events", params={"limit": 1})
    assert page.status_code == 200
    assert strict_loads(page.text)["data"][0]["data"] == expected
    stream = read_all(project.http, finished, {"Last-Event-ID": before})
    assert [m.json["data"] for m in stream[:-1]] == [expected]
    assert stream[-1].data == "[DONE]"


@pytest.mark.parametrize("cursor", ["ftevent-²", "ftevent-٣", "ftevent-" + "9" * 30,
                                    "ftevent--1", "ftevent-", "ftevent-1 ", "abc"])
def test_a_malformed_event_cursor_is_a_400_naming_it(
        project: Project, finished: str, cursor: str) -> None:
    url = f"/v1/fine_tuning/jobs/{finished}/events"
    for params in ({"after": cursor}, {"after": cursor, "stream": "true"}):
        response = project.http.get(url, params=params)
        assert response.status_code == 400, (params, response.text)
        assert response.json()["error"]["param"] == "after"
    if cursor.isascii() and cursor.strip() == cursor:
        response = project.http.get(url, params={"stream": "true"},
                                    headers={"Last-Event-ID": cursor})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "Last-Event-ID"


def test_an_event_level_outside_openais_is_refused_where_it_is_written() -> None:
    with pytest.raises(ValueError, match="'warning'"):
        add_event(Session(), "ftjob-x", "m", level="warning")  # type: ignore[arg-type]
