"""Out-of-memory recovery: what the next attempt changes after a training process ran out.

The supervisor (worker/process/supervise.py) starts a fresh training process with the change, so the
device's memory is whole again, and the process resumes from the last checkpoint as after any
crash. Order: halve the micro-batch (gradient accumulation doubles: the effective batch and so
the optimisation stay the same) up to `oom_max_halvings` times or down to one row; then turn
activation checkpointing on; then the job fails `out_of_memory` with the estimate.
Light on imports: the supervisor runs in the Celery process.
"""

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

# In the job's folder: the change the current attempt runs with.
REPLAN_FILE = "memory_replan.json"


@dataclass(frozen=True)
class Replan:
    halvings: int = 0
    checkpointing: bool = False


def read_replan(job_dir: Path) -> Replan:
    path = job_dir / REPLAN_FILE
    if not path.is_file():
        return Replan()
    values = json.loads(path.read_text())
    return Replan(halvings=int(values.get("halvings", 0)),
                  checkpointing=bool(values.get("checkpointing", False)))


def write_replan(job_dir: Path, replan: Replan) -> None:
    (job_dir / REPLAN_FILE).write_text(json.dumps(asdict(replan)))


def next_replan(current: Replan, resolved: dict[str, Any], *,
                max_halvings: int) -> tuple[Replan, str] | None:
    """The next attempt's change and a sentence saying it, or None: nothing left to try.
    `resolved` is the failed attempt's resolved hyperparameters."""
    micro = resolved.get("micro_batch_size")
    accumulation = resolved.get("gradient_accumulation_steps")
    if not isinstance(micro, int) or not isinstance(accumulation, int):
        return None  # a multi-stage job: its stages' batches are not ours to split
    if micro > 1 and current.halvings < max_halvings:
        smaller = max(1, micro // 2)
        return (replace(current, halvings=current.halvings + 1),
                f"micro-batch {micro} -> {smaller}, gradient accumulation {accumulation} -> "
                f"{accumulation * micro // smaller} (effective batch unchanged)")
    if not current.checkpointing and resolved.get("gradient_checkpointing") is False:
        return replace(current, checkpointing=True), "activation checkpointing turned on"
    return None
