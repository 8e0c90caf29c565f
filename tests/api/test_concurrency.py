"""Concurrent requests that race for one thing get one answer: one job per Idempotency-Key,
and never more queued jobs than the cap. Both raced before (500s on the unique constraint; 113
queued against a cap of 100).

Each test runs against a second API process with a small queued-jobs cap and no rate limit,
so 50 requests arrive at once: on the session's PostgreSQL and Redis, and as the embedded
default (SQLite, a broker on SQLite), whose locking differs.
"""

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from threading import Barrier
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from testbed.jobs import Project
from testbed.servers import start_api

CAP = 8


@dataclass
class CappedAPI:
    url: str
    env: dict[str, str]
    database_url: str

    def project(self, name: str) -> Project:
        return Project(self.url, self.env, name)


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def capped_api(request, stack, tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp(f"capped-{request.param}")
    env = {**stack.env, "TUNESMITH_RATE_LIMIT_PER_SECOND": "0",
           "TUNESMITH_MAX_QUEUED_JOBS_PER_PROJECT": str(CAP)}
    if request.param == "sqlite":  # the embedded default, the session's tiny model
        env = {k: v for k, v in env.items()
               if k not in ("TUNESMITH_DATABASE_URL", "TUNESMITH_BROKER_URL")}
        env.update({"TUNESMITH_HOME": str(root / "home"),
                    "TUNESMITH_MODELS_ROOT": str(stack.home / "models")})
        os.makedirs(root / "home")
    service, url = start_api(env, root / "api.log")
    database_url = env.get("TUNESMITH_DATABASE_URL") or f"sqlite:///{root / 'home'}/tunesmith.db"
    yield CappedAPI(url, env, database_url)
    service.stop()


def _jobs_of(api: CappedAPI, project: Project) -> list[tuple[str, str]]:
    engine = sa.create_engine(api.database_url)
    with engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT j.id, j.status FROM jobs j JOIN projects p ON p.id = j.project_id "
            "WHERE p.name = :name"), {"name": project.name}).all()
    engine.dispose()
    return [(row[0], row[1]) for row in rows]


def _all_at_once(api: CappedAPI, project: Project, count: int, spec: dict[str, Any],
                 headers: dict[str, str] | None = None) -> list[httpx.Response]:
    """`count` creations released together by a barrier, each on its own connection."""
    barrier = Barrier(count)

    def create(_: int) -> httpx.Response:
        with httpx.Client(base_url=api.url, headers=project.http.headers, timeout=120) as http:
            barrier.wait()
            return http.post("/v1/fine_tuning/jobs", json=spec, headers=headers or {})

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(create, range(count)))


def _spec(project: Project) -> dict[str, Any]:
    upload = project.upload([{"prompt": "a", "completion": "b"}])
    # A GPU class no worker listens on: the jobs stay queued, nothing trains.
    return {"model": "tiny-llama", "training_file": upload["id"],
            "resources": {"gpu_class": "nowhere"}}


def _cancel_all(project: Project, job_ids: list[str]) -> None:
    for job_id in job_ids:
        assert project.http.post(f"/v1/fine_tuning/jobs/{job_id}/cancel").status_code == 200


def test_concurrent_retries_with_one_idempotency_key_make_one_job(capped_api: CappedAPI) -> None:
    project = capped_api.project("race-idempotency")
    spec = _spec(project)
    responses = _all_at_once(capped_api, project, 20, spec, {"Idempotency-Key": "race-1"})
    codes = Counter(r.status_code for r in responses)
    assert set(codes) <= {200, 409}, [r.text for r in responses if r.status_code not in
                                      (200, 409)]
    bodies = [r.json() for r in responses if r.status_code == 200]
    assert bodies and all(body == bodies[0] for body in bodies)  # the same answer, byte for byte
    for late in (r for r in responses if r.status_code == 409):  # only "still in progress"
        assert late.json()["error"]["code"] == "idempotency_key_in_progress"
    assert [job_id for job_id, _ in _jobs_of(capped_api, project)] == [bodies[0]["id"]]
    # A retry after the race gets the same answer too.
    again = project.http.post("/v1/fine_tuning/jobs", json=spec,
                              headers={"Idempotency-Key": "race-1"})
    assert again.status_code == 200 and again.json() == bodies[0]
    _cancel_all(project, [bodies[0]["id"]])


def test_concurrent_creations_fill_the_queue_cap_exactly(capped_api: CappedAPI) -> None:
    project = capped_api.project("race-cap")
    spec = _spec(project)
    with httpx.Client(base_url=capped_api.url, headers=project.http.headers, timeout=60) as http:
        first = [http.post("/v1/fine_tuning/jobs", json=spec) for _ in range(CAP - 5)]
    assert all(r.status_code == 200 for r in first), [r.text for r in first]
    responses = _all_at_once(capped_api, project, 50, spec)  # 5 places left
    codes = Counter(r.status_code for r in responses)
    assert codes == {200: 5, 429: 45}, codes
    for refused in (r for r in responses if r.status_code == 429):
        assert refused.json()["error"]["code"] == "too_many_queued_jobs"
        assert refused.headers["Retry-After"]
    jobs = _jobs_of(capped_api, project)
    assert len(jobs) == CAP and all(status == "queued" for _, status in jobs)
    _cancel_all(project, [job_id for job_id, _ in jobs])
