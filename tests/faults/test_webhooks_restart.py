"""Webhooks survive restarts: a job ends while the API is down and its event is sent when
the API is back; the API and the worker restart while the receiver answers 500; once the
receiver recovers it gets `fine_tuning.job.succeeded`, `.failed` and `.cancelled`, each
validly signed, and the delivery log says delivered."""

import json
import signal
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from testbed.jobs import Project
from testbed.learning import bundled_instructions
from testbed.webhook_receiver import Receiver
from tests.faults.stack import FaultStack, wait_for

pytestmark = pytest.mark.timeout(900)

# Retries every 0.5-2 s for as long as the test keeps the receiver down. The API is killed
# at random points, mid-send too: a row it held is free again after one send's claim
# (timeout + 15 s), well inside the waits below.
STACK_ENV = {"TUNESMITH_WEBHOOK_MAX_ATTEMPTS": "1000", "TUNESMITH_WEBHOOK_TIMEOUT_SECONDS": "3"}

SFT = {"model": "tiny-llama",
       "method": {"type": "supervised", "supervised": {"hyperparameters": {
           "max_steps": 30, "batch_size": 4, "logging_steps": 1}}},
       "tuning": {"type": "lora", "r": 4, "alpha": 8}}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.down = True
    yield receiver
    receiver.close()


def _status(stack: FaultStack, job_id: str) -> str:
    """Read from the database itself: the API is down when this is asked."""
    engine = sa.create_engine(stack.env["TUNESMITH_DATABASE_URL"], poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text("SELECT status FROM jobs WHERE id = :id"),
                                      {"id": job_id}).scalar_one()
    finally:
        engine.dispose()


def _restart_api(stack: FaultStack) -> None:
    stack.api.start()  # the same port, so clients keep their URL
    wait_for(lambda: httpx.get(f"{stack.url}/healthz", timeout=1).status_code == 200,
             timeout=60, what="the API back")


def test_no_delivery_is_lost_across_restarts(fault_stack: FaultStack,
                                             receiver: Receiver) -> None:
    project: Project = fault_stack.project("hooks")
    endpoint = project.http.post("/v1/webhooks", json={"url": receiver.url}).json()
    secret = endpoint["secret"]

    # failed: a stored file the worker's reader refuses (as a file changed on disk would be).
    broken = project.upload(bundled_instructions(), "broken.jsonl")
    stored = fault_stack.home / "files" / f"{broken['id']}.jsonl"
    stored.write_bytes(stored.read_bytes() + b'\n{"text": "caf\\ud800"}\n')
    failed = project.create_job({**SFT, "training_file": broken["id"]})
    good = project.upload(bundled_instructions(), "good.jsonl")["id"]
    succeeded = project.create_job({**SFT, "training_file": good})
    cancelled = project.create_job({**SFT, "training_file": good})
    assert project.http.post(f"/v1/fine_tuning/jobs/{cancelled['id']}/cancel"
                             ).status_code == 200
    project.wait(failed["id"], {"failed"}, timeout=300)

    # The API goes down while the worker trains: the worker's status change writes the
    # outbox row, and nobody can send it yet.
    project.wait_for_step(succeeded["id"], 1, timeout=300)
    fault_stack.api.kill_group(signal.SIGKILL)
    wait_for(lambda: _status(fault_stack, succeeded["id"]) == "succeeded", timeout=300,
             what="the job to succeed while the API is down")
    # The worker restarts too, while the receiver keeps failing.
    fault_stack.workers["w1"].kill_group(signal.SIGKILL)
    fault_stack.start_worker("w1")
    _restart_api(fault_stack)

    types = {"fine_tuning.job.succeeded": succeeded["id"], "fine_tuning.job.failed":
             failed["id"], "fine_tuning.job.cancelled": cancelled["id"]}
    wait_for(lambda: all(len(receiver.of(t, secret)) >= 3 for t in types), timeout=120,
             what="three failed deliveries of each event")
    # And once more while deliveries are being retried.
    fault_stack.api.kill_group(signal.SIGKILL)
    _restart_api(fault_stack)
    receiver.down = False

    for event_type, job_id in types.items():
        delivered = wait_for(lambda t=event_type: [r for r in receiver.of(t, secret)
                                                   if r.answered == 200],
                             timeout=120, what=f"{event_type} delivered")
        payload = json.loads(delivered[0].body)
        assert payload["data"] == {"id": job_id}, payload
        attempts = receiver.of(event_type, secret)
        assert [r.answered for r in attempts].count(500) >= 3, attempts
        assert len({r.headers["webhook-id"] for r in attempts}) == 1

    log = project.http.get(f"/v1/webhooks/{endpoint['id']}/deliveries").json()["data"]
    assert sorted(entry["event"] for entry in log) == sorted(types), log
    for entry in log:
        assert entry["status"] == "delivered" and entry["last_status_code"] == 200, entry
        assert entry["attempts"] >= 4, entry
