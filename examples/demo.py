"""The README's first command: a LoRA SFT job through the embedded service, start to finish.

It starts `tunesmith serve` (SQLite, a server-less broker, one local worker) in a fresh data
folder, builds the tiny model, uploads the bundled instruction set over REST, creates a LoRA
job, streams its events, downloads the adapter, and prints the model's answers to the
training prompts before and after.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import httpx

SPEC = {
    "model": "tiny-llama",
    "method": {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 30, "batch_size": 8, "learning_rate": 5e-3}}},
    "tuning": {"type": "lora", "r": 16, "alpha": 32},
    "suffix": "demo",
}


def cli(*args: str, env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-m", "tunesmith.cli", *args], env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


def main() -> None:
    home = Path(os.environ.get("TUNESMITH_HOME") or tempfile.mkdtemp(prefix="tunesmith-demo-"))
    port = int(os.environ.get("PORT", "8321"))
    env = {**os.environ, "TUNESMITH_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    for name in ("TUNESMITH_DATABASE_URL", "TUNESMITH_BROKER_URL"):
        env.pop(name, None)  # the embedded default: no servers
    print(f"data folder: {home}")
    cli("migrate", env=env)
    print("building the tiny model:", cli("tiny-model", env=env))
    key = cli("keys", "create", "--project", "demo", env=env)
    log = (home / "serve.log").open("ab")
    server = subprocess.Popen([sys.executable, "-m", "tunesmith.cli", "serve", "--port",
                               str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                        headers={"Authorization": f"Bearer {key}"})
    try:
        for _ in range(120):
            try:
                if http.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        data = (resources.files("tunesmith") / "data" / "instructions.jsonl").read_bytes()
        upload = http.post("/v1/files", files={"file": ("instructions.jsonl", data)},
                           data={"purpose": "fine-tune"}).json()
        print(f"uploaded {upload['id']}: {upload['rows']} {upload['format']} rows")
        job = http.post("/v1/fine_tuning/jobs",
                        json={**SPEC, "training_file": upload["id"]}).json()
        print(f"created {job['id']} ({job['status']}); streaming events:")
        with http.stream("GET", f"/v1/fine_tuning/jobs/{job['id']}/events",
                         params={"stream": "true"}, timeout=None) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    event = json.loads(line[6:])
                    if event["type"] != "metrics" or event["data"]["step"] % 10 == 0:
                        print("  ", event["message"][:150])
        job = http.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
        print(f"job {job['status']}: {job['fine_tuned_model']}")
        if job["status"] != "succeeded":
            sys.exit(f"job failed: {job['error']}")
        target = home / "downloads" / job["id"]
        for artifact in http.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts").json()["data"]:
            path = target / artifact["name"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(http.get(artifact["url"]).content)
        print(f"adapter downloaded to {target / 'adapter'}")
        compare(home / "models" / "tiny-llama", target / "adapter", data)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def compare(base_folder: Path, adapter_folder: Path, data: bytes) -> None:
    """Greedy answers to the training prompts from the base model, then with the adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    base = AutoModelForCausalLM.from_pretrained(base_folder)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_folder),
                                      adapter_folder)
    rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    right = {"base": 0, "tuned": 0}
    print(f"\n{'prompt':42} {'expected':14} {'base model':22} {'with adapter'}")
    for row in rows:
        question, expected = row["messages"][0]["content"], row["messages"][1]["content"]
        prompt = tokenizer.apply_chat_template(row["messages"][:1], tokenize=False,
                                               add_generation_prompt=True)
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        answers = {}
        for name, model in (("base", base), ("tuned", tuned)):
            with torch.no_grad():
                out = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            answers[name] = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            right[name] += answers[name].strip() == expected
        print(f"{question[:40]:42} {expected:14} {answers['base'][:20]!r:22} "
              f"{answers['tuned']!r}")
    print(f"\nexact answers: base model {right['base']}/{len(rows)}, "
          f"with adapter {right['tuned']}/{len(rows)}")


if __name__ == "__main__":
    main()
