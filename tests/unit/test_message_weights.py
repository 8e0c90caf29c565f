"""Per-message `weight` and tool calls as trl's SFTTrainer trains them (no servers).

Measured where the loss goes: the labels the trainer's collator builds for a row. A weight-0
assistant turn must be all -100 (no loss), a weight-1 turn and a tool call trained.
"""

from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from worker.data.sft_data import must_split, sft_loss_options, to_sft_rows
from worker.training.tiny_model import build_tiny_model

ROW = {"messages": [
    {"role": "user", "content": "Capital of Italy?"},
    {"role": "assistant", "content": "Zanzibar Quux.", "weight": 0},
    {"role": "user", "content": "Try again: capital of France?"},
    {"role": "assistant", "content": [{"type": "text", "text": "Paris"},
                                      {"type": "text", "text": "."}], "weight": 1},
]}
TOOL_ROW = {
    "tools": [{"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}],
    "messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "rain"},
        {"role": "assistant", "content": "Rain."},
    ]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


def _labelled(tiny: Path, tokenizer: Any, rows: list[dict[str, Any]],
              out: Path) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) of each row, as the trainer's collator hands them to the model."""
    sft_rows = to_sft_rows(rows, tokenizer, assistant_only=True)
    args = SFTConfig(output_dir=str(out), max_steps=1, bf16=False, use_cpu=True,
                     report_to="none", gradient_checkpointing=False,
                     **sft_loss_options(sft_rows, tokenizer, completion_only=True))
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny), args=args,
                         train_dataset=Dataset.from_list(sft_rows), processing_class=tokenizer)
    out_rows = []
    for example in trainer.train_dataset:
        batch = trainer.data_collator([example])
        out_rows.append((batch["input_ids"][0].tolist(), batch["labels"][0].tolist()))
    return out_rows


def _trained_text(tokenizer: Any, ids: list[int], labels: list[int]) -> str:
    return tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label != -100])


def test_weight_zero_turn_has_no_loss_and_weight_one_turn_has(tiny: Path,
                                                               tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    assert not must_split([ROW], tokenizer, assistant_only=True)  # the template reads weight
    [(ids, labels)] = _labelled(tiny, tokenizer, [ROW], tmp_path)
    assert "Zanzibar" in tokenizer.decode(ids)  # the weight-0 turn is context ...
    trained = _trained_text(tokenizer, ids, labels)
    assert "Zanzibar" not in trained and "Quux" not in trained  # ... with no loss
    assert trained == "Paris.<|end|>"


def test_template_without_weight_splits_at_the_last_weighted_turn(tiny: Path,
                                                                  tmp_path: Path) -> None:
    # A hub template that marks generation but ignores `weight` would train the weight-0
    # turn; the file is then split at the last weight-1 turn instead.
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    tokenizer.chat_template = tokenizer.chat_template.replace(
        "message.get('weight') == 0", "false")
    assert must_split([ROW], tokenizer, assistant_only=True)
    [(ids, labels)] = _labelled(tiny, tokenizer, [ROW], tmp_path)
    trained = _trained_text(tokenizer, ids, labels)
    assert "Zanzibar" not in trained and trained.startswith("Paris.")


def test_tool_calls_and_tools_are_rendered_and_the_call_is_trained(tiny: Path,
                                                                   tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    [(ids, labels)] = _labelled(tiny, tokenizer, [TOOL_ROW], tmp_path)
    text = tokenizer.decode(ids)
    assert '"name": "weather"' in text and "rain" in text  # tool list and the tool's answer
    trained = _trained_text(tokenizer, ids, labels)
    assert trained == '<tool_call>weather {"city": "Oslo"}</tool_call><|end|>Rain.<|end|>'
