"""The `tunesmith` client commands against the running test stack, as a person types them."""

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from testbed.learning import bundled_instructions
from testbed.servers import REPO
from tunesmith.cli import app

ROOT = typer.main.get_command(app)


# typer carries its own copy of click: commands and groups are recognised by what they hold.
def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in getattr(group, "commands", {}).items():
        found += _commands(command, (*path, name))
    return found


def _command(path: tuple[str, ...]) -> Any:
    command = ROOT
    for name in path:
        command = command.commands[name]
    return command


COMMANDS = _commands(ROOT)


def test_every_client_and_server_command_is_there() -> None:
    assert {" ".join(p) for p in COMMANDS} >= {
        "files upload", "files list", "files preview", "jobs create", "jobs list", "jobs get",
        "jobs watch", "jobs cancel", "jobs pause", "jobs resume", "jobs download",
        "models list", "chat", "serve", "worker", "migrate", "keys create", "keys revoke",
        "tiny-model"}


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "tunesmith")
def test_help_lists_every_option(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert f"Usage: tunesmith {' '.join(path)}".rstrip() in result.output
    command = _command(path)
    for param in command.params:
        names = param.opts if param.param_type_name == "option" else [param.name]
        for name in names:  # options as typed; arguments by name (typer's case varies)
            assert name in result.output or name.upper() in result.output, \
                (path, name, result.output)
    for name in getattr(command, "commands", {}):
        assert name in result.output


def tunesmith(args: list[str], env: dict[str, str], timeout: float = 300
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tunesmith.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def user_env(stack, project) -> dict[str, str]:  # type: ignore[no-untyped-def]
    # Only what a user's shell would hold: the URL and the key, no server settings.
    return {"PATH": stack.env["PATH"], "PYTHONPATH": stack.env.get("PYTHONPATH", ""),
            "HOME": stack.env.get("HOME", "/tmp"), "COLUMNS": "160",
            "TUNESMITH_URL": stack.url, "TUNESMITH_API_KEY": project.key}


def _field(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match, (pattern, text)
    return match.group(1)


def test_upload_create_watch_download(user_env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in bundled_instructions()[:16]) + "\n")
    uploaded = tunesmith(["files", "upload", str(data)], user_env)
    assert uploaded.returncode == 0, uploaded.stderr
    file_id = _field(r"(file-\S+)", uploaded.stdout)
    listed = tunesmith(["files", "list"], user_env)
    assert file_id in listed.stdout and "train.jsonl" in listed.stdout
    preview = tunesmith(["files", "preview", file_id, "--rows", "2"], user_env)
    assert preview.returncode == 0, preview.stderr
    first = bundled_instructions()[0]["messages"][-1]["content"]
    assert first[:20] in preview.stdout

    created = tunesmith(["jobs", "create", "--model", "tiny-llama", "--training-file", file_id,
                         "-p", "n_epochs=2", "-p", "batch_size=4", "-p", "learning_rate=5e-3",
                         "-p", "logging_steps=1", "--tuning-option", "r=4",
                         "--suffix", "cli"], user_env)
    assert created.returncode == 0, created.stderr
    job_id = _field(r"(ftjob-\S+)", created.stdout)

    watched = tunesmith(["jobs", "watch", job_id], user_env)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    out = watched.stdout
    assert "Training" in out  # the job's events, above the bar
    final = _field(r"succeeded at (step 8/8, loss \d+\.\d+)", out)
    assert float(final.rsplit(" ", 1)[1]) > 0
    assert "ft:tiny-llama:" in out and job_id in out

    got = tunesmith(["jobs", "get", job_id, "--json"], user_env)
    job: dict[str, Any] = json.loads(got.stdout)
    assert job["status"] == "succeeded" and job["progress"]["step"] == 8
    assert job_id in tunesmith(["jobs", "list", "--limit", "5"], user_env).stdout

    downloaded = tunesmith(["jobs", "download", job_id, "-o", str(tmp_path / "out"),
                            "--prefix", "adapter/"], user_env)
    assert downloaded.returncode == 0, downloaded.stderr
    assert "sha256 checked" in downloaded.stdout
    adapter = tmp_path / "out" / job_id / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["base_model_name_or_path"] == "tiny-llama"
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0
    assert not list(adapter.rglob("*.part"))


def test_watch_of_a_cancelled_job_exits_2(user_env: dict[str, str], project) -> None:  # type: ignore[no-untyped-def]
    upload = project.upload(bundled_instructions()[:4], "idle.jsonl")
    # A queue no worker serves: the job stays queued until the CLI cancels it.
    job = project.create_job({"model": "tiny-llama", "training_file": upload["id"],
                              "resources": {"gpu_class": "idle"}})
    cancelled = tunesmith(["jobs", "cancel", job["id"]], user_env)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout, cancelled.stderr
    watched = tunesmith(["jobs", "watch", job["id"]], user_env, timeout=60)
    assert watched.returncode == 2, watched.stdout + watched.stderr
    assert "cancelled" in watched.stderr


def test_api_errors_are_one_line_and_exit_1(user_env: dict[str, str]) -> None:
    missing = tunesmith(["jobs", "get", "ftjob-nope"], user_env)
    assert missing.returncode == 1 and "404" in missing.stderr, missing.stderr
    assert "Traceback" not in missing.stderr
    bad_key = tunesmith(["jobs", "list"], {**user_env, "TUNESMITH_API_KEY": "sk-wrong"})
    assert bad_key.returncode == 1 and "401" in bad_key.stderr, bad_key.stderr
    refused = tunesmith(["jobs", "create", "--model", "tiny-llama", "--training-file",
                         "file-nope"], user_env)
    assert refused.returncode == 1 and "400" in refused.stderr and "training_file" in \
        refused.stderr, refused.stderr


def test_models_list_and_chat_answer_as_trained(user_env: dict[str, str],
                                                lora_job: dict[str, Any]) -> None:
    tuned = lora_job["fine_tuned_model"]
    listed = tunesmith(["models", "list"], user_env)
    assert listed.returncode == 0, listed.stderr
    assert tuned in listed.stdout and "tiny-llama" in listed.stdout
    as_json = json.loads(tunesmith(["models", "list", "--json"], user_env).stdout)
    assert tuned in [m["id"] for m in as_json]

    row = bundled_instructions()[0]
    question, trained = row["messages"][0]["content"], row["messages"][-1]["content"]
    # A conversation read from stdin: one question, then end of input.
    chatted = subprocess.run(
        [sys.executable, "-m", "tunesmith.cli", "chat", tuned, "--temperature", "0"],
        env=user_env, cwd=REPO, input=question + "\n", capture_output=True, text=True,
        timeout=300)
    assert chatted.returncode == 0, chatted.stdout + chatted.stderr
    assert trained in chatted.stdout, chatted.stdout
    once = tunesmith(["chat", tuned, "-m", question, "--temperature", "0"], user_env)
    assert once.returncode == 0, once.stderr
    assert once.stdout.strip() == trained
