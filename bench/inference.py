"""Inference throughput and latency: the `tunesmith inference` process over HTTP against
`model.generate` called directly in one process (the baseline), for 1, 4 and 16 concurrent
requests.

Both sides generate the same greedy answers (the tiny model, chat template, `max_tokens`
tokens) for the same 16 bundled prompts, each request timed from send to answer. The
baseline runs the same concurrency with threads calling `generate` on one model under a lock
(a model object is not safe to share between concurrent `generate` calls); the process runs
`inference_max_concurrent` generations at once and queues the rest. Prints requests/s, p50
and p99 latency, and the process's figures as a ratio of the baseline's.

`--device cuda` (the default where a GPU is visible) runs both sides on the GPU in bf16
(fp16 on GPUs without it), as the process places every model there; `--device cpu` hides
the GPU from the process. First both sides answer the 16 prompts one at a time: how many
answers agree is printed (a dtype or placement bug shows there), and the process's memory
figures (`/stats`: weights loaded, and on a GPU torch.cuda.memory_allocated) at the end.

    OMP_NUM_THREADS=1 python -m bench.inference [--requests 48] [--max-tokens 16]
        [--device auto|cpu|cuda]
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
    from testbed.learning import bundled_instructions

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


def _device(asked: str) -> str:
    import torch

    if asked == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if asked == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no GPU here")
    return asked


def _baseline(model_path: Path, max_tokens: int, device: str) -> Callable[[str], Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    # The dtype the inference process uses on that device (inference/loaded_models.py).
    dtype: Any = "auto"
    if device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
    lock = threading.Lock()

    def call(prompt: str) -> str:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                             tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        ids = ids.to(device)
        with lock, torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=max_tokens, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
        return tokenizer.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)

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
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = parser.parse_args()
    from testbed.servers import free_port, wait_until

    device = _device(args.device)

    home = Path(tempfile.mkdtemp(prefix="tunesmith-bench-inference-"))
    port = free_port()
    env = {**os.environ, "TUNESMITH_HOME": str(home), "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "tunesmith.cli", "tiny-model"], env=env, check=True,
                   capture_output=True)
    model_path = home / "models" / "tiny-llama"
    # The process puts models on the GPU whenever torch sees one.
    server_env = {**env, "CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else env
    log = home / "inference.log"
    server = subprocess.Popen([sys.executable, "-m", "tunesmith.cli", "inference", "--port",
                               str(port)], env=server_env, stdout=log.open("wb"),
                              stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200,
                   timeout=120, what=f"inference process (log: {log})")
        prompts = _prompts()
        sides = {"generate": _baseline(model_path, args.max_tokens, device),
                 "inference": _served(url, model_path, args.max_tokens)}
        # Warm-up (first load, first forward), and the same greedy answers on both sides.
        answers = {side: [call(p) for p in prompts] for side, call in sides.items()}
        same = sum(a == b for a, b in zip(answers["generate"], answers["inference"],
                                          strict=True))
        print(f"device {device}: {same}/{len(prompts)} answers the same on both sides "
              f"(first: {answers['inference'][0]!r})")
        print(f"{'concurrent':>10} {'side':>10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'rps x':>6}")
        for level in LEVELS:
            figures = {side: _measure(call, prompts, level, args.requests)
                       for side, call in sides.items()}
            for side, f in figures.items():
                ratio = f["rps"] / figures["generate"]["rps"]
                print(f"{level:>10} {side:>10} {f['rps']:8.1f} {f['p50'] * 1e3:8.1f} "
                      f"{f['p99'] * 1e3:8.1f} {ratio:6.2f}")
        stats = httpx.get(f"{url}/stats", timeout=30).json()
        print("inference process: " + ", ".join(
            f"{k} {stats[k] / 2**20:.1f} MiB" for k in (
                "loaded_bytes", "rss_bytes", "cuda_allocated_bytes", "cuda_max_allocated_bytes")
            if k in stats) + f"; batches {stats['batches']}, largest {stats['largest_batch']}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
