"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020) for decoder-only causal LMs.

peft has no bottleneck tuner and AdapterHub's ``adapters`` cannot be installed beside
transformers 5, so this module implements the method directly on top of a Hugging Face model.

Each adapted sublayer's output ``h`` becomes ``h + up(act(down(dropout(h))))``; the decoder
layer's own residual add is left untouched. The adapter is registered as a child module named
``bottleneck_adapter`` of the sublayer and applied by a forward hook instead of replacing the
sublayer with a wrapper: base parameter names (``model.layers.0.mlp.down_proj.weight``) stay
exactly as in the checkpoint, so tensor-parallel plans, ``_no_split_modules``, output recording
and base-weight loading keep working, while ``model.parameters()``, optimisers and ``.to()``
still see the adapters.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

ADAPTER_NAME = "bottleneck_adapter"
WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "bottleneck_config.json"
# Sublayer attribute names used across transformers' decoder layers, in order of preference.
_ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention")
_FFN_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe")
_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


@dataclass
class BottleneckConfig:
    """Hyper-parameters of the bottleneck adapters."""

    size: int = 64
    placement: Literal["houlsby", "pfeiffer"] = "pfeiffer"
    nonlinearity: Literal["relu", "gelu", "silu"] = "relu"
    init_scale: float = 1e-3
    dropout: float = 0.0

    def __post_init__(self) -> None:
        # Validate eagerly: a typo in a job spec should fail before a model is loaded.
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        if self.placement not in ("houlsby", "pfeiffer"):
            raise ValueError(f"placement must be 'houlsby' or 'pfeiffer', got {self.placement!r}")
        if self.nonlinearity not in _ACTIVATIONS:
            raise ValueError(f"nonlinearity must be one of {sorted(_ACTIVATIONS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of the config."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BottleneckConfig:
        """Build a config, refusing unknown keys rather than silently ignoring them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown BottleneckConfig key(s) {unknown}; expected a subset of {sorted(known)}"
            )
        return cls(**data)


class BottleneckAdapter(nn.Module):
    """down-projection -> nonlinearity -> up-projection, added to its input."""

    def __init__(self, hidden_size: int, config: BottleneckConfig) -> None:
        super().__init__()
        self.dropout = nn.Dropout(config.dropout)
        self.down = nn.Linear(hidden_size, config.size)
        self.act = _ACTIVATIONS[config.nonlinearity]()
        self.up = nn.Linear(config.size, hidden_size)
        # Near-zero up-projection makes the adapter ~identity, so training starts at the base.
        nn.init.normal_(self.up.weight, std=config.init_scale)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # Compute in the adapter's dtype (e.g. fp32 on a bf16/quantised base), return in h's.
        x = h.to(self.down.weight.dtype)
        return h + self.up(self.act(self.down(self.dropout(x)))).to(h.dtype)


def _adapter_hook(module: nn.Module, _args: tuple[Any, ...], output: Any) -> Any:
    """Forward hook: apply the sublayer's adapter to its hidden-state output."""
    adapter = getattr(module, ADAPTER_NAME)
    # transformers 5 attention returns (attn_output, attn_weights): adapt only the first.
    if isinstance(output, tuple):
        return (adapter(output[0]), *output[1:])
    return adapter(output)


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    """Find the decoder layers: ``get_decoder().layers``, else a ModuleList of no-split blocks."""
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else model
    layers = getattr(decoder, "layers", None)
    if isinstance(layers, nn.ModuleList) and len(layers) > 0:
        return layers
    block_names = set(getattr(model, "_no_split_modules", None) or ())
    for module in model.modules():
        is_blocks = isinstance(module, nn.ModuleList) and len(module) > 0
        if is_blocks and all(type(child).__name__ in block_names for child in module):
            return module
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")


def _sublayer(layer: nn.Module, names: tuple[str, ...], kind: str) -> nn.Module:
    for name in names:
        module = getattr(layer, name, None)
        if isinstance(module, nn.Module):
            return module
    children = [name for name, _ in layer.named_children()]
    raise ValueError(f"no {kind} sublayer among {children} of {type(layer).__name__}")


def _hidden_size(model: nn.Module) -> int:
    config = model.config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config(decoder=True)
    return int(config.hidden_size)


def add_bottleneck_adapters(model: nn.Module, config: BottleneckConfig) -> nn.Module:
    """Insert adapters in place, freeze all base parameters, and return ``model``."""
    if any(ADAPTER_NAME in name for name, _ in model.named_modules()):
        raise ValueError("model already has bottleneck adapters")
    hidden = _hidden_size(model)
    targets: list[nn.Module] = []
    for layer in _decoder_layers(model):
        if config.placement == "houlsby":
            targets.append(_sublayer(layer, _ATTENTION_NAMES, "attention"))
        targets.append(_sublayer(layer, _FFN_NAMES, "feed-forward"))
    for param in model.parameters():
        param.requires_grad_(False)
    for target in targets:
        # Create on the sublayer's device; keep fp32 unless the base is a float type (not int8/4).
        ref = next(target.parameters(), None)
        device = ref.device if ref is not None else None
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
        target.add_module(ADAPTER_NAME, BottleneckAdapter(hidden, config).to(device, dtype))
        target.register_forward_hook(_adapter_hook)
    return model


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return only the adapter weights, keyed as in ``model.state_dict()``."""
    return {k: v for k, v in model.state_dict().items() if f".{ADAPTER_NAME}." in k}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Return (trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def save_bottleneck_adapters(
    model: nn.Module,
    folder: str | Path,
    config: BottleneckConfig,
    base_model_name: str | None = None,
) -> None:
    """Write ``adapter_model.safetensors`` and ``bottleneck_config.json`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in adapter_state_dict(model).items()}
    if not state:
        raise ValueError("model has no bottleneck adapters to save")
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    if base_model_name is None:
        base_model_name = getattr(getattr(model, "config", None), "_name_or_path", None) or None
    meta = {**config.to_dict(), "base_model_name_or_path": base_model_name}
    meta["tuning"] = ADAPTER_NAME
    (folder / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")


def load_bottleneck_adapters(
    model_or_path: nn.Module | str | Path, folder: str | Path, **from_pretrained_kwargs: Any
) -> nn.Module:
    """Add saved adapters to a base model (or load the base from a path/hub id first).

    Weights are loaded strictly: a missing or unexpected key raises ``KeyError`` naming it.
    Returns the model in eval mode.
    """
    folder = Path(folder)
    meta = json.loads((folder / CONFIG_NAME).read_text())
    if meta.pop("tuning", None) != ADAPTER_NAME:
        raise ValueError(f"{folder / CONFIG_NAME} does not describe a bottleneck adapter")
    meta.pop("base_model_name_or_path", None)
    config = BottleneckConfig.from_dict(meta)
    if isinstance(model_or_path, nn.Module):
        model = model_or_path
    else:
        # Imported lazily: only this path needs the Auto classes.
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(model_or_path), **from_pretrained_kwargs)
    add_bottleneck_adapters(model, config)
    saved = load_file(str(folder / WEIGHTS_NAME))
    expected = adapter_state_dict(model)
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    if missing or unexpected:
        raise KeyError(
            f"adapter weights in {folder} do not match the model "
            f"(placement={config.placement!r}): missing {missing}, unexpected {unexpected}"
        )
    # strict=False because base weights are deliberately absent; shapes are still checked.
    model.load_state_dict(saved, strict=False)
    return model.eval()
