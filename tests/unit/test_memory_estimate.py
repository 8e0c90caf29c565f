"""The memory estimate against what was measured and against what autograd really keeps.

The H200 table (../shared/FACTS.md, "GPU"; bench/gpu_tunings.py, peak = max_memory_allocated):
a 1.1B Llama of TinyLlama's shape, sequence 1024, batch 8, bf16, through the service's own
load path and trl's SFTTrainer. Service config = no activation checkpointing; trl's defaults
turn it on. Prefix tuning with checkpointing crashed, so that cell has no figure.
"""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tunesmith.memory_estimate import (
    GIB,
    ModelShape,
    TrainingSetup,
    estimate,
    layer_activation_bytes_per_token,
)

TINYLLAMA_CONFIG = {  # the config.json fields the estimate reads
    "hidden_size": 2048, "num_hidden_layers": 22, "num_attention_heads": 32,
    "num_key_value_heads": 4, "intermediate_size": 5632, "vocab_size": 32000,
    "tie_word_embeddings": False,
}
# (tuning, activation checkpointing) -> measured peak GiB
H200_PEAK_GIB = {
    ("full", False): 21.7, ("full", True): 9.0,
    ("lora", False): 21.7, ("lora", True): 4.3,
    ("qlora", False): 26.4, ("qlora", True): 4.1,
    ("prefix", False): 14.3,
    ("prompt", False): 12.8, ("prompt", True): 3.6,
}


def _setup(tuning: str, checkpointing: bool, **kw: object) -> TrainingSetup:
    fields: dict = {"precision": "bf16", "micro_batch": 8, "seq_len": 1024, "lora_rank": 16,
                    **kw}
    return TrainingSetup(tuning=tuning, checkpointing=checkpointing, **fields)


def test_shape_reads_config_json() -> None:
    shape = ModelShape.from_config(TINYLLAMA_CONFIG)
    assert shape.kv_dim == 256
    assert shape.parameters == 1_100_048_384  # TinyLlama-1.1B's count


@pytest.mark.parametrize(("tuning", "checkpointing"), sorted(H200_PEAK_GIB))
def test_within_a_quarter_of_the_h200_table(tuning: str, checkpointing: bool) -> None:
    measured = H200_PEAK_GIB[(tuning, checkpointing)]
    got = estimate(ModelShape.from_config(TINYLLAMA_CONFIG),
                   _setup(tuning, checkpointing)).peak_allocated / GIB
    assert abs(got / measured - 1) <= 0.25, f"{tuning} ckpt={checkpointing}: {got:.2f} GiB " \
                                            f"estimated, {measured} measured"


def test_the_orderings_the_table_shows() -> None:
    shape = ModelShape.from_config(TINYLLAMA_CONFIG)

    def peak(tuning: str, ckpt: bool, **kw: object) -> int:
        return estimate(shape, _setup(tuning, ckpt, **kw)).peak_allocated

    # QLoRA without checkpointing peaks above LoRA (its fp32 stream); with it, below.
    assert peak("qlora", False) > peak("lora", False)
    assert peak("qlora", True) < peak("lora", True) < peak("lora", False)
    # Memory grows with the micro-batch; full logits cost more than trl's tiles.
    assert peak("lora", False, micro_batch=4) < peak("lora", False)
    assert peak("lora", True, chunked_logits=False) > peak("lora", True) + 2 * GIB


def _saved_bytes(model: torch.nn.Module, ids: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd saves in a forward pass, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids).logits.sum().backward()
    return sum(storages.values())


@pytest.mark.parametrize("tuning", ["full", "lora"])
def test_activation_terms_match_what_autograd_saves(tuning: str) -> None:
    """fp32 on CPU: the per-layer accounting against the saved tensors of a real Llama."""
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=2, vocab_size=64,
                         attn_implementation="sdpa")
    model = LlamaForCausalLM(config)
    if tuning == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear",
                                                 lora_dropout=0.05))
    model.train()
    shape = ModelShape.from_config(config.to_dict())
    seq = 128
    setup = TrainingSetup(tuning=tuning, precision="fp32", micro_batch=1, seq_len=seq,
                          checkpointing=False, device="cpu")
    per_row = shape.layers * layer_activation_bytes_per_token(shape, setup) * seq
    # What one more row adds: copies the size of a weight (CPU kernels keep some) cancel out.
    one_row = (_saved_bytes(model, torch.randint(0, 64, (3, seq)))
               - _saved_bytes(model, torch.randint(0, 64, (2, seq))))
    # The layers dominate; the head's and the embeddings' share is small at this vocabulary.
    assert abs(one_row / per_row - 1) <= 0.25, (one_row, per_row)
