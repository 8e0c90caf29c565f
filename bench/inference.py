"""Inference throughput and latency: the `tunesmith inference` process over HTTP against
`model.generate` called directly in one process (the baseline), for 1, 4 and 16 concurrent
requests.

Both sides generate the same greedy answers (the tiny model, chat template, `max_tokens`
tokens) for the same 16 bundled prompts, each request timed from send to answer. The
baseline runs the same concurrency with threads calling `generate` on one model under a lock
(a model object is not safe to share between concurrent `generate` calls); the process runs
`inference_max_concurrent` generations at once and queues the rest. Prints requests/s, p50
and p99 latency, and the process's figures as a ratio of the baseline's.

    OMP_NUM_THREADS=1 python -m bench.inference [--requests 48] [--max-tokens 16]
"""

import argparse
import concurrent.futures
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
LEVELS = (1, 4, 16)


def _prompts() -> list[str]:
    from tests.utils.learning import bundled_instructions

    return [r["messages"][0]["content"] for r in bundled_instructions()]


def _measure(call: Callable[[str], Any], prompts: list[str], concurrency: int,
             requests: int) -> dict[str, float]:
    latencies: list[float] = []

    def one(prompt: str) -> None:
        start = time.perf_counter()
        call(prompt)
        latencies.append(time.perf_counter() - start)

    batch = [prompts[i % len(prompts)] for i in range(requests)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, batch))
    wall = time.perf_counter() - start
    latencies.sort()
    return {"rps": requests / wall, "p50": statistics.median(latencies),
            "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def _baseline(model_path: Path, max_tokens: int) -> Callable[[str], Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    lock = threading.Lock()

    def call(prompt: str) -> str:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                             tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        with lock, torch.inference_mode():
            out = model.generate(input_ids=ids, max_new_tokens=max_tokens, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
        return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    return call


def _served(url: str, model_path: Path, max_tokens: int) -> Callable[[str], Any]:
    client = httpx.Client(base_url=url, timeout=300)
    ref = {"model_id": "tiny-llama", "base_path": str(model_path), "tuning": None,
           "weights_path": None}

    def call(prompt: str) -> str:
        answer = client.post("/v1/chat/completions", json={
            "model": "tiny-llama", "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0, "tunesmith_model": ref})
        answer.raise_for_status()
        return answer.json()["choices"][0]["message"]["content"]

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=48, help="requests per level")
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    from tests.utils.servers import free_port, wait_until

    home = Path(tempfile.mkdtemp(prefix="tunesmith-bench-inference-"))
    port = free_port()
    env = {**os.environ, "TUNESMITH_HOME": str(home), "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "tunesmith.cli", "tiny-model"], env=env, check=True,
                   capture_output=True)
    model_path = home / "models" / "tiny-llama"
    server = subprocess.Popen([sys.executable, "-m", "tunesmith.cli", "inference", "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200,
                   timeout=120, what="inference process")
        prompts = _prompts()
        sides = {"generate": _baseline(model_path, args.max_tokens),
                 "inference": _served(url, model_path, args.max_tokens)}
        for call in sides.values():
            _measure(call, prompts, 1, 4)  # warm-up: first load, first forward
        print(f"{'concurrent':>10} {'side':>10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'rps x':>6}")
        for level in LEVELS:
            figures = {side: _measure(call, prompts, level, args.requests)
                       for side, call in sides.items()}
            for side, f in figures.items():
                ratio = f["rps"] / figures["generate"]["rps"]
                print(f"{level:>10} {side:>10} {f['rps']:8.1f} {f['p50'] * 1e3:8.1f} "
                      f"{f['p99'] * 1e3:8.1f} {ratio:6.2f}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
