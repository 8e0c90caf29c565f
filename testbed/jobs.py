"""Talking to a running API the way a user's script would."""

import io
import json
import time
from pathlib import Path
from typing import Any

import httpx

from testbed.servers import run_cli

TERMINAL = {"succeeded", "failed", "cancelled"}


class Project:
    """A project's API key and an HTTP client that sends it."""

    def __init__(self, url: str, env: dict[str, str], name: str) -> None:
        self.name = name
        self.key = run_cli(["keys", "create", "--project", name], env)
        self.http = httpx.Client(base_url=url, timeout=30,
                                 headers={"Authorization": f"Bearer {self.key}"})

    def upload(self, rows: list[dict[str, Any]] | bytes, name: str = "data.jsonl") -> dict:
        content = rows if isinstance(rows, bytes) else \
            "\n".join(json.dumps(r) for r in rows).encode()
        response = self.http.post("/v1/files", files={"file": (name, io.BytesIO(content))},
                                  data={"purpose": "fine-tune"})
        assert response.status_code == 200, response.text
        return response.json()

    def create_job(self, spec: dict[str, Any]) -> dict:
        response = self.http.post("/v1/fine_tuning/jobs", json=spec)
        assert response.status_code == 200, response.text
        return response.json()

    def job(self, job_id: str) -> dict:
        response = self.http.get(f"/v1/fine_tuning/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait(self, job_id: str, statuses: set[str] = TERMINAL, timeout: float = 240) -> dict:
        """Wait for one of `statuses`: OpenAI's `status` or our finer `status_detail`
        (paused, pausing, cancelling)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in statuses or job.get("status_detail") in statuses:
                return job
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} still {job['status']} after {timeout}s; events:\n"
                           + "\n".join(self.event_messages(job_id)[-30:]))

    def wait_for_step(self, job_id: str, step: int, timeout: float = 120) -> dict:
        """The job once its trainer has logged `step` (it is then mid-training)."""
        deadline = time.monotonic() + timeout
        while ((job := self.job(job_id))["progress"] or {}).get("step", 0) < step:
            assert time.monotonic() < deadline, self.event_messages(job_id)[-10:]
            time.sleep(0.1)
        return job

    def events(self, job_id: str) -> list[dict]:
        """Every event, oldest first."""
        events, after = [], None
        while True:
            params = {"limit": 1000, **({"after": after} if after else {})}
            page = self.http.get(f"/v1/fine_tuning/jobs/{job_id}/events", params=params).json()
            events += page["data"]
            if not page["has_more"]:
                return list(reversed(events))
            after = page["data"][-1]["id"]

    def event_messages(self, job_id: str) -> list[str]:
        return [e["message"] for e in self.events(job_id)]

    def losses(self, job_id: str) -> list[float]:
        return [e["data"]["loss"] for e in self.events(job_id)
                if e["type"] == "metrics" and "loss" in (e["data"] or {})]

    def download_artifacts(self, job_id: str, target: Path, prefix: str = "") -> Path:
        """Download every artifact (under `prefix`) into target, checking each sha256."""
        import hashlib

        listing = self.http.get(f"/v1/fine_tuning/jobs/{job_id}/artifacts").json()["data"]
        assert listing, f"job {job_id} has no artifacts"
        for artifact in listing:
            if not artifact["name"].startswith(prefix):
                continue
            body = self.http.get(artifact["url"]).content
            assert hashlib.sha256(body).hexdigest() == artifact["sha256"], artifact["name"]
            path = target / artifact["name"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        return target


def wait_succeeded(project: Project, job_id: str, timeout: float = 300) -> dict:
    done = project.wait(job_id, timeout=timeout)
    assert done["status"] == "succeeded", (done["error"], project.event_messages(job_id)[-15:])
    return done


def train_and_wait(project: Project, spec: dict[str, Any], timeout: float = 300) -> dict:
    return wait_succeeded(project, project.create_job(spec)["id"], timeout)
