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
from tunesmith.memory_plan import MemoryPlan, choose, micro_batches
from worker.process.oom_recovery import Replan, next_replan
from worker.training.failures import classify

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


# -- the "auto" plan and out-of-memory recovery built on the estimate ---------------------

def _plan(free_gib: float | None, tuning: str = "lora", **kw: object) -> MemoryPlan:
    fields: dict = {"batch": 8, "checkpointing": None, "supports_checkpointing": True,
                    "lean": tuning == "qlora", **kw}  # as worker/training/workflow.py sets it
    return choose(ModelShape.from_config(TINYLLAMA_CONFIG), _setup(tuning, False),
                  free_bytes=None if free_gib is None else int(free_gib * GIB), **fields)


def test_auto_is_fastest_without_a_limit_and_fits_a_smaller_card() -> None:
    unlimited = _plan(None)
    assert (unlimited.micro_batch, unlimited.checkpointing) == (8, False)
    # 80 GiB: the service config (no checkpointing, whole batch) fits.
    assert (_plan(80).micro_batch, _plan(80).checkpointing) == (8, False)
    # 16 GiB: half the micro-batch (4k tokens still fill a pass) without checkpointing.
    sixteen = _plan(16)
    assert (sixteen.micro_batch, sixteen.split, sixteen.checkpointing) == (4, 2, False)
    assert sixteen.estimate.fits(16 * GIB)
    # 6 GiB: checkpointing, whole batch, before micro-batches that leave the GPU idle.
    six = _plan(6)
    assert (six.micro_batch, six.checkpointing) == (8, True)
    assert "6.0 GiB free" in six.reason


def test_qlora_is_lean_unless_asked_and_its_peak_is_below_loras() -> None:
    qlora, lora = _plan(None, "qlora"), _plan(None, "lora")
    assert qlora.checkpointing and not lora.checkpointing
    assert qlora.estimate.peak_allocated < lora.estimate.peak_allocated
    asked = _plan(None, "qlora", checkpointing=False)
    assert not asked.checkpointing and "as asked" in asked.reason


def test_nothing_fits_gives_the_leanest_and_says_so() -> None:
    plan = _plan(0.5)
    assert (plan.micro_batch, plan.checkpointing) == (1, True)
    assert "nothing is estimated to fit" in plan.reason


def test_micro_batches_divide_the_batch() -> None:
    assert micro_batches(8, 0) == [8, 4, 2, 1]
    assert micro_batches(6, 0) == [6, 3, 1]
    assert micro_batches(8, 2) == [2, 1]
    assert micro_batches(1, 3) == [1]


def test_oom_recovery_halves_then_checkpoints_then_gives_up() -> None:
    replan, resolved = Replan(), {"micro_batch_size": 8, "gradient_accumulation_steps": 1,
                                  "gradient_checkpointing": False}
    changes = []
    while (found := next_replan(replan, resolved, max_halvings=2)) is not None:
        replan, change = found
        changes.append(change)
        if not replan.checkpointing:
            micro = resolved["micro_batch_size"] // 2
            resolved = {**resolved, "micro_batch_size": micro,
                        "gradient_accumulation_steps": 8 // micro}
    assert changes == [
        "micro-batch 8 -> 4, gradient accumulation 1 -> 2 (effective batch unchanged)",
        "micro-batch 4 -> 2, gradient accumulation 2 -> 4 (effective batch unchanged)",
        "activation checkpointing turned on"]
    assert replan == Replan(halvings=2, checkpointing=True)


def test_out_of_memory_error_quotes_the_estimate_and_advice() -> None:
    error = classify(torch.OutOfMemoryError("CUDA out of memory"), hyperparameters={
        "batch_size": 8, "micro_batch_size": 1, "max_seq_length": 1024,
        "gradient_checkpointing": True, "estimated_peak_memory_gib": 41.5})
    assert error.code == "out_of_memory"
    assert "estimated peak 41.5 GiB" in error.message and "max_seq_length" in error.message
