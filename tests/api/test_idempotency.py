"""`Idempotency-Key`: a retried POST returns the first result; a reused key with another
body is refused, and neither creates a second row."""

import io

import sqlalchemy as sa


def _count(stack, table: str, project_name: str) -> int:  # type: ignore[no-untyped-def]
    engine = sa.create_engine(stack.env["TUNESMITH_DATABASE_URL"])
    with engine.connect() as connection:
        count = connection.execute(sa.text(
            f"SELECT count(*) FROM {table} t JOIN projects p ON p.id = t.project_id "
            "WHERE p.name = :name"), {"name": project_name}).scalar_one()
    engine.dispose()
    return count


def test_file_upload_retry_returns_the_first_file(stack) -> None:  # type: ignore[no-untyped-def]
    project = stack.project("idem-files")
    body = b'{"prompt": "a", "completion": "b"}\n'

    def upload(content: bytes, key: str):  # type: ignore[no-untyped-def]
        return project.http.post("/v1/files", headers={"Idempotency-Key": key},
                                 files={"file": ("d.jsonl", io.BytesIO(content))},
                                 data={"purpose": "fine-tune"})

    first, retry = upload(body, "upload-1"), upload(body, "upload-1")
    assert first.status_code == retry.status_code == 200
    assert first.json()["id"] == retry.json()["id"]
    assert _count(stack, "files", "idem-files") == 1
    other = upload(b'{"prompt": "x", "completion": "y"}\n', "upload-1")
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert other.json()["error"]["param"] == "Idempotency-Key"
    assert _count(stack, "files", "idem-files") == 1
    assert upload(body, "upload-2").json()["id"] != first.json()["id"]


def test_job_create_retry_returns_the_first_job(stack) -> None:  # type: ignore[no-untyped-def]
    project = stack.project("idem-jobs")
    upload = project.upload([{"prompt": "a", "completion": "b"}])
    # A queue no worker listens on: the job stays queued, nothing trains.
    spec = {"model": "tiny-llama", "training_file": upload["id"],
            "resources": {"gpu_class": "idle"}}
    headers = {"Idempotency-Key": "job-1"}
    first = project.http.post("/v1/fine_tuning/jobs", json=spec, headers=headers)
    retry = project.http.post("/v1/fine_tuning/jobs", json=spec, headers=headers)
    assert first.status_code == retry.status_code == 200
    assert first.json()["id"] == retry.json()["id"]
    changed = project.http.post("/v1/fine_tuning/jobs", json={**spec, "seed": 7},
                                headers=headers)
    assert changed.status_code == 409
    assert _count(stack, "jobs", "idem-jobs") == 1
    # Another project may use the same key for its own request.
    other = stack.project("idem-jobs-other")
    other_upload = other.upload([{"prompt": "a", "completion": "b"}])
    mine = other.http.post("/v1/fine_tuning/jobs", headers=headers,
                           json={**spec, "training_file": other_upload["id"]})
    assert mine.status_code == 200 and mine.json()["id"] != first.json()["id"]
    for client, job in ((project, first), (other, mine)):
        assert client.http.post(f"/v1/fine_tuning/jobs/{job.json()['id']}/cancel") \
            .status_code == 200


def test_a_refused_creation_frees_its_key(stack) -> None:  # type: ignore[no-untyped-def]
    # The key is claimed before the work; a request that fails releases it, so the retry is
    # answered on its merits (not "in progress" for ever) and a corrected request may use it.
    project = stack.project("idem-refused")
    upload = project.upload([{"prompt": "a", "completion": "b"}])
    headers = {"Idempotency-Key": "job-refused"}
    bad = {"model": "tiny-llama", "training_file": "file-000000000000000000000000",
           "resources": {"gpu_class": "idle"}}
    for _ in range(2):
        refused = project.http.post("/v1/fine_tuning/jobs", json=bad, headers=headers)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "training_file"
    fixed = project.http.post("/v1/fine_tuning/jobs", headers=headers,
                              json={**bad, "training_file": upload["id"]})
    assert fixed.status_code == 200, fixed.text
    assert _count(stack, "jobs", "idem-refused") == 1
    assert project.http.post(f"/v1/fine_tuning/jobs/{fixed.json()['id']}/cancel") \
        .status_code == 200
