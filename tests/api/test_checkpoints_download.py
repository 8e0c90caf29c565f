"""Every listed checkpoint downloads, file by file and as one `.tar.gz`, and so does every
artifact folder; what a client downloads names the base model as the user named it and loads
on a client that has the base under that name."""

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import AutoPeftModelForCausalLM, PeftModel
from transformers import AutoModelForCausalLM

from testbed.jobs import Project, train_and_wait
from testbed.learning import bundled_instructions

SAVE_STEPS = 2
STEPS = 14  # 16 rows, batch 8, 7 epochs: checkpoints at 2, 4, ..., 14
PICKLES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _unpack(body: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
        return {m.name: archive.extractfile(m).read()  # type: ignore[union-attr]
                for m in archive.getmembers() if m.isfile()}


@pytest.fixture(scope="module")
def job(project: Project) -> dict[str, Any]:
    file_id = project.upload(bundled_instructions(), "ckpt.jsonl")["id"]
    return train_and_wait(project, {
        "model": "tiny-llama", "training_file": file_id,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 7, "batch_size": 8, "learning_rate": 5e-3,
            "save_steps": SAVE_STEPS}}},
        "tuning": {"type": "lora", "r": 8, "alpha": 16}})


@pytest.fixture(scope="module")
def checkpoints(project: Project, job: dict[str, Any]) -> list[dict[str, Any]]:
    page = project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()
    return page["data"]


def test_newest_checkpoints_stay_listed(checkpoints: list[dict[str, Any]]) -> None:
    # The trainer rotates its own folders (two kept); the list keeps the newest five.
    assert [c["step_number"] for c in checkpoints] == list(range(STEPS, STEPS - 10, -2))


def test_every_listed_checkpoint_downloads_file_by_file_and_as_archive(
        project: Project, job: dict[str, Any], checkpoints: list[dict[str, Any]],
        stack: Any) -> None:
    for checkpoint in checkpoints:
        listing = project.http.get(checkpoint["files_url"])
        assert listing.status_code == 200, listing.text
        files = {f["name"]: f for f in listing.json()["data"]}
        assert {"adapter_model.safetensors", "adapter_config.json"} <= set(files), files
        assert not [n for n in files if n.endswith(PICKLES)], files
        downloaded = {}
        for name, entry in files.items():
            response = project.http.get(entry["url"])
            assert response.status_code == 200, (name, response.text)
            assert _sha(response.content) == entry["sha256"] == \
                response.headers["x-checksum-sha256"], name
            assert len(response.content) == entry["bytes"]
            downloaded[name] = response.content
        config = json.loads(downloaded["adapter_config.json"])
        assert config["base_model_name_or_path"] == "tiny-llama", config
        for name, body in downloaded.items():
            assert str(stack.root).encode() not in body, f"{name} holds a server path"

        archive = project.http.get(checkpoint["archive_url"])
        assert archive.status_code == 200, archive.text
        assert archive.headers["content-type"] == "application/gzip"
        top = f"{job['id']}-step-{checkpoint['step_number']}"
        unpacked = _unpack(archive.content)
        assert {n: _sha(b) for n, b in unpacked.items()} == \
            {f"{top}/{n}": f["sha256"] for n, f in files.items()}


def test_missing_checkpoint_and_file_answer_404(project: Project, job: dict[str, Any],
                                                checkpoints: list[dict[str, Any]],
                                                other_project: Project) -> None:
    base = f"/v1/fine_tuning/jobs/{job['id']}/checkpoints"
    for url in (f"{base}/ftckpt-0000/files", f"{base}/ftckpt-0000.tar.gz",
                f"{checkpoints[0]['files_url']}/optimizer.pt",
                f"{checkpoints[0]['files_url']}/../../artifacts/adapter/adapter_config.json"):
        response = project.http.get(url)
        assert response.status_code == 404, (url, response.text)
        assert response.json()["error"]["message"]
    assert other_project.http.get(checkpoints[0]["files_url"]).status_code == 404
    assert other_project.http.get(checkpoints[0]["archive_url"]).status_code == 404


def test_artifact_folder_downloads_as_one_archive(project: Project, job: dict[str, Any]) -> None:
    listed = {a["name"]: a["sha256"] for a in
              project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts").json()["data"]}
    response = project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts/adapter.tar.gz")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    assert {n: _sha(b) for n, b in _unpack(response.content).items()} == \
        {n: s for n, s in listed.items() if n.startswith("adapter/")}
    missing = project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts/nothing.tar.gz")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "name"


def test_adapter_names_the_model_as_the_user_did_and_loads_on_a_client(
        project: Project, job: dict[str, Any], stack: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = project.download_artifacts(job["id"], tmp_path / "download", "adapter/") / "adapter"
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-llama", config
    for path in folder.rglob("*"):
        if path.is_file():
            assert str(stack.root).encode() not in path.read_bytes(), path.name
    # A client that has the base model under the name the job used: a folder named like it
    # in its working directory, as `from_pretrained("tiny-llama")` finds it.
    client = tmp_path / "client"
    shutil.copytree(stack.tiny_model, client / "tiny-llama")
    monkeypatch.chdir(client)
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"])
        base_logits = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, str(folder))
        tuned_logits = tuned(input_ids=ids).logits
        # peft's one-call loader reads the base model's name from the adapter itself.
        auto = AutoPeftModelForCausalLM.from_pretrained(str(folder))
        auto_logits = auto(input_ids=ids).logits
    assert not torch.allclose(base_logits, tuned_logits, atol=1e-3)
    assert torch.allclose(tuned_logits, auto_logits, atol=1e-5)
