"""An export whose broker message is lost still runs: the API's reaper sends it again.

The only worker is stopped, an export is created (its message waits in Redis), the queue is
purged (what a broker restarted without persistence does), and the worker comes back: it
finds nothing to take until the reaper sees the queued export unclaimed, its message gone,
and sends it again. It runs once and succeeds.
"""

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from testbed.learning import bundled_instructions
from tests.faults.stack import FaultStack, wait_for

pytestmark = pytest.mark.timeout(900)
SFT: dict[str, Any] = {
    "model": "tiny-llama",
    "method": {"type": "supervised", "supervised": {"hyperparameters": {
        "max_steps": 3, "batch_size": 8, "learning_rate": 3e-3}}},
    "tuning": {"type": "lora", "r": 8, "alpha": 16},
}


def test_export_whose_message_was_purged_still_finishes(
        make_stack: Callable[..., FaultStack]) -> None:
    stack = make_stack()
    project = stack.project("exports")
    file_id = project.upload(bundled_instructions())["id"]
    job = project.wait(project.create_job({**SFT, "training_file": file_id})["id"], timeout=400)
    assert job["status"] == "succeeded", job["error"]
    stack.workers["w1"].stop()

    created = project.http.post(f"/v1/fine_tuning/jobs/{job['id']}/exports",
                                json={"format": "merged"})
    assert created.status_code == 200, created.text
    export_id = created.json()["id"]
    broker = redis.Redis.from_url(stack.redis.url)
    queue = stack.env.get("TUNESMITH_QUEUE", "gpu")
    assert any(export_id.encode() in m for m in broker.lrange(queue, 0, -1))
    broker.delete(queue)  # the message is lost
    purged_at = time.monotonic()
    assert not any(export_id.encode() in m for m in broker.lrange(queue, 0, -1))

    stack.start_worker("w1")
    export = wait_for(lambda: (e := project.http.get(f"/v1/exports/{export_id}").json())
                      ["status"] not in ("queued", "running") and e, timeout=400,
                      what="the export", interval=1)
    assert export["status"] == "succeeded", export["error"]
    assert any(a["name"] == "model/model.safetensors" for a in
               project.http.get(f"/v1/exports/{export_id}/artifacts").json()["data"])
    # Nothing but the reaper sends an export's message again: its message was gone.
    print(f"\nexport finished {time.monotonic() - purged_at:.1f} s after its message was purged")
    broker.close()
