"""Hub kernels stay off unless the operator turns them on (issue 11, must show 1).

transformers 5 kernelizes every model it loads by default, which on CUDA fetches code from
the hub: every GPU job failed with no network. A load here runs with `HF_HUB_OFFLINE=1`, so
any attempt to reach the hub would fail it; the training process of a real job reports the
variable it ran with."""

import json
import os
import subprocess
import sys
from pathlib import Path

from testbed.jobs import Project, train_and_wait
from testbed.learning import bundled_instructions

# What `worker.training.modeling.load_model` does for a LoRA job, in a fresh interpreter with the
# given environment: which USE_HUB_KERNELS the process got, and whether the model was
# kernelized.
LOAD = """
import json, os, sys
from pathlib import Path
from worker.training.tiny_model import build_tiny_model
from tunesmith.spec.job import JobSpec
from worker.training.context import JobContext
from worker.training.modeling import load_model
from worker.registry import load_all, tuning
from tunesmith.spec.tunings import LoraTuning

load_all()
build_tiny_model(Path(os.environ["TUNESMITH_MODELS_ROOT"]) / "tiny-llama")
spec = JobSpec.model_validate({"model": "tiny-llama", "training_file": "file-x"})
ctx = JobContext(job_id="job-x", spec=spec, device="cpu", seed=0)
plan = tuning(LoraTuning)
model = load_model(ctx, plan, precision="fp32")
print(json.dumps({"USE_HUB_KERNELS": os.environ.get("USE_HUB_KERNELS"),
                  "use_kernels": model.use_kernels}))
"""


def load_in_fresh_process(tmp_path: Path, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("USE_HUB_KERNELS", "TUNESMITH_HUB_KERNELS")}
    result = subprocess.run(
        [sys.executable, "-c", LOAD], capture_output=True, text=True, timeout=300,
        env={**clean, "HF_HUB_OFFLINE": "1", "TUNESMITH_HOME": str(tmp_path / "home"),
             "TUNESMITH_MODELS_ROOT": str(tmp_path / "models"), **env},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_model_load_never_uses_hub_kernels_unless_the_operator_allows_them(
        tmp_path: Path) -> None:
    # Default: off, and the load succeeds offline.
    assert load_in_fresh_process(tmp_path) == {"USE_HUB_KERNELS": "NO", "use_kernels": False}
    # The operator's switch works, even over a USE_HUB_KERNELS=NO baked into an image; and
    # transformers' own default would kernelize (what the default above prevents).
    allowed = load_in_fresh_process(tmp_path, TUNESMITH_HUB_KERNELS="true", USE_HUB_KERNELS="NO")
    assert allowed == {"USE_HUB_KERNELS": "YES", "use_kernels": True}


def test_the_training_process_runs_with_hub_kernels_off(project: Project) -> None:
    rows = bundled_instructions()[:16]
    job = train_and_wait(project, {
        "model": "tiny-llama", "training_file": project.upload(rows)["id"],
        "method": {"type": "supervised",
                   "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 8}}},
    })
    events = project.events(job["id"])
    started = next(e for e in events if e["message"].startswith("Training process started"))
    assert started["data"]["USE_HUB_KERNELS"] == "NO", started
    kernels = next(e for e in events if e["message"].startswith("Kernels: "))
    assert kernels["data"]["hub_kernels"] is False
    # On CPU Liger's Triton kernels never turn on, and the event says why.
    assert kernels["data"]["liger_kernels"] is False
    assert "need CUDA" in kernels["message"], kernels["message"]
