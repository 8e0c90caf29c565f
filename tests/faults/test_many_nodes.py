"""Many nodes: the API and two workers, each with its own empty home folder, sharing only
PostgreSQL, Redis and an S3-compatible store (a real SeaweedFS started here).

Everything a user uploads or a job writes goes through the store: upload, train, checkpoint,
download, delete; no node keeps anything in its home but scratch. A worker killed with -9
mid-job: the other one, which never saw the job, resumes it from the checkpoint in the store.
"""

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.jobs import Project
from testbed.learning import bundled_instructions
from testbed.seaweedfs import SeaweedFS
from testbed.servers import FAST_RECOVERY, start_api, start_backing_servers, start_worker
from tests.faults.evidence import checkpoint_steps, claims, loss_by_step
from tests.faults.stack import FaultStack, wait_for

pytestmark = pytest.mark.timeout(900)

PREFIX = "nodes"
NODES = ("api", "w1", "w2")
SFT: dict[str, Any] = {
    "model": "tiny-llama",
    "method": {"type": "supervised", "supervised": {"hyperparameters": {
        "max_steps": 12, "batch_size": 8, "learning_rate": 3e-3, "save_steps": 4,
        "logging_steps": 1}}},
    "tuning": {"type": "lora", "r": 16, "alpha": 32},
    "seed": 7,
}


class Nodes(FaultStack):
    store: SeaweedFS
    homes: dict[str, Path]


@pytest.fixture(scope="module")
def nodes(tiny_model_source: Path) -> Iterator[Nodes]:
    root = Path(tempfile.mkdtemp(prefix="tunesmith-nodes-"))
    os.chmod(root, 0o755)  # the postgres user must reach its data folder inside
    store = SeaweedFS(root / "store").start()
    models = root / "models"  # read-only input every node has (a model is not an output)
    shutil.copytree(tiny_model_source, models / "tiny-llama")
    stack: Nodes | None = None
    try:
        postgres, redis, env = start_backing_servers(root, {
            **FAST_RECOVERY, **store.env(PREFIX), "TUNESMITH_MODELS_ROOT": str(models),
            "TUNESMITH_MAX_ATTEMPTS": "3",
            # Three nodes of training share the test machine's cores: a 10 s lease expired
            # under load before any kill; 30 s still shows a resume within the test's time.
            "TUNESMITH_LEASE_SECONDS": "30",
            # Every weight file of the tiny model goes up in a multipart upload.
            "TUNESMITH_S3_MULTIPART_BYTES": str(256 * 1024)})
        homes = {node: root / f"home-{node}" for node in NODES}
        api, url = start_api({**env, "TUNESMITH_HOME": str(homes["api"])}, root / "api.log")
        stack = Nodes(root, {**env, "TUNESMITH_HOME": str(homes["api"])}, postgres, redis,
                      api, url)
        stack.store, stack.homes = store, homes
        for name in ("w1", "w2"):
            stack.workers[name] = start_worker({**env, "TUNESMITH_HOME": str(homes[name])},
                                               root / f"worker-{name}.log", name=name)
        yield stack
    finally:
        if stack is not None:
            stack.close()
        store.stop()
        if not os.environ.get("TUNESMITH_KEEP_TEST_DIR"):
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def project(nodes: Nodes) -> Project:
    return nodes.project("nodes")


def outside_scratch(home: Path) -> list[str]:
    """Files a node wrote to its home anywhere but its scratch folder."""
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")
                  if p.is_file() and p.relative_to(home).parts[0] != "scratch")


