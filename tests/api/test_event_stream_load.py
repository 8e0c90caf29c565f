"""Open event streams cost other tenants nothing: with 50 streams open on one key (the cap,
set to 50 here) another project's requests answer and no stream holds a database connection;
stream 51 is refused with 429; and an open stream does not hold up a shutdown.

A stack of its own (PostgreSQL, Redis, APIs without a worker, so jobs stay queued and their
streams stay open), since these tests set the cap and stop APIs.
"""

import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from testbed.jobs import Project
from testbed.learning import bundled_instructions
from testbed.servers import (
    FAST_RECOVERY,
    Postgres,
    Service,
    run_cli,
    start_api,
    start_backing_servers,
)
from testbed.sse import Message, messages, open_stream
from testbed.stack import Servers

CAP = 50


@pytest.fixture(scope="module")
def quiet_stack() -> Iterator[Servers]:
    root = Path(tempfile.mkdtemp(prefix="tunesmith-streams-"))
    os.chmod(root, 0o755)  # the postgres user must reach its data folder inside
    postgres, redis, env = start_backing_servers(
        root, {**FAST_RECOVERY, "TUNESMITH_MAX_EVENT_STREAMS_PER_KEY": str(CAP),
               "TUNESMITH_RATE_LIMIT_PER_SECOND": "0"})
    try:
        run_cli(["tiny-model"], env)
        api, url = start_api(env, root / "api.log")
        yield Servers(root, env, postgres, redis, api, url)
        api.stop()
    finally:
        redis.stop()
        postgres.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def queued_job(project: Project) -> str:
    """A job no worker takes: its stream stays open until it is cancelled."""
    file_id = project.upload(bundled_instructions())["id"]
    return project.create_job({"model": "tiny-llama", "training_file": file_id,
                               "tuning": {"type": "lora"}})["id"]


def connections(postgres: Postgres, state: str | None = None) -> int:
    engine = sa.create_engine(postgres.url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            return connection.scalar(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                + (" AND state = :state" if state else "")), {"state": state})
    finally:
        engine.dispose()


def test_fifty_streams_on_one_key_leave_other_projects_and_the_pool_alone(
        quiet_stack: Servers) -> None:
    noisy, quiet = quiet_stack.project("noisy"), quiet_stack.project("quiet")
    job_id = queued_job(noisy)
    queued_job(quiet)
    streams: list[list[Message]] = [[] for _ in range(CAP)]
    client = httpx.Client(base_url=quiet_stack.url, headers=noisy.http.headers,
                          limits=httpx.Limits(max_connections=CAP + 5))

    def follow(i: int) -> None:
        with open_stream(client, job_id) as response:
            assert response.status_code == 200
            streams[i].extend(messages(response))

    followers = [threading.Thread(target=follow, args=(i,), daemon=True) for i in range(CAP)]
    for follower in followers:
        follower.start()
    try:
        deadline = time.monotonic() + 60
        while not all(streams) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(streams), f"{sum(map(bool, streams))} of {CAP} streams opened"

        refused = noisy.http.get(f"/v1/fine_tuning/jobs/{job_id}/events",
                                 params={"stream": "true"})
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) > 0
        assert f"{CAP} event streams open" in refused.json()["error"]["message"]

        # Another project, 40 requests, 8 at a time: more than the pool would have left if
        # each stream held a connection (20 + 30 overflow, 30 s to wait for one).
        def list_jobs(_: int) -> int:
            return quiet.http.get("/v1/fine_tuning/jobs", timeout=10).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(list_jobs, range(40))) == {200}
        # A stream that held its request's session would sit "idle in transaction".
        assert connections(quiet_stack.postgres, "idle in transaction") == 0
        assert connections(quiet_stack.postgres) < CAP

        cancelled = noisy.http.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200
        for follower in followers:
            follower.join(timeout=30)
        assert not any(f.is_alive() for f in followers), "streams stayed open after cancel"
        for stream in streams:
            assert stream[-1].data == "[DONE]"
            assert stream[-2].json["data"]["status"] == "cancelled"
        # Every slot is given back: the key opens streams again.
        with open_stream(noisy.http, job_id) as response:
            assert response.status_code == 200
            assert list(messages(response))[-1].data == "[DONE]"
    finally:
        noisy.http.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
        client.close()


def _seconds_to_stop(api: Service, url: str, project: Project, job_id: str | None
                     ) -> tuple[float, float | None]:
    """SIGTERM to the API, with a stream of `job_id` open (or none): seconds until the
    process exits, and until the stream ends."""
    stream_ended: list[float] = []
    opened = threading.Event()

    def follow() -> None:
        try:
            with open_stream(httpx.Client(base_url=url, headers=project.http.headers),
                             job_id or "") as response:
                for _ in messages(response):
                    opened.set()
        except httpx.HTTPError:  # the server went away mid-stream: ended all the same
            pass
        stream_ended.append(time.monotonic())

    follower = threading.Thread(target=follow, daemon=True)
    if job_id:
        follower.start()
        assert opened.wait(timeout=30), "the stream sent nothing"
    assert api.process is not None
    sent = time.monotonic()
    os.killpg(api.pid, signal.SIGTERM)
    api.process.wait(timeout=60)
    exited = time.monotonic() - sent
    if not job_id:
        return exited, None
    follower.join(timeout=30)
    return exited, stream_ended[0] - sent if stream_ended else None


def test_an_open_stream_does_not_hold_up_a_shutdown(quiet_stack: Servers) -> None:
    project = quiet_stack.project("shutdown")
    job_id = queued_job(project)
    api, url = start_api(quiet_stack.env, quiet_stack.root / "api-baseline.log")
    baseline, _ = _seconds_to_stop(api, url, project, None)
    api, url = start_api(quiet_stack.env, quiet_stack.root / "api-streaming.log")
    with_stream, stream_ended = _seconds_to_stop(api, url, project, job_id)
    print(f"shutdown: {baseline=:.2f} {with_stream=:.2f} {stream_ended=}")
    assert stream_ended is not None and stream_ended < with_stream + 0.5
    assert with_stream - baseline < 1.0, (baseline, with_stream)
    project.http.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
