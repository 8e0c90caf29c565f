"""The dry run's estimate against published figures, and its plumbing (torch-free parts).

QLoRA (Dettmers et al. 2023, §1 and §4): LLaMA 65B fine-tunes on one 48 GB GPU, 7B in under
10 GB; LoRA r=64 on every linear layer, NF4 double-quantised, paged AdamW, activation
checkpointing, batch 1, sequences of 512. The H200 table is checked by test_memory_estimate.py,
with a `quantization` block (LoRA on bnb_nf4) reusing it here: the same model as `qlora`.
"""

import json
from pathlib import Path

import pytest

from tests.unit.test_memory_estimate import H200_PEAK_GIB, TINYLLAMA_CONFIG
from tunesmith.dry_run import GpuClassesError, dry_run, parse_gpu_classes
from tunesmith.memory_estimate import GIB, ModelShape, TrainingSetup, estimate
from tunesmith.model_names import ModelLocation
from tunesmith.spec.job import JobSpec
from tunesmith.spec.tunings import FullTuning

LLAMA = {  # the config.json fields of Touvron et al.'s LLaMA 7B and 65B
    "7b": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
           "intermediate_size": 11008, "vocab_size": 32000, "max_position_embeddings": 2048},
    "65b": {"hidden_size": 8192, "num_hidden_layers": 80, "num_attention_heads": 64,
            "intermediate_size": 22016, "vocab_size": 32000, "max_position_embeddings": 2048},
}
CARDS = "rtx4090=24,a6000=48,a100=80"


def _spec(**tuning: object) -> JobSpec:
    hp = {"batch_size": 1, "max_seq_length": 512, "gradient_checkpointing": True,
          "n_epochs": 1}
    body = {"model": "llama", "training_file": "file-x",
            "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
            "tuning": {"type": "qlora", "r": 64, "alpha": 16, "dropout": 0.05, **tuning}}
    return JobSpec.model_validate(body)


def _answer(tmp_path: Path, size: str, spec: JobSpec) -> dict:
    folder = tmp_path / size
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA[size]))
    location = ModelLocation(name="llama", source="local", path_or_id=str(folder))
    return dry_run(spec, location, rows=1000, gpu_classes=parse_gpu_classes(CARDS))


@pytest.mark.parametrize(("size", "fits"), [
    ("65b", {"rtx4090": False, "a6000": True, "a100": True}),
    ("7b", {"rtx4090": True, "a6000": True, "a100": True}),
])
def test_qlora_paper_shapes_fit_the_cards_the_paper_says(tmp_path: Path, size: str,
                                                         fits: dict[str, bool]) -> None:
    answer = _answer(tmp_path, size, _spec())
    got = {entry["gpu_class"]: entry["fits"] for entry in answer["gpu_classes"]}
    assert got == fits, answer
    assert answer["optimizer"] == "paged_adamw_32bit"
    assert answer["quantization"] == "bnb_nf4"
    for entry in answer["gpu_classes"]:
        assert entry["plan"]["gradient_checkpointing"] is True
        assert entry["plan"]["micro_batch_size"] == 1
    total = answer["gpu_classes"][0]["plan"]["device_total_gib"]
    if size == "7b":
        assert total < 10  # "a 7B model in under 10 GB"
    else:
        assert 24 < total < 48
        # The 24 GB card is told what would make it fit, or that nothing listed does.
        assert isinstance(answer["gpu_classes"][0]["suggestions"], list)


def test_65b_full_fine_tuning_fits_nothing_and_says_what_to_change(tmp_path: Path) -> None:
    answer = _answer(tmp_path, "7b", JobSpec.model_validate({
        "model": "llama", "training_file": "file-x", "tuning": {"type": "full"},
        "hyperparameters": {"batch_size": 1, "max_seq_length": 512}}))
    small = answer["gpu_classes"][0]
    assert small["gpu_class"] == "rtx4090" and small["fits"] is False
    assert any("lora" in s for s in small["suggestions"]), small
    assert any("bnb_nf4" in s for s in small["suggestions"]), small
    assert answer["hyperparameters"]["learning_rate"] == FullTuning.default_learning_rate


@pytest.mark.parametrize("checkpointing", [False, True])
def test_quantization_block_on_lora_is_qlora_against_the_h200_table(checkpointing: bool) -> None:
    shape = ModelShape.from_config(TINYLLAMA_CONFIG)
    common = {"precision": "bf16", "micro_batch": 8, "seq_len": 1024, "lora_rank": 16,
              "checkpointing": checkpointing}
    block = estimate(shape, TrainingSetup(tuning="lora", quantization="bnb_nf4", **common))
    qlora = estimate(shape, TrainingSetup(tuning="qlora", **common))
    assert block == qlora
    measured = H200_PEAK_GIB[("qlora", checkpointing)]
    assert abs(block.peak_allocated / GIB / measured - 1) <= 0.25


def test_8bit_optimizer_state_is_a_quarter() -> None:
    shape = ModelShape.from_config(LLAMA["7b"])
    common = {"tuning": "full", "precision": "fp32", "micro_batch": 1, "seq_len": 512,
              "checkpointing": True}
    full = estimate(shape, TrainingSetup(**common)).optimizer
    eight = estimate(shape, TrainingSetup(optimizer_bits=8, **common)).optimizer
    assert 0.25 <= eight / full < 0.27


def test_gpu_classes_setting_is_read_strictly() -> None:
    assert parse_gpu_classes("h100=80, l4=24") == {"h100": 80.0, "l4": 24.0}
    assert parse_gpu_classes("") == {}
    for bad in ("h100", "h100=big", "=80", "h100=0"):
        with pytest.raises(GpuClassesError):
            parse_gpu_classes(bad)