def test_upload_train_checkpoint_download_delete_through_the_store(
        nodes: Nodes, project: Project, tmp_path: Path) -> None:
    upload = project.upload(bundled_instructions(), "instructions.jsonl")
    assert f"{PREFIX}/files/{upload['id']}.jsonl" in nodes.store.keys(f"{PREFIX}/files")
    job = project.create_job({**SFT, "training_file": upload["id"]})
    done = project.wait(job["id"], timeout=400)
    assert done["status"] == "succeeded", done["error"]
    keys = nodes.store.keys(f"{PREFIX}/jobs/{job['id']}")
    names = {k.removeprefix(f"{PREFIX}/jobs/{job['id']}/") for k in keys}
    assert "artifacts/adapter/adapter_model.safetensors" in names, names
    assert "checkpoints/checkpoint-12/trainer_state.json" in names, names
    assert "listed_checkpoints/step-12.files.json" in names, names
    # The job has ended: the node that ran it keeps its log in the store and clears its
    # scratch (its checkpoints would otherwise fill a GPU node's disk, job after job).
    def cleared() -> bool:
        stored = nodes.store.keys(f"{PREFIX}/jobs/{job['id']}")
        return f"{PREFIX}/jobs/{job['id']}/train.log" in stored and not any(
            (nodes.homes[node] / "scratch" / "jobs" / job["id"]).exists()
            for node in ("w1", "w2"))

    wait_for(cleared, timeout=30, what="the log in the store and the job's scratch cleared")

    # Checkpoints: the listing, each file (sha256 as listed) and the folder as a .tar.gz.
    listed = project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
    assert sorted(c["step_number"] for c in listed) == [4, 8, 12]
    base = f"/v1/fine_tuning/jobs/{job['id']}/checkpoints/{listed[0]['id']}"
    files = project.http.get(f"{base}/files").json()["data"]
    assert any(f["name"] == "adapter_model.safetensors" for f in files)
    for entry in files:
        body = project.http.get(entry["url"]).content
        assert hashlib.sha256(body).hexdigest() == entry["sha256"], entry["name"]
    archive = project.http.get(f"{base}.tar.gz")
    assert archive.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        packed = {m.name.split("/", 1)[1]: tar.extractfile(m).read()  # type: ignore[union-attr]
                  for m in tar.getmembers()}
    assert {f["name"] for f in files} == set(packed)
    assert all(hashlib.sha256(packed[f["name"]]).hexdigest() == f["sha256"] for f in files)

    # Artifacts, file by file (sha256 checked) and as one archive; the results CSV.
    folder = project.download_artifacts(job["id"], tmp_path / "artifacts") / "adapter"
    assert (folder / "adapter_config.json").is_file()
    tar_gz = project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts/adapter.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(tar_gz.content), mode="r:gz") as tar:
        assert "adapter/adapter_model.safetensors" in tar.getnames()
    results = project.http.get(f"/v1/files/{done['result_files'][0]}/content")
    assert results.status_code == 200 and results.text.startswith("step,")

    # Delete: the bytes leave the store.
    assert project.http.delete(f"/v1/files/{upload['id']}").json()["deleted"] is True
    assert f"{PREFIX}/files/{upload['id']}.jsonl" not in nodes.store.keys(f"{PREFIX}/files")

    for node in NODES:
        assert outside_scratch(nodes.homes[node]) == [], node
    # The API spools an upload in scratch only until it is in the store.
    assert not [p for p in (nodes.homes["api"] / "scratch").rglob("*") if p.is_file()]


