"""Exports (DESIGN §8): after a LoRA job, a `merged` export loads with plain transformers and
gives base + adapter's logits; `gguf` exports load back with transformers' GGUF loader and
match the merged model (f16 by logits, q8_0 by greedy answers); bad requests are refused
naming the field and store nothing."""

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from testbed.jobs import Project, train_and_wait
from testbed.learning import bundled_instructions, greedy_answers, prompt_answer_ids

SAVE_STEPS = 10
LORA = {"model": "tiny-llama",
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 15, "batch_size": 8, "learning_rate": 5e-3,
            "save_steps": SAVE_STEPS}}},
        "tuning": {"type": "lora", "r": 16, "alpha": 32}, "suffix": "ship"}


def _wait_export(project: Project, export_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        export = project.http.get(f"/v1/exports/{export_id}").json()
        if export["status"] in ("succeeded", "failed", "cancelled"):
            return export
        time.sleep(0.5)
    raise TimeoutError(f"export {export_id} still {export['status']}")


def _export(project: Project, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
    response = project.http.post(f"/v1/fine_tuning/jobs/{job_id}/exports", json=body)
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["object"] == "fine_tuning.export" and created["id"].startswith("ftexp-")
    assert created["status"] in ("queued", "running", "succeeded"), created
    return created


def _download(project: Project, export: dict[str, Any], target: Path) -> Path:
    """Every listed file, each checked against its sha256."""
    listing = project.http.get(f"/v1/exports/{export['id']}/artifacts").json()["data"]
    assert listing and listing == [{"object": "fine_tuning.export.artifact", **a}
                                   for a in export["artifacts"]]
    for entry in listing:
        body = project.http.get(entry["url"]).content
        assert hashlib.sha256(body).hexdigest() == entry["sha256"], entry["name"]
        assert len(body) == entry["bytes"]
        (target / entry["name"]).parent.mkdir(parents=True, exist_ok=True)
        (target / entry["name"]).write_bytes(body)
    return target


@pytest.fixture(scope="module")
def job(project: Project) -> dict[str, Any]:
    file_id = project.upload(bundled_instructions(), "ship.jsonl")["id"]
    return train_and_wait(project, {**LORA, "training_file": file_id})


@pytest.fixture(scope="module")
def exports(project: Project, job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """All four exports queued at once, then waited for."""
    bodies = {"merged": {"format": "merged"},
              "f16": {"format": "gguf"},
              "q8_0": {"format": "gguf", "quantization": "q8_0"},
              "checkpoint": {"format": "merged", "checkpoint": SAVE_STEPS}}
    created = {k: _export(project, job["id"], b) for k, b in bodies.items()}
    return {k: _wait_export(project, e["id"]) for k, e in created.items()}


@pytest.fixture(scope="module")
def merged(project: Project, exports: dict[str, dict[str, Any]],
           tmp_path_factory: pytest.TempPathFactory) -> Path:
    export = exports["merged"]
    assert export["status"] == "succeeded", export["error"]
    return _download(project, export, tmp_path_factory.mktemp("merged")) / "model"


def _logits(model: Any, tokenizer: Any) -> torch.Tensor:
    rows = bundled_instructions()
    prompt, answer = prompt_answer_ids(tokenizer, rows[0])
    with torch.no_grad():
        return model(input_ids=torch.tensor([prompt + answer])).logits[0]


def test_merged_export_loads_alone_and_equals_base_plus_adapter(
        project: Project, job: dict[str, Any], merged: Path, stack: Any,
        tmp_path: Path) -> None:
    names = {p.name for p in merged.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names, names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl"))], names
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    assert json.loads((merged / "config.json").read_text())["_name_or_path"] == "tiny-llama"
    tokenizer = AutoTokenizer.from_pretrained(merged)
    assert "<|assistant|>" in tokenizer.chat_template  # the template the tiny model trains with
    for path in merged.iterdir():
        assert str(stack.root).encode() not in path.read_bytes(), path.name

    adapter = project.download_artifacts(job["id"], tmp_path, "adapter/") / "adapter"
    base = AutoModelForCausalLM.from_pretrained(stack.root / "home" / "models" / "tiny-llama",
                                                dtype=torch.float32)
    base_logits = _logits(base, tokenizer)
    tuned = PeftModel.from_pretrained(base, str(adapter))
    expected = _logits(tuned, tokenizer)
    got = _logits(model, tokenizer)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (got - base_logits).abs().max() > 1e-2  # the adapter moved it: not the base


def test_merged_folder_downloads_as_one_archive(project: Project,
                                                exports: dict[str, dict[str, Any]]) -> None:
    export = exports["merged"]
    response = project.http.get(f"/v1/exports/{export['id']}/artifacts/model.tar.gz")
    assert response.status_code == 200, response.text
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        files = {m.name: hashlib.sha256(archive.extractfile(m).read()).hexdigest()  # type: ignore[union-attr]
                 for m in archive.getmembers() if m.isfile()}
    assert files == {a["name"]: a["sha256"] for a in export["artifacts"]}


def test_gguf_f16_logits_match_the_merged_model(project: Project, merged: Path,
                                                exports: dict[str, dict[str, Any]],
                                                tmp_path: Path) -> None:
    export = exports["f16"]
    assert export["status"] == "succeeded", export["error"]
    assert [a["name"] for a in export["artifacts"]] == ["model-f16.gguf"]
    folder = _download(project, export, tmp_path)
    gguf = AutoModelForCausalLM.from_pretrained(folder, gguf_file="model-f16.gguf",
                                                dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    reference = _logits(AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32),
                        tokenizer)
    got = _logits(gguf, tokenizer)
    relative = ((got - reference).abs().max() / reference.abs().max()).item()
    assert relative < 1e-2, relative
    # The file carries the tokenizer too: transformers rebuilds the same one from it.
    from_gguf = AutoTokenizer.from_pretrained(folder, gguf_file="model-f16.gguf")
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi there!"}],
                                         tokenize=False, add_generation_prompt=True)
    assert from_gguf(text).input_ids == tokenizer(text).input_ids


def test_gguf_q8_0_gives_the_merged_models_greedy_answers(
        project: Project, merged: Path, exports: dict[str, dict[str, Any]],
        tmp_path: Path) -> None:
    export = exports["q8_0"]
    assert export["status"] == "succeeded", export["error"]
    folder = _download(project, export, tmp_path)
    assert (folder / "model-q8_0.gguf").stat().st_size < \
        0.7 * (merged / "model.safetensors").stat().st_size / 2  # 8-bit, not 16-bit
    tokenizer = AutoTokenizer.from_pretrained(merged)
    rows = bundled_instructions()
    assert len(rows) == 16
    reference = greedy_answers(AutoModelForCausalLM.from_pretrained(merged), tokenizer, rows)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file="model-q8_0.gguf",
                                                     dtype=torch.float32)
    assert greedy_answers(quantized, tokenizer, rows) == reference


def test_checkpoint_export_merges_that_checkpoint(
        project: Project, job: dict[str, Any], exports: dict[str, dict[str, Any]],
        merged: Path, tmp_path: Path) -> None:
    export = exports["checkpoint"]
    assert export["status"] == "succeeded", export["error"]
    assert export["checkpoint"] == SAVE_STEPS
    folder = _download(project, export, tmp_path) / "model"
    tokenizer = AutoTokenizer.from_pretrained(merged)
    early = _logits(AutoModelForCausalLM.from_pretrained(folder), tokenizer)
    final = _logits(AutoModelForCausalLM.from_pretrained(merged), tokenizer)
    assert (early - final).abs().max() > 1e-3  # step 10 of 30, not the final weights


def test_exports_are_listed_and_other_projects_see_none(
        project: Project, other_project: Project, job: dict[str, Any],
        exports: dict[str, dict[str, Any]]) -> None:
    listed = project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/exports").json()
    assert {e["id"] for e in exports.values()} <= {e["id"] for e in listed["data"]}
    export = exports["merged"]
    for path in (f"/v1/exports/{export['id']}", f"/v1/exports/{export['id']}/artifacts",
                 f"/v1/exports/{export['id']}/artifacts/model/config.json",
                 f"/v1/fine_tuning/jobs/{job['id']}/exports"):
        assert other_project.http.get(path).status_code == 404, path
    response = project.http.post(f"/v1/exports/{export['id']}/cancel")
    assert response.status_code == 409 and response.json()["error"]["param"] == "export_id"
    assert project.http.get(f"/v1/exports/{export['id']}/artifacts/nothing").status_code == 404


def _stopped_job(project: Project, spec: dict[str, Any]) -> str:
    """A job created and cancelled at once: no training needed to ask for its export."""
    job = project.create_job(spec)
    project.http.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    return project.wait(job["id"])["id"]


def test_bad_requests_name_the_field_and_store_nothing(
        project: Project, job: dict[str, Any], stack: Any) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = stack.root / "home" / "models" / "tiny-gpt2"
    if not (gpt2 / "config.json").is_file():
        GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=1000)) \
            .save_pretrained(gpt2)
        AutoTokenizer.from_pretrained(stack.root / "home" / "models" / "tiny-llama") \
            .save_pretrained(gpt2)
    file_id = project.upload(bundled_instructions(), "bad.jsonl")["id"]
    base = {"training_file": file_id, "method": {"type": "supervised"}}
    prompt_job = _stopped_job(project, {**base, "model": "tiny-llama",
                                        "tuning": {"type": "prompt"}})
    gpt2_job = _stopped_job(project, {**base, "model": "tiny-gpt2", "tuning": {"type": "full"}})
    lora_job = _stopped_job(project, {**base, "model": "tiny-llama", "tuning": {"type": "lora"}})

    stored = len(project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/exports").json()["data"])
    cases = [
        (job["id"], {"format": "onnx"}, 400, "format"),
        (job["id"], {}, 400, "format"),
        (job["id"], {"format": "merged", "quantization": "q8_0"}, 400, "quantization"),
        (job["id"], {"format": "gguf", "quantization": "q4_k"}, 400, "quantization"),
        (job["id"], {"format": "merged", "checkpoint": 9999}, 400, "checkpoint"),
        (job["id"], {"format": "merged", "checkpoint": "20"}, 400, "checkpoint"),
        (job["id"], {"format": "merged", "dtype": "bf16"}, 400, "dtype"),
        (prompt_job, {"format": "merged"}, 400, "format"),
        (gpt2_job, {"format": "gguf"}, 400, "format"),
        (lora_job, {"format": "merged"}, 409, "job_id"),
        ("ftjob-000000000000000000000000", {"format": "merged"}, 404, "job_id"),
    ]
    for job_id, body, status, param in cases:
        response = project.http.post(f"/v1/fine_tuning/jobs/{job_id}/exports", json=body)
        assert response.status_code == status, (body, response.text)
        error = response.json()["error"]
        assert error["param"] == param, (body, error)
        assert status != 400 or error["message"].startswith(f"{param}:"), error
    refused = project.http.post(f"/v1/fine_tuning/jobs/{job['id']}/exports", content=b"[1")
    assert refused.status_code == 400
    after = project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/exports").json()["data"]
    assert len(after) == stored
    for job_id in (prompt_job, gpt2_job, lora_job):
        listed = project.http.get(f"/v1/fine_tuning/jobs/{job_id}/exports").json()
        assert listed["data"] == [], listed
    assert project.http.get("/v1/exports/ftexp-nothing").status_code == 404


def _ship_it_blocks() -> tuple[list[str], str]:
    """README "Ship it": its curl commands (continuations joined, comments cut) and its
    Python example, read from the README so the two cannot drift."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Ship it", 1)[1].split("\n## ", 1)[0]
    bash = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0]
    python = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    lines = (re.sub(r"\s+#\s.*$", "", line).strip()
             for line in re.sub(r"\\\n\s*", " ", bash).splitlines())
    return [line for line in lines if line], python


def test_readme_ship_it_examples_run(project: Project, job: dict[str, Any], stack: Any,
                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands, python = _ship_it_blocks()
    create, poll, download = (c.replace("http://127.0.0.1:8000", stack.url) for c in commands)
    env = {**os.environ, "KEY": project.key, "JOB": job["id"]}

    def run(command: str) -> str:
        result = subprocess.run(["bash", "-c", command], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (command, result.stderr[-2000:])
        return result.stdout

    env["EXPORT"] = json.loads(run(create))["id"]
    deadline = time.monotonic() + 240
    while (export := json.loads(run(poll)))["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, export
        time.sleep(0.5)
    assert export["status"] == "succeeded", export["error"]
    run(download)
    sha = hashlib.sha256((tmp_path / "model-q8_0.gguf").read_bytes()).hexdigest()
    assert sha == export["artifacts"][0]["sha256"]

    monkeypatch.chdir(tmp_path)
    exec(python.replace("http://127.0.0.1:8000", stack.url),  # the README's own example
         {"KEY": project.key, "job": SimpleNamespace(id=job["id"])})
    with tarfile.open(tmp_path / "model.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert model.config.model_type == "llama"


def test_an_export_whose_weights_are_gone_fails_saying_why(
        project: Project, job: dict[str, Any], stack: Any) -> None:
    listed = project.http.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
    # Not the checkpoint the export above merged (listing keeps the newest few, so the
    # oldest listed one may be that one).
    oldest = min((c for c in listed if c["step_number"] != SAVE_STEPS),
                 key=lambda c: c["step_number"])
    folder = stack.root / "home" / "jobs" / job["id"] / "listed_checkpoints"
    for path in folder.glob(f"step-{oldest['step_number']}/adapter_model.safetensors"):
        path.unlink()
    export = _export(project, job["id"], {"format": "merged",
                                          "checkpoint": oldest["step_number"]})
    export = _wait_export(project, export["id"])
    assert export["status"] == "failed" and export["artifacts"] == [], export
    assert export["error"]["code"] == "export_failed" and export["error"]["message"], export
    assert project.http.get(f"/v1/exports/{export['id']}/artifacts").json()["data"] == []


def test_cancel_stops_a_queued_or_running_export_and_keeps_nothing(
        project: Project, job: dict[str, Any]) -> None:
    export = _export(project, job["id"], {"format": "gguf"})
    response = project.http.post(f"/v1/exports/{export['id']}/cancel")
    if response.status_code == 409:  # the worker was quicker than this request
        assert _wait_export(project, export["id"])["status"] == "succeeded"
        return
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    time.sleep(3)  # a worker that was already writing it finishes and discards its files
    final = project.http.get(f"/v1/exports/{export['id']}").json()
    assert final["status"] == "cancelled" and final["artifacts"] == [], final


def test_an_export_whose_worker_died_is_run_again(project: Project, job: dict[str, Any],
                                                  stack: Any) -> None:
    """A running export whose lease ran out (its worker died mid-write) is requeued by the
    API's reaper and finished by a live worker."""
    import sqlalchemy as sa

    export_id = f"ftexp-{int(time.time() * 1000):012x}deadbeef0000"
    engine = sa.create_engine(stack.env["TUNESMITH_DATABASE_URL"])
    try:
        with engine.begin() as connection:
            project_id = connection.execute(sa.text("SELECT project_id FROM jobs WHERE id = :j"),
                                            {"j": job["id"]}).scalar_one()
            connection.execute(sa.text(
                "INSERT INTO exports (id, project_id, job_id, format, status, artifacts, "
                "worker_id, lease_expires_at, attempt, created_at, started_at) VALUES "
                "(:id, :p, :j, 'merged', 'running', '[]', 'gone-host:1', :lease, 1, :t, :t)"),
                {"id": export_id, "p": project_id, "j": job["id"], "lease": time.time() - 1,
                 "t": int(time.time())})
    finally:
        engine.dispose()
    export = _wait_export(project, export_id)
    assert export["status"] == "succeeded", export
    assert {a["name"] for a in export["artifacts"]} >= {"model/config.json",
                                                        "model/model.safetensors"}


def test_qlora_merges_onto_the_full_precision_base(project: Project, stack: Any,
                                                   tmp_path: Path) -> None:
    file_id = project.upload(bundled_instructions(), "qlora.jsonl")["id"]
    qlora = train_and_wait(project, {
        "model": "tiny-llama", "training_file": file_id,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 2, "batch_size": 8, "learning_rate": 5e-3}}},
        "tuning": {"type": "qlora", "r": 8, "alpha": 16}})
    export = _wait_export(project, _export(project, qlora["id"], {"format": "merged"})["id"])
    assert export["status"] == "succeeded", export["error"]
    merged = _download(project, export, tmp_path / "export") / "model"
    adapter = project.download_artifacts(qlora["id"], tmp_path / "job", "adapter/") / "adapter"
    tokenizer = AutoTokenizer.from_pretrained(merged)
    base = AutoModelForCausalLM.from_pretrained(stack.root / "home" / "models" / "tiny-llama",
                                                dtype=torch.float32)
    expected = _logits(PeftModel.from_pretrained(base, str(adapter)), tokenizer)
    got = _logits(AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32), tokenizer)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
