"""What a job's events say happened: claims, training processes, steps, losses, pids."""

import os
from pathlib import Path
from typing import Any

CLAIM = "Job started on "
TRAINING_STARTED = "Training process started"


def claims(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One per time a worker took the job (the claim writes this event in its UPDATE)."""
    return [e for e in events if e["message"].startswith(CLAIM)]


def training_starts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One per training child that began the job."""
    return [e for e in events if e["message"].startswith(TRAINING_STARTED)]


def child_pids(events: list[dict[str, Any]]) -> list[int]:
    return [e["data"]["pid"] for e in training_starts(events)]


def metrics(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == "metrics"]


def step_metrics(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-step logs, without the end-of-training summary (its `loss` is the run's mean)."""
    return [m for m in metrics(events) if "train_samples_per_second" not in m]


def loss_by_step(events: list[dict[str, Any]]) -> dict[int, float]:
    """The loss logged at each step; a step trained again after a resume keeps its last value."""
    return {m["step"]: m["loss"] for m in step_metrics(events) if "loss" in m}


def checkpoint_steps(events: list[dict[str, Any]]) -> list[int]:
    return [e["data"]["step"] for e in events
            if e["message"].startswith("Checkpoint saved at step")]


def statuses(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["status"] for e in events if (e["data"] or {}).get("status")]


def process_gone(pid: int) -> bool:
    """No such process, or only a zombie waiting to be reaped (it runs no more code)."""
    status = Path(f"/proc/{pid}/status")
    try:
        state = next(line for line in status.read_text().splitlines()
                     if line.startswith("State:"))
    except (FileNotFoundError, ProcessLookupError):
        return True
    if "Z" in state.split()[1]:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