def test_killed_worker_job_resumes_on_the_other_node_from_the_store(
        nodes: Nodes, project: Project, tmp_path: Path) -> None:
    upload = project.upload(bundled_instructions(), "instructions.jsonl")
    spec = {**SFT, "training_file": upload["id"], "method": {"type": "supervised",
            "supervised": {"hyperparameters": {
                **SFT["method"]["supervised"]["hyperparameters"], "max_steps": 40,
                "save_steps": 5}}}}
    job = project.create_job(spec)
    def two_checkpoints() -> bool:
        if (status := project.job(job["id"])["status"]) in ("failed", "cancelled", "succeeded"):
            raise RuntimeError(f"job {status}: {project.event_messages(job['id'])[-10:]}")
        return len(checkpoint_steps(project.events(job["id"]))) >= 2

    # Generous: seven helpers share this 2-core machine.
    wait_for(two_checkpoints, timeout=600, what="two checkpoints", interval=0.2)
    events = project.events(job["id"])
    # The node running it: the one whose pool process holds the newest claim ("vm:<pid>").
    pid = int(claims(events)[-1]["message"].rsplit(":", 1)[1])
    parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    first = next(n for n in ("w1", "w2") if nodes.workers[n].pid == parent)
    other = "w2" if first == "w1" else "w1"
    # What the other node has on its scratch (a loaded machine may have given it the job
    # once already): the checkpoint it resumes from must not be among them.
    local = nodes.homes[other] / "scratch" / "jobs" / job["id"] / "checkpoints"
    had = {p.name for p in local.glob("checkpoint-*")}
    nodes.workers[first].kill_group()
    checkpoint_at_kill = max(checkpoint_steps(events))
    killed = time.monotonic()
    done = project.wait(job["id"], timeout=400)
    events = project.events(job["id"])
    messages = [e["message"] for e in events]
    assert done["status"] == "succeeded", (done["error"], messages[-20:])
    assert done["attempt"] >= 2
    assert len(claims(events)) == done["attempt"], messages
    assert claims(events)[-1]["message"] != f"Job started on vm:{pid}", messages
    resumed = [e for e in events if e["message"].startswith("Resuming from checkpoint-")]
    assert resumed, messages  # (more than one where a loaded machine lost a lease too)
    step = resumed[-1]["data"]["resume_from_step"]
    assert step >= checkpoint_at_kill
    # The checkpoint it resumed from was written by the killed node: it came from the store.
    assert f"checkpoint-{step}" not in had, (step, had)
    losses = loss_by_step(events)
    assert sorted(losses) == list(range(1, 41))
    after = [losses[s] for s in range(step + 1, step + 4)]
    before = [losses[s] for s in range(step - 2, step + 1)]
    start = [losses[s] for s in range(1, 4)]
    # Not trained again from the start (the kill may come early: the first checkpoints)...
    assert sum(after) / 3 < 0.85 * sum(start) / 3, (start, before, after)
    # ...but on from where it stopped.
    assert abs(sum(after) - sum(before)) / 3 < 0.25 * sum(start) / 3, (before, after)
    folder = project.download_artifacts(done["id"], tmp_path / "resumed") / "adapter"
    assert (folder / "adapter_model.safetensors").is_file()
    print(f"\nkilled {first} after checkpoint {checkpoint_at_kill}; {other} resumed from "
          f"step {step} and finished in {time.monotonic() - killed:.1f} s")
    for node in ("api", other):
        assert outside_scratch(nodes.homes[node]) == [], node


def test_merged_export_of_a_job_trained_elsewhere_downloads_through_the_api(
        nodes: Nodes, project: Project) -> None:
    """The worker that exports fetches the adapter from the store, puts the merged folder
    there, and the API (its home empty) streams it: a file and the folder as a .tar.gz."""
    upload = project.upload(bundled_instructions(), "instructions.jsonl")
    spec = {**SFT, "training_file": upload["id"], "method": {"type": "supervised",
            "supervised": {"hyperparameters": {
                **SFT["method"]["supervised"]["hyperparameters"], "max_steps": 4}}}}
    job = project.create_job(spec)
    done = project.wait(job["id"], timeout=400)
    assert done["status"] == "succeeded", done["error"]
    # No node keeps the result on local disk: the exporting worker must fetch it.
    for node in ("w1", "w2"):
        shutil.rmtree(nodes.homes[node] / "scratch" / "jobs" / job["id"], ignore_errors=True)
    created = project.http.post(f"/v1/fine_tuning/jobs/{job['id']}/exports",
                                json={"format": "merged"})
    assert created.status_code == 200, created.text
    export_id = created.json()["id"]
    export = wait_for(lambda: (e := project.http.get(f"/v1/exports/{export_id}").json())
                      ["status"] not in ("queued", "running") and e, timeout=400,
                      what="the export", interval=1)
    assert export["status"] == "succeeded", export["error"]
    keys = nodes.store.keys(f"{PREFIX}/jobs/{job['id']}/exports/{export_id}")
    listed = project.http.get(f"/v1/exports/{export_id}/artifacts").json()["data"]
    assert {f"{PREFIX}/jobs/{job['id']}/exports/{export_id}/{a['name']}" for a in listed} \
        == set(keys)
    weights = next(a for a in listed if a["name"] == "model/model.safetensors")
    body = project.http.get(weights["url"])
    assert body.status_code == 200
    assert hashlib.sha256(body.content).hexdigest() == weights["sha256"]
    archive = project.http.get(f"/v1/exports/{export_id}/artifacts/model.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        packed = {m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                  for m in tar.getmembers()}
    assert {f"model/{a['name'].removeprefix('model/')}" for a in listed} == set(packed)
    assert all(hashlib.sha256(packed[a["name"]]).hexdigest() == a["sha256"] for a in listed)
    for node in NODES:
        assert outside_scratch(nodes.homes[node]) == [], node
