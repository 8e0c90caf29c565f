"""The warm start on GPU nodes too (issue 11, must show 2): the fork server imports the
training libraries but never initialises CUDA, so a forked child can start CUDA for itself;
and a worker whose fork server cannot serve starts its jobs cold instead of failing them.

On this CPU machine `torch.cuda.is_initialized()` can only be false; `python -m
bench.gpu_check` asks the same questions of the fork server on a GPU node."""

import json
import os
import subprocess
import sys
import textwrap
from multiprocessing import Queue
from pathlib import Path

from testbed.jobs import Project, train_and_wait
from testbed.learning import bundled_instructions


def report_fork_server_state(queue: Queue) -> None:
    """Runs in a child forked from the fork server: what it inherited."""
    import torch

    queue.put({
        "cuda_initialized": torch.cuda.is_initialized(),
        "preloaded": sorted(m for m in ("transformers", "peft", "trl", "datasets",
                                        "bitsandbytes", "worker.registry") if m in sys.modules),
        # Patched only while the libraries imported: children get torch's own function.
        "capability_is_torchs": torch.cuda.get_device_capability.__module__ == "torch.cuda",
        "USE_HUB_KERNELS": os.environ.get("USE_HUB_KERNELS"),
    })


def test_the_fork_server_preloads_the_libraries_without_initialising_cuda() -> None:
    from worker.process.launch import _children_allowed, forkserver

    context = forkserver()
    queue = context.Queue()
    with _children_allowed():
        child = context.Process(target=report_fork_server_state, args=(queue,))
        child.start()
    state = queue.get(timeout=300)
    child.join(30)
    assert state == {
        "cuda_initialized": False,
        "preloaded": ["bitsandbytes", "datasets", "peft", "transformers", "trl",
                      "worker.registry"],
        "capability_is_torchs": True,
        "USE_HUB_KERNELS": "NO",
    }


def test_a_forked_child_trains(project: Project) -> None:
    rows = bundled_instructions()[:16]
    job = train_and_wait(project, {
        "model": "tiny-llama", "training_file": project.upload(rows)["id"],
        "method": {"type": "supervised",
                   "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 8}}},
    })
    started = next(e for e in project.events(job["id"])
                   if e["message"].startswith("Training process started"))
    assert started["data"]["warm_start"] is True, started
    assert started["data"]["cuda_initialized_at_start"] is False, started
    assert job["trained_tokens"] > 0


# A fork server whose preload fails the way warm_imports does when an import initialised
# CUDA (RuntimeError, which multiprocessing does not swallow): the job's process must still
# start, as a fresh interpreter, and later jobs must not wait for another failed server.
FALLBACK = textwrap.dedent("""
    import json, multiprocessing, subprocess, sys
    from worker.process import launch
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.e2e.refusing_preload"])
    launch.forkserver.cache_clear()
    launch.forkserver = lambda: context
    started = [type(launch.start_training(f"job-{i}")).__name__ for i in range(2)]
    print(json.dumps({"started": started, "warm_after": launch.warm_start_enabled()}))
""")


def test_a_fork_server_that_cannot_serve_means_cold_starts(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", FALLBACK], capture_output=True, text=True,
                            timeout=300, env={**os.environ,
                                              "TUNESMITH_HOME": str(tmp_path / "home")})
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"started": ["Popen", "Popen"], "warm_after": False}
    assert "fork server unavailable" in result.stderr
