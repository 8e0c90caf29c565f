"""`integrations`: one job reports to W&B (offline), a real MLflow server and TensorBoard
through the trainers' own callbacks; each run is read back with that tool's own reader.

A second worker serves the queue `gpu.tracking` with the operator's settings in its
environment (WANDB_MODE=offline, MLFLOW_TRACKING_URI): a job names only projects and runs."""

import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.learning import bundled_instructions
from testbed.servers import Service, free_port, wait_until

TRACKED = "tracking"  # the gpu_class (queue gpu.tracking) only the tracking worker serves


@pytest.fixture(scope="module")
def mlflow_url(stack) -> Iterator[str]:  # type: ignore[no-untyped-def]
    import httpx

    root = stack.root / "mlflow"
    root.mkdir()
    port = free_port()
    log = (root / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--default-artifact-root", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert server.poll() is None, (root / "server.log").read_text()[-3000:]
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, timeout=120, what="mlflow server")
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def tracking_worker(stack, mlflow_url: str) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    queue = f"{stack.env.get('TUNESMITH_QUEUE', 'gpu')}.{TRACKED}"
    env = {**stack.env, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "WANDB_DIR": str(stack.root / "wandb"), "MLFLOW_TRACKING_URI": mlflow_url}
    Path(env["WANDB_DIR"]).mkdir()
    log = stack.root / "worker-tracking.log"
    worker = Service(["worker", "--hostname", "tracking@%h", "--queues", queue], env,
                     log).start()
    try:
        wait_until(lambda: b" ready." in log.read_bytes(), timeout=90, what="tracking worker")
        yield env
    finally:
        worker.stop()


INTEGRATIONS = [
    {"type": "wandb", "wandb": {"project": "tunesmith-test", "name": "tracked-run",
                                "tags": ["ci", "lora"]}},
    {"type": "mlflow", "mlflow": {"experiment_name": "tunesmith-test", "run_name": "tracked"}},
    {"type": "tensorboard"},
]


@pytest.fixture(scope="module")
def tracked(project, tracking_worker: dict[str, str]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    upload = project.upload(bundled_instructions()[:16], "tracked.jsonl")
    job = project.create_job({
        "model": "tiny-llama", "training_file": upload["id"], "integrations": INTEGRATIONS,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 2, "batch_size": 4, "learning_rate": 5e-3, "logging_steps": 1}}},
        "tuning": {"type": "lora", "r": 4, "alpha": 8},
        "resources": {"gpu_class": TRACKED}})
    done = project.wait(job["id"], timeout=300)
    assert done["status"] == "succeeded", (done["error"], project.event_messages(job["id"]))
    return done


def test_job_object_shows_its_integrations(tracked: dict[str, Any]) -> None:
    # OpenAI's field holds what OpenAI's enum allows; ours holds all of them.
    assert tracked["integrations"] == [
        {"type": "wandb", "wandb": {**INTEGRATIONS[0]["wandb"], "entity": None}}]
    assert [i["type"] for i in tracked["tracking"]] == ["wandb", "mlflow", "tensorboard"]


def _wandb_records(path: Path) -> Iterator[bytes]:
    """The records of a .wandb transaction log (LevelDB's log format after a 7-byte header:
    32 KiB blocks of chunks, each `crc32 u32, length u16, type u8`; FULL=1 FIRST=2 MIDDLE=3
    LAST=4)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    offset, block, pending = 7, 32768, b""
    while offset + 7 <= len(data):
        left = block - offset % block
        if left < 7:
            offset += left
            continue
        _, length, kind = struct.unpack("<IHB", data[offset:offset + 7])
        chunk = data[offset + 7:offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            yield pending


def test_wandb_offline_run_has_the_training_loss(tracked: dict[str, Any],
                                                 tracking_worker: dict[str, str]) -> None:
    from wandb.proto import wandb_internal_pb2

    # One run, named by the job id; a second attempt (a lease lost under load) resumes it in
    # a second offline folder, so every folder of this run counts.
    logs = list(Path(tracking_worker["WANDB_DIR"]).glob(
        f"wandb/offline-run-*-{tracked['id']}/run-{tracked['id']}.wandb"))
    assert logs, list(Path(tracking_worker["WANDB_DIR"]).rglob("*"))
    losses, run = [], None
    for raw in (record for log in logs for record in _wandb_records(log)):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.HasField("run"):
            run = record.run
        if record.HasField("history"):
            items = {"/".join(i.nested_key) if i.nested_key else i.key: i.value_json
                     for i in record.history.item}
            if "train/loss" in items:
                losses.append(json.loads(items["train/loss"]))
    assert run is not None and run.project == "tunesmith-test"
    assert run.display_name == "tracked-run" and list(run.tags) == ["ci", "lora"]
    assert len(losses) >= 4 and all(loss > 0 for loss in losses), losses


def test_mlflow_run_has_the_loss_metric(tracked: dict[str, Any],
                                        tracking_worker: dict[str, str]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_worker["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("tunesmith-test")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_name for r in runs] == ["tracked"]
    assert runs[0].data.tags["tunesmith.job_id"] == tracked["id"]
    losses = [m.value for m in client.get_metric_history(runs[0].info.run_id, "loss")]
    assert len(losses) >= 4 and all(loss > 0 for loss in losses), losses
    assert runs[0].info.status == "FINISHED"


def test_tensorboard_events_are_artifacts_with_the_loss(project, tracked: dict[str, Any],  # type: ignore[no-untyped-def]
                                                        tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    listed = project.http.get(f"/v1/fine_tuning/jobs/{tracked['id']}/artifacts").json()["data"]
    events = [a["name"] for a in listed if a["name"].startswith("tensorboard/")]
    assert events and all("events.out.tfevents" in name for name in events), listed
    folder = project.download_artifacts(tracked["id"], tmp_path, prefix="tensorboard/")
    accumulator = EventAccumulator(str(folder / "tensorboard")).Reload()
    losses = [event.value for event in accumulator.Scalars("train/loss")]
    assert len(losses) >= 4 and all(loss > 0 for loss in losses), losses


def test_unknown_integration_is_refused_naming_the_field(project) -> None:  # type: ignore[no-untyped-def]
    upload = project.upload(bundled_instructions()[:4], "refused.jsonl")
    for integration, param in (({"type": "comet", "comet": {}}, "integrations[0]"),
                               ({"type": "wandb", "wandb": {}}, "integrations[0].wandb.project"),
                               ({"type": "mlflow", "mlflow": {"experiment_name": "e",
                                 "tracking_uri": "http://evil"}},
                                "integrations[0].mlflow.tracking_uri")):
        response = project.http.post("/v1/fine_tuning/jobs", json={
            "model": "tiny-llama", "training_file": upload["id"],
            "integrations": [integration]})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"].startswith(param), response.json()


def test_integration_the_worker_cannot_serve_fails_the_job_clearly(project) -> None:  # type: ignore[no-untyped-def]
    # The session's worker has no MLFLOW_TRACKING_URI: the job fails before training, saying so.
    upload = project.upload(bundled_instructions()[:4], "no-mlflow.jsonl")
    job = project.create_job({"model": "tiny-llama", "training_file": upload["id"],
                              "integrations": [{"type": "mlflow",
                                                "mlflow": {"experiment_name": "e"}}]})
    done = project.wait(job["id"], timeout=240)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "integration_unavailable", done["error"]
    assert done["error"]["param"] == "integrations"
    assert "MLFLOW_TRACKING_URI" in done["error"]["message"]
