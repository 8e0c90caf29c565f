"""Tests for worker/tunings/bottleneck.py on a real (tiny, randomly initialised) Llama."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

# Loaded by path: worker/ packages have no __init__.py of ours to rely on.
_PATH = Path(__file__).resolve().parents[2] / "worker" / "tunings" / "bottleneck.py"
_spec = importlib.util.spec_from_file_location("tunesmith_bottleneck_under_test", _PATH)
assert _spec is not None and _spec.loader is not None
bn = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bn  # dataclasses resolve annotations through sys.modules
_spec.loader.exec_module(bn)

SEED = 0


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Tensors here are tiny: intra-op threads only add overhead, and on a busy 2-core box
    # they spin against other processes (30 training steps went from 0.1 s to 20 s).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        # The default 0.02 init gives a frozen lm_head so small that logits can hardly move
        # away from uniform, whatever the adapters do; a larger scale makes the LM learnable.
        initializer_range=0.5,
    )
    return LlamaForCausalLM(config).eval()


def batch() -> torch.Tensor:
    return torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(1))


def adapter_modules(model: torch.nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, bn.BottleneckAdapter)]


@pytest.mark.parametrize("placement", ["pfeiffer", "houlsby"])
def test_starts_equal_to_base_and_only_adapters_train(placement: str) -> None:
    model = tiny_llama()
    ids = batch()
    with torch.no_grad():
        base_logits = model(ids).logits
    _, total_before = bn.count_parameters(model)
    bn.add_bottleneck_adapters(model, bn.BottleneckConfig(size=8, placement=placement))
    with torch.no_grad():
        logits = model(ids).logits
    # Near-identity: the default init_scale moves logits by well under 1% of their range.
    assert (logits - base_logits).abs().max() < 1e-2 * base_logits.abs().max()
    exact = bn.add_bottleneck_adapters(tiny_llama(), bn.BottleneckConfig(init_scale=0.0))
    with torch.no_grad():
        torch.testing.assert_close(exact(ids).logits, base_logits, atol=0, rtol=0)

    names = adapter_modules(model)
    assert len(names) == (4 if placement == "houlsby" else 2)
    assert all(bn.ADAPTER_NAME in n for n in names)
    assert all("mlp" in n or "self_attn" in n for n in names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(bn.ADAPTER_NAME in n for n in trainable)
    assert set(bn.adapter_state_dict(model)) == trainable
    n_trainable, total = bn.count_parameters(model)
    assert total == total_before + n_trainable
    # Base parameter names are unchanged (adapters hang off the sublayers, no wrapper).
    assert "model.layers.0.mlp.down_proj.weight" in dict(model.named_parameters())


def train(model: LlamaForCausalLM, ids: torch.Tensor, steps: int = 30) -> list[float]:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = model(ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="module")
def trained() -> tuple[LlamaForCausalLM, bn.BottleneckConfig, dict[str, torch.Tensor], list]:
    model = tiny_llama()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    config = bn.BottleneckConfig(size=16, placement="houlsby", nonlinearity="gelu")
    bn.add_bottleneck_adapters(model, config)
    losses = train(model, batch())
    return model.eval(), config, base, losses


def test_training_lowers_loss_and_keeps_base_frozen(trained) -> None:
    model, _, base, losses = trained
    assert losses[-1] < 0.7 * losses[0], losses
    state = model.state_dict()
    for key, value in base.items():
        assert torch.equal(state[key], value), key


def test_save_load_roundtrip(trained, tmp_path: Path) -> None:
    model, config, _, _ = trained
    bn.save_bottleneck_adapters(model, tmp_path, config, base_model_name="tiny-llama")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([bn.CONFIG_NAME, bn.WEIGHTS_NAME])
    meta = json.loads((tmp_path / bn.CONFIG_NAME).read_text())
    assert meta["tuning"] == "bottleneck_adapter"
    assert meta["base_model_name_or_path"] == "tiny-llama"
    assert meta["placement"] == "houlsby"

    loaded = bn.load_bottleneck_adapters(tiny_llama(), tmp_path)
    assert not loaded.training
    ids = batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)


def test_load_from_path(trained, tmp_path: Path) -> None:
    model, config, _, _ = trained
    tiny_llama().save_pretrained(tmp_path / "base")
    bn.save_bottleneck_adapters(model, tmp_path / "adapter", config)
    loaded = bn.load_bottleneck_adapters(tmp_path / "base", tmp_path / "adapter")
    ids = batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)


def test_placement_mismatch_names_key(trained, tmp_path: Path) -> None:
    model, config, _, _ = trained
    bn.save_bottleneck_adapters(model, tmp_path, config)
    meta_path = tmp_path / bn.CONFIG_NAME
    meta = json.loads(meta_path.read_text())
    meta["placement"] = "pfeiffer"  # weights hold attention adapters the model won't have
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(KeyError, match=r"model\.layers\.0\.self_attn\.bottleneck_adapter"):
        bn.load_bottleneck_adapters(tiny_llama(), tmp_path)


def test_config_dict_roundtrip_and_unknown_keys() -> None:
    config = bn.BottleneckConfig(size=4, placement="houlsby", dropout=0.1)
    assert bn.BottleneckConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="bottleneck_size"):
        bn.BottleneckConfig.from_dict({"bottleneck_size": 4})
    with pytest.raises(ValueError, match="placement"):
        bn.BottleneckConfig(placement="parallel")  # type: ignore[arg-type]


def test_generate_with_cache(trained) -> None:
    model, _, _, _ = trained
    prompt = batch()[:2, :5]
    kwargs = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        cached = model.generate(prompt, use_cache=True, **kwargs)
        uncached = model.generate(prompt, use_cache=False, **kwargs)
    assert cached.shape == (2, 11)
    assert torch.equal(cached, uncached)
