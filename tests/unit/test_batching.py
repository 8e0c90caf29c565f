"""The batch layout a supervised job picks, from its tuning, its setting and its rows."""

import pytest

from worker.data.batching import ModelShape, choose_layout, estimated_ratio, step_flops

# Roughly a 1B Llama with a LoRA adapter.
LLAMA_1B = ModelShape(parameters=1_100_000_000, trainable=6_000_000, layers=22, hidden=2048)


def test_padded_batches_spend_compute_on_padding() -> None:
    mixed = [32, 512, 64, 480]
    assert step_flops(mixed, LLAMA_1B, padding_free=False) > \
        step_flops(mixed, LLAMA_1B, padding_free=True)
    # Rows of one length: nothing to save, and the joined attention costs extra.
    even = [512] * 4
    assert step_flops(even, LLAMA_1B, padding_free=True) > \
        step_flops(even, LLAMA_1B, padding_free=False)


def test_ratio_falls_as_lengths_spread() -> None:
    spread = [16 + (i * 97) % 600 for i in range(64)]
    uniform = [300] * 64
    assert estimated_ratio(spread, 8, LLAMA_1B) < 0.9 < estimated_ratio(uniform, 8, LLAMA_1B)


@pytest.mark.parametrize("tuning", ["prompt", "prefix", "p_tuning", "p_tuning_v2"])
def test_prompt_learning_always_pads(tuning: str) -> None:
    layout = choose_layout("auto", tuning=tuning, lengths=[10, 500] * 8, batch_size=8,
                           shape=LLAMA_1B)
    assert not layout.padding_free and "virtual tokens" in layout.reason


def test_auto_follows_the_estimate_and_the_job_can_override_it() -> None:
    spread = [16 + (i * 97) % 600 for i in range(64)]
    uniform = [300] * 64
    for tuning in ("full", "lora", "qlora", "adapter"):
        assert choose_layout("auto", tuning=tuning, lengths=spread, batch_size=8,
                             shape=LLAMA_1B).padding_free
    auto_uniform = choose_layout("auto", tuning="lora", lengths=uniform, batch_size=8,
                                 shape=LLAMA_1B)
    assert not auto_uniform.padding_free and auto_uniform.flops_ratio > 1
    assert choose_layout(True, tuning="lora", lengths=uniform, batch_size=8,
                         shape=LLAMA_1B).padding_free
    assert not choose_layout(False, tuning="lora", lengths=spread, batch_size=8,
                             shape=LLAMA_1B).padding_free
    assert not choose_layout("auto", tuning="lora", lengths=spread, batch_size=1,
                             shape=LLAMA_1B).padding_free
