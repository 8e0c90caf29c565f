"""Checkpoints of our own PPO loop (no transformers Trainer to write them).

`checkpoints/[<stage>/]checkpoint-<update>/` holds the trainable weights of each model in
safetensors (the LoRA weights, or every weight for full tuning), AdamW's state, and
`trainer_state.json`, written last: `JobContext.latest_checkpoint()` takes a folder only
once that file is there, so a crash mid-save leaves nothing half-written to resume from.
"""

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters()
            if p.requires_grad}


def save_checkpoint(folder: Path, *, step: int, models: dict[str, nn.Module],
                    optimizer: torch.optim.Optimizer, state: dict[str, Any],
                    keep: int = 2) -> Path:
    """Write checkpoint-<step> under `folder`; keep the newest `keep` checkpoints."""
    path = folder / f"checkpoint-{step}"
    if path.exists():  # a leftover of a crash mid-save: never mix two saves
        shutil.rmtree(path)
    path.mkdir(parents=True)
    for name, model in models.items():
        save_file(trainable_state(model), path / f"{name}.safetensors")
    # Optimizer state is tensors and plain numbers; read back with weights_only=True.
    torch.save(optimizer.state_dict(), path / OPTIMIZER_FILE)
    (path / STATE_FILE).write_text(json.dumps({"global_step": step, **state}))
    done = sorted((p for p in folder.glob("checkpoint-*") if (p / STATE_FILE).is_file()),
                  key=lambda p: int(p.name.rsplit("-", 1)[1]))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(path: Path, models: dict[str, nn.Module]
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load the trainable weights into `models`; return (state, optimizer state)."""
    for name, model in models.items():
        weights = load_file(path / f"{name}.safetensors", device="cpu")
        missing = {n for n, p in model.named_parameters() if p.requires_grad} - weights.keys()
        result = model.load_state_dict(weights, strict=False)
        if result.unexpected_keys or missing:
            raise RuntimeError(f"checkpoint {path.name} does not fit the {name} model: "
                               f"unexpected {result.unexpected_keys[:5]}, "
                               f"missing {sorted(missing)[:5]}")
    optimizer_state = torch.load(path / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    return json.loads((path / STATE_FILE).read_text()), optimizer_state
