"""The embedded default: `tunesmith serve` alone (SQLite, a broker on SQLite, one local worker
child), no PostgreSQL, no Redis. Upload -> LoRA job -> succeeded -> adapter that learned."""

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from testbed.jobs import Project
from testbed.learning import answer_token_accuracy, bundled_instructions
from testbed.servers import Service, run_cli, start_api, wait_until

LORA_SFT = {
    "model": "tiny-llama",
    "method": {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 30, "batch_size": 8, "learning_rate": 5e-3}}},
    "tuning": {"type": "lora", "r": 16, "alpha": 32},
}


def _group_members(pgid: int) -> list[str]:
    """Live processes of a process group (zombies excluded), as "pid cmdline"."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            members.append(f"{stat.parent.name} {cmdline}")
    return members


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("embedded")
    env = {k: v for k, v in os.environ.items()
           if k not in ("TUNESMITH_DATABASE_URL", "TUNESMITH_BROKER_URL")}
    env.update({"TUNESMITH_HOME": str(root / "home"), "TUNESMITH_ALLOW_HUB_DOWNLOADS": "false",
                "PYTHONUNBUFFERED": "1"})
    run_cli(["tiny-model"], env)
    api, url = start_api(env, root / "serve.log", worker=True)
    try:
        yield {"root": root, "env": env, "api": api, "url": url}
    finally:
        stop_group(api)


def stop_group(service: Service) -> None:
    """Stop serve and every process it started (the cleanup, whatever a test did)."""
    if service.process is None:
        return
    pgid = service.process.pid
    service.stop()  # SIGTERM to the group, SIGKILL after 20 s
    if _group_members(pgid):
        os.killpg(pgid, signal.SIGKILL)


@pytest.fixture(scope="module")
def trained(embedded: dict[str, Any], tmp_path_factory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    project = Project(embedded["url"], embedded["env"], "embedded")
    rows = bundled_instructions()
    upload = project.upload(rows, "instructions.jsonl")
    job = project.create_job({**LORA_SFT, "training_file": upload["id"]})
    done = project.wait(job["id"], timeout=400)
    folder = project.download_artifacts(job["id"], tmp_path_factory.mktemp("adapter"))
    return {"project": project, "job": done, "rows": rows, "folder": folder}


def test_it_runs_on_sqlite_with_no_server_urls(embedded: dict[str, Any]) -> None:
    home = Path(embedded["env"]["TUNESMITH_HOME"])
    assert "TUNESMITH_DATABASE_URL" not in embedded["env"]
    assert "TUNESMITH_BROKER_URL" not in embedded["env"]
    # serve migrated the database itself; keys work against that same file.
    assert (home / "tunesmith.db").is_file()
    assert (home / "models" / "tiny-llama" / "config.json").is_file()
    # One local worker runs as serve's child, in its process group.
    members = _group_members(embedded["api"].pid)
    assert any(" worker " in f" {m} " for m in members), members


def test_lora_job_succeeds_with_falling_loss(trained: dict[str, Any]) -> None:
    job, project = trained["job"], trained["project"]
    assert job["status"] == "succeeded", (job["error"], project.event_messages(job["id"])[-15:])
    losses = project.losses(job["id"])
    assert len(losses) >= 20, losses
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    assert (Path(trained["folder"]) / "adapter" / "adapter_config.json").is_file()


def test_adapter_loads_and_raises_answer_accuracy(embedded: dict[str, Any],
                                                  trained: dict[str, Any]) -> None:
    model_dir = Path(embedded["env"]["TUNESMITH_HOME"]) / "models" / "tiny-llama"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base_accuracy = answer_token_accuracy(AutoModelForCausalLM.from_pretrained(model_dir),
                                          tokenizer, trained["rows"])
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir),
                                      trained["folder"] / "adapter")
    tuned_accuracy = answer_token_accuracy(tuned, tokenizer, trained["rows"])
    assert tuned_accuracy > base_accuracy + 0.5, (base_accuracy, tuned_accuracy)


def test_stopping_serve_stops_its_worker(embedded: dict[str, Any],
                                         trained: dict[str, Any]) -> None:
    assert trained["job"]["status"] == "succeeded"
    api: Service = embedded["api"]
    assert len(_group_members(api.pid)) >= 2  # serve and its worker (and its pool)
    # Only serve gets the signal, as from a terminal's Ctrl-C or a process manager: its
    # worker child must go with it.
    os.kill(api.pid, signal.SIGTERM)
    api.process.wait(timeout=60)  # type: ignore[union-attr]
    wait_until(lambda: not _group_members(api.pid), timeout=45,
               what=f"serve's worker to exit: {_group_members(api.pid)}")
