"""README "Using it", run as written, in order, on a fresh TUNESMITH_HOME: the shell
commands (`tunesmith tiny-model`, `keys create`, `serve`), then the curl commands through
to a trained job and its downloaded adapter.

The commands are read from README.md, so the README and this test cannot drift. What is
changed, and why: the `pip install` line is skipped (the suite runs in the installed
environment), port 8000 becomes a free port (other test runs may hold 8000), and
examples/lora_sft.json gets its training_file set, as the README says to."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from safetensors.torch import load_file

from testbed.servers import REPO, free_port, wait_until

README = REPO / "README.md"


def using_it_blocks() -> tuple[list[str], list[str]]:
    """The section's two bash blocks as commands: continuation lines joined, comments cut."""
    section = README.read_text().split("## Using it", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 2, "README 'Using it' lost its shell blocks"

    def commands(block: str) -> list[str]:
        joined = re.sub(r"\\\n\s*", " ", block)
        # A trailing comment is whitespace, "#", space: the README's lines hold no other "#".
        lines = (re.sub(r"\s+#\s.*$", "", line).strip() for line in joined.splitlines())
        return [line for line in lines if line]

    return commands(blocks[0]), commands(blocks[1])


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("using-it")
    port = str(free_port())
    env = {k: v for k, v in os.environ.items()
           if k not in ("TUNESMITH_DATABASE_URL", "TUNESMITH_BROKER_URL")}
    # `tunesmith` on PATH, as after the README's pip install.
    env.update({"TUNESMITH_HOME": str(root / "home"), "TUNESMITH_ALLOW_HUB_DOWNLOADS": "false",
                "PATH": f"{Path(sys.executable).parent}:{env['PATH']}", "PYTHONUNBUFFERED": "1"})
    setup, client = using_it_blocks()
    setup = [c.replace("8000", port) for c in setup if not c.startswith("pip install")]
    assert [c.split()[:2] for c in setup] == [["tunesmith", "tiny-model"],
                                               ["tunesmith", "keys"], ["tunesmith", "serve"]]
    outputs = []
    for command in setup[:-1]:
        result = subprocess.run(command, shell=True, env=env, cwd=root, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, (command, result.stderr[-3000:])
        outputs.append(result.stdout.strip())
    key = outputs[-1]
    serve = subprocess.Popen(setup[-1], shell=True, env=env, cwd=root, start_new_session=True,
                             stdout=(root / "serve.log").open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200,
                   timeout=120, what=f"serve (log: {root / 'serve.log'})")
        yield {"root": root, "env": {**env, "KEY": key}, "port": port, "url": url,
               "client": [c.replace("8000", port) for c in client], "key": key}
    finally:
        os.kill(serve.pid, signal.SIGTERM)  # serve stops its worker itself
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()


def _run(command: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> str:
    result = subprocess.run(["bash", "-c", command], env=env, cwd=cwd, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, (command, result.stderr[-2000:])
    return result.stdout


def test_the_readme_commands_train_and_download_an_adapter(session: dict[str, Any]) -> None:
    key_line, upload, create, stream, listing, download = session["client"]
    assert session["key"].startswith("ts-") and key_line.startswith("KEY=ts-")
    # The curl commands run where the README's relative paths point: a copy of the files.
    work = session["root"] / "work"
    (work / "tunesmith" / "data").mkdir(parents=True)
    shutil.copy(REPO / "tunesmith" / "data" / "instructions.jsonl", work / "tunesmith" / "data")
    env = dict(session["env"])

    file = json.loads(_run(upload, env, work))
    assert file["id"].startswith("file-") and file["status"] == "processed", file
    example = json.loads((REPO / "examples" / "lora_sft.json").read_text())
    (work / "examples").mkdir()
    (work / "examples" / "lora_sft.json").write_text(
        json.dumps({**example, "training_file": file["id"]}))  # "after setting its training_file"
    job = json.loads(_run(create, env, work))
    assert job["status"] in ("validating_files", "queued"), job
    env["JOB"] = job["id"]

    # The stream ends by itself once the job does.
    events = [json.loads(line[6:]) for line in _run(stream, env, work, timeout=900).splitlines()
              if line.startswith("data: {")]
    assert events and events[-1]["data"].get("status") == "succeeded", events[-5:]
    artifacts = json.loads(_run(listing, env, work))["data"]
    assert "adapter/adapter_model.safetensors" in {a["name"] for a in artifacts}
    _run(download, env, work)
    weights = load_file(work / "adapter_model.safetensors")
    assert any("lora_A" in name for name in weights), list(weights)[:5]
