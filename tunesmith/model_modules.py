"""The linear module names of a model folder, read without torch.

A safetensors file opens with an 8-byte little-endian length and a JSON header naming every
tensor with its shape, so the API can tell which `tuning.target_modules` a model has (and
refuse a name that matches none at creation, instead of the job failing at run time) without
loading a weight.
"""

import json
import struct
from pathlib import Path

# A header is a few hundred bytes per tensor; a bigger one is no model file we wrote.
MAX_HEADER_BYTES = 64 * 1024 * 1024
_SKIP = ("adapter_model.safetensors",)  # an adapter's own weights are not the model's


def _tensor_shapes(path: Path) -> dict[str, list[int]]:
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            return {}
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            return {}
        header = json.loads(handle.read(length))
    return {name: list(entry.get("shape", [])) for name, entry in header.items()
            if name != "__metadata__" and isinstance(entry, dict)}


def weight_modules(folder: Path) -> list[str] | None:
    """Dotted names of the modules with a 2-D weight (linear layers, embeddings, GPT-2's
    Conv1D: what LoRA can adapt), or None when the folder holds no safetensors weights to
    read (a hub id, a .bin checkpoint): the worker checks those when it loads them."""
    files = [p for p in sorted(folder.glob("*.safetensors")) if p.name not in _SKIP]
    if not files:
        return None
    modules: set[str] = set()
    try:
        for path in files:
            for name, shape in _tensor_shapes(path).items():
                if name.endswith(".weight") and len(shape) == 2:
                    modules.add(name.removesuffix(".weight"))
    except (OSError, ValueError, struct.error):
        return None  # unreadable here; loading it will say what is wrong
    return sorted(modules) or None


def matches(target: str, modules: list[str]) -> bool:
    """peft's rule for a list of target_modules: the full name, or its last dotted parts."""
    return any(name == target or name.endswith("." + target) for name in modules)


def short_names(modules: list[str]) -> list[str]:
    """The names a user writes in target_modules: q_proj, not model.layers.0.self_attn.q_proj."""
    return sorted({name.rsplit(".", 1)[-1] for name in modules})
