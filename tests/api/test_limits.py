"""Limits answer with clear errors and change nothing: rate, upload size, rows, queued jobs.

Each test starts a second API process with small limits on the session's database and
broker, so the limits bite without thousands of requests.
"""

import time

import httpx
import pytest
import sqlalchemy as sa

from testbed.jobs import Project
from testbed.servers import start_api


@pytest.fixture(scope="module")
def strict_api(stack, tmp_path_factory):  # type: ignore[no-untyped-def]
    env = {**stack.env, "TUNESMITH_RATE_LIMIT_PER_SECOND": "2", "TUNESMITH_RATE_LIMIT_BURST": "5",
           "TUNESMITH_MAX_UPLOAD_BYTES": "2000", "TUNESMITH_MAX_ROWS_PER_FILE": "3",
           "TUNESMITH_MAX_QUEUED_JOBS_PER_PROJECT": "1"}
    service, url = start_api(env, tmp_path_factory.mktemp("strict") / "api.log")
    yield url
    service.stop()


def _client(url: str, project: Project) -> httpx.Client:
    return httpx.Client(base_url=url, headers=project.http.headers, timeout=30)


def _file_count(stack) -> int:  # type: ignore[no-untyped-def]
    engine = sa.create_engine(stack.env["TUNESMITH_DATABASE_URL"])
    with engine.connect() as connection:
        count = connection.execute(sa.text("SELECT count(*) FROM files")).scalar_one()
    engine.dispose()
    return count


def test_requests_past_the_rate_get_429_with_retry_after(stack, strict_api) -> None:  # type: ignore[no-untyped-def]
    fast, calm = stack.project("rate-fast"), stack.project("rate-calm")
    with _client(strict_api, fast) as http:
        codes = [http.get("/v1/files").status_code for _ in range(12)]
        limited = http.get("/v1/files")
    assert codes[:5] == [200] * 5 and 429 in codes
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limited"
    with _client(strict_api, calm) as http:  # one key's flood does not limit another key
        assert http.get("/v1/files").status_code == 200
    time.sleep(1.5)  # the bucket refills at 2/s
    with _client(strict_api, fast) as http:
        assert http.get("/v1/files").status_code == 200


def test_one_key_is_one_bucket_however_its_header_is_spelt(stack, strict_api) -> None:  # type: ignore[no-untyped-def]
    # Keyed on the raw header, extra spaces after "Bearer" gave every request a fresh bucket.
    project = stack.project("rate-spelling")
    spellings = [f"{scheme}{' ' * spaces}{project.key}"
                 for spaces in range(1, 7) for scheme in ("Bearer", "bearer")]
    with httpx.Client(base_url=strict_api, timeout=30) as http:
        codes = [http.get("/v1/files", headers={"Authorization": spelling}).status_code
                 for spelling in spellings]
    assert codes[:5] == [200] * 5 and codes.count(429) >= 5, codes  # burst 5, 2/s
    time.sleep(1.5)


def test_upload_over_size_or_rows_is_refused_and_nothing_is_kept(stack, strict_api) -> None:  # type: ignore[no-untyped-def]
    project = stack.project("limits-upload")
    before = _file_count(stack)
    files_on_disk = set((stack.home / "files").iterdir())
    big = b'{"text": "' + b"x" * 3000 + b'"}\n'
    with _client(strict_api, project) as http:
        too_big = http.post("/v1/files", files={"file": ("big.jsonl", big)})
        time.sleep(0.6)
        rows = b"".join(b'{"text": "row %d"}\n' % i for i in range(5))
        too_many = http.post("/v1/files", files={"file": ("rows.jsonl", rows)})
    assert too_big.status_code == 413 and too_big.json()["error"]["param"] == "file"
    assert "2000 bytes" in too_big.json()["error"]["message"]
    assert too_many.status_code == 400 and "more than 3 rows" in too_many.json()["error"]["message"]
    assert _file_count(stack) == before
    assert set((stack.home / "files").iterdir()) == files_on_disk


def test_queued_jobs_per_project_are_capped(stack, strict_api) -> None:  # type: ignore[no-untyped-def]
    project = stack.project("limits-queue")
    upload = project.upload([{"prompt": "a", "completion": "b"}])
    # A GPU class no worker listens on keeps the job queued.
    spec = {"model": "tiny-llama", "training_file": upload["id"],
            "resources": {"gpu_class": "nowhere"}}
    with _client(strict_api, project) as http:
        first = http.post("/v1/fine_tuning/jobs", json=spec)
        time.sleep(0.6)
        second = http.post("/v1/fine_tuning/jobs", json=spec)
        assert first.status_code == 200, first.text
        assert second.status_code == 429 and second.headers["Retry-After"]
        assert second.json()["error"]["code"] == "too_many_queued_jobs"
        time.sleep(0.6)
        assert http.post(f"/v1/fine_tuning/jobs/{first.json()['id']}/cancel").status_code == 200


def test_metrics_expose_jobs_by_status_and_requests(stack, project) -> None:  # type: ignore[no-untyped-def]
    project.http.get("/v1/files")
    text = httpx.get(f"{stack.url}/metrics").text
    assert 'tunesmith_jobs{status=' in text
    assert 'tunesmith_http_requests_total{method="GET",route="/v1/files",status="200"}' in text


def test_metrics_without_a_key_show_no_project(stack, project) -> None:  # type: ignore[no-untyped-def]
    # /metrics needs no key (Prometheus scrapes it): it sums over every project, and names
    # no project, key, job or file, so a scraper learns nothing about any one tenant.
    upload = project.upload([{"prompt": "a", "completion": "b"}])
    job = project.create_job({"model": "tiny-llama", "training_file": upload["id"],
                              "metadata": {"tenant": "secret-label"},
                              "resources": {"gpu_class": "idle"}})
    project.http.get(f"/v1/fine_tuning/jobs/{job['id']}")
    text = httpx.get(f"{stack.url}/metrics").text
    for private in (project.name, project.key[:10], job["id"], upload["id"], "secret-label",
                    "proj-"):
        assert private not in text, private
    assert 'route="/v1/fine_tuning/jobs/{job_id}"' in text  # routes as templates, not ids
    assert project.http.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").status_code == 200
