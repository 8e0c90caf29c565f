"""A hub model on a worker that cannot reach the hub: the job fails within seconds as
`model_not_found` naming the model (not `internal` after ~47 s of retries), and the worker's
hub token appears nowhere: not in events, the error, the logs or the database."""

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from testbed.learning import bundled_instructions
from testbed.servers import free_port
from tests.faults.stack import FaultStack

pytestmark = pytest.mark.timeout(600)

TOKEN = "hf_tunesmithTestTokenNeverToBeSeen0123456789"
MODEL = "nobody-such/no-such-model"


def test_unreachable_hub_fails_fast_as_model_not_found(
        make_stack: Callable[..., FaultStack], tmp_path) -> None:  # type: ignore[no-untyped-def]
    closed = free_port()  # nothing listens there
    stack = make_stack({"TUNESMITH_ALLOW_HUB_DOWNLOADS": "true",
                        "HF_ENDPOINT": f"http://127.0.0.1:{closed}",
                        "HF_HUB_OFFLINE": "0",
                        "HF_HOME": str(tmp_path / "hf-home"),
                        "HF_TOKEN": TOKEN})
    project = stack.project("hub")
    file_id = project.upload(bundled_instructions(), "hub.jsonl")["id"]
    job = project.create_job({
        "model": MODEL, "training_file": file_id,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"max_steps": 2}}},
        "tuning": {"type": "lora", "r": 4, "alpha": 8}})
    done = project.wait(job["id"], timeout=300)

    assert done["status"] == "failed", done
    error = done["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model", error
    assert MODEL in error["message"] and "unreachable" in error["message"], error
    # From the claim to the failure: the training process starts (a few seconds on a
    # loaded machine) and the download fails at once. (On a loaded machine a first attempt
    # can lose its lease while the worker warms up; the attempt that ran is what counts.)
    events = project.events(job["id"])
    started = max(e["created_at"] for e in events if e["message"].startswith("Job started"))
    assert done["finished_at"] - started <= 15, [(e["created_at"], e["message"][:200])
                                                 for e in events]

    assert TOKEN not in str(project.events(job["id"]))
    assert TOKEN not in stack.api_log() and TOKEN not in stack.worker_log("w1")
    engine = sa.create_engine(stack.env["TUNESMITH_DATABASE_URL"], poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            tables = sa.inspect(connection).get_table_names()
            for table in tables:
                rows = connection.execute(sa.text(f'SELECT t::text FROM "{table}" t')).scalars()
                assert all(TOKEN not in row for row in rows), table
    finally:
        engine.dispose()
